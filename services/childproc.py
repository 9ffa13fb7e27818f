"""Child processes that die with the process that started them, even when it is SIGKILLed.

`pbx run` starts Kamailio, the web UI and the line service as children. Without this, a `kill -9`
of `pbx run` left them running: the web UI kept its port and the next `pbx run` could not serve.

PR_SET_PDEATHSIG makes the kernel send the child a signal when its parent goes away. Caveat:
"parent" is the *thread* that forked the child. Start children from threads that live as long as
the process (the asyncio loop's thread, the loop's default executor, whose idle threads never
exit before the loop shuts down) - not from a short-lived threading.Thread.
"""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1

try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the forked child
except (OSError, AttributeError):  # not Linux: nothing to set
    _prctl = None


def die_with_parent(sig: int = signal.SIGTERM):
    """A Popen preexec_fn: the child gets `sig` when this process (this thread) ends.

    SIGTERM lets the child shut down properly (Kamailio stops its own workers on SIGTERM).
    """
    parent = os.getpid()

    def preexec() -> None:
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
            os.kill(os.getpid(), sig)

    return preexec
