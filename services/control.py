"""Local control API of a running PBX: one JSON request line in, one JSON line out, on a unix socket.

`pbx status` and the web UI use `query(data_dir, "status")`; the socket lives in DATA/run/ and is
reachable only by local processes with access to the data directory (mode 0600).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)


class ControlError(RuntimeError):
    pass


def socket_path(data_dir) -> Path:
    return Path(data_dir) / "run" / "control.sock"


def query(data_dir, cmd: str, timeout: float = 5.0, **args) -> dict:
    return query_socket(socket_path(data_dir), cmd, timeout, **args)


def query_socket(path: Path, cmd: str, timeout: float = 5.0, **args) -> dict:
    """One command on a control socket (DATA/run/control.sock, or call service I's control-I.sock)."""
    path = Path(path)
    if not path.exists():
        raise ControlError(f"PBX not running (no control socket at {path}; start it with `pbx run`)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        except OSError as exc:
            raise ControlError(f"PBX not running or not answering at {path}: {exc}") from None
    try:
        reply = json.loads(buf)
    except ValueError:
        raise ControlError(f"bad reply from the PBX control socket {path}") from None
    if "error" in reply:
        raise ControlError(reply["error"])
    return reply


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


class ControlServer:
    """Serves commands: each handler is an async callable(args) -> dict."""

    def __init__(self, data_dir, handlers: dict[str, Callable[[dict], Awaitable[dict]]]):
        self.path = socket_path(data_dir)
        self.handlers = handlers
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Listen on DATA/run/control.sock; ControlError if a running PBX still answers there
        (taking its socket over would cut `pbx status` and the web UI off from it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            if _answers(self.path):
                raise ControlError(f"control socket {self.path} is answered by another running PBX: "
                                   "stop it first, or pass --data another directory")
            self.path.unlink()   # left by a PBX that was killed
        old = os.umask(0o077)
        try:
            self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            try:
                req = json.loads(line)
                handler = self.handlers[req.pop("cmd")]
                reply = await handler(req)
            except (ValueError, KeyError, TypeError) as exc:
                reply = {"error": f"bad control request: {exc!r}"}
            except Exception as exc:
                log.exception("control command failed")
                reply = {"error": f"control command failed: {exc}"}
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
