"""JSON-RPC to a running Kamailio over its jsonrpcs FIFO.

The FIFO transport, not the datagram one: a datagram reply is capped at 64 KiB, which
ul.dump passes at about 250 registered phones; a reply FIFO has no size limit.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import select
import threading
import time
from pathlib import Path

from .config import EdgeError

_ids = itertools.count(1)


class RpcError(EdgeError):
    """Kamailio answered with a JSON-RPC error (code as in HTTP: 404 = not found)."""

    def __init__(self, message: str, code: int | None):
        super().__init__(message)
        self.code = code


class KamailioRpc:
    def __init__(self, fifo: Path, reply_dir: Path, timeout: float = 3.0):
        self._fifo = str(fifo)
        self._reply_dir = Path(reply_dir)
        self._timeout = timeout
        self._lock = threading.Lock()

    def call(self, method: str, *params):
        """Run one RPC command; returns its "result" or raises EdgeError."""
        request_id = next(_ids)
        reply_name = f"rpc-reply-{os.getpid()}-{request_id}"
        reply_path = self._reply_dir / reply_name
        request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                              "id": request_id, "reply_name": reply_name}).encode() + b"\n"
        with self._lock:
            os.mkfifo(reply_path, 0o600)
            try:
                self._send(request)
                data = self._read_reply(reply_path, method)
            finally:
                reply_path.unlink(missing_ok=True)
        try:
            reply = json.loads(data)
        except ValueError as exc:
            raise EdgeError(f"Kamailio answered {method} with unreadable JSON "
                            f"({len(data)} bytes): {exc}") from exc
        if "error" in reply:
            error = reply["error"]
            raise RpcError(f"Kamailio refused {method}: {error.get('code')} {error.get('message')}",
                           error.get("code"))
        return reply.get("result")

    def _send(self, request: bytes) -> None:
        try:
            # non-blocking: with no Kamailio reading, open fails (ENXIO) instead of hanging
            fd = os.open(self._fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENXIO):
                raise EdgeError(f"Kamailio control FIFO {self._fifo} is not answering "
                                f"({exc.strerror}): is the edge started?") from exc
            raise
        try:
            os.write(fd, request)  # < PIPE_BUF: one atomic write even with other writers
        finally:
            os.close(fd)

    def _read_reply(self, path: Path, method: str) -> bytes:
        deadline = time.monotonic() + self._timeout
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        chunks = []
        try:
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLHUP)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise EdgeError(f"Kamailio did not answer {method} within {self._timeout} s")
                # Linux reports no POLLHUP before a writer has opened the FIFO once
                if not poller.poll(left * 1000):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)
        finally:
            os.close(fd)
