"""numpy, imported at its first use: `from services.media.lazy_numpy import np`.

numpy costs about 15 MB in a process. The web UI imports the media modules (wavfile, prompts,
music on hold) for their paths, limits and errors, and touches samples only when an admin uploads,
converts or plays a file; with this, an idle web UI does not hold numpy. The call service and the
line service use numpy from their first call on and import it themselves.
"""
from __future__ import annotations


class _OnFirstUse:
    def __getattr__(self, name: str):
        import numpy
        return getattr(numpy, name)


np = _OnFirstUse()
