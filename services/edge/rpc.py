"""JSON-RPC to a running Kamailio over its jsonrpcs Unix datagram socket."""
from __future__ import annotations

import itertools
import json
import os
import socket
import threading
from pathlib import Path

from .config import EdgeError

# jsonrpcs answers in one datagram of at most 64 KiB (its buffer size).
_MAX_REPLY = 65536
_ids = itertools.count(1)


class RpcError(EdgeError):
    """Kamailio answered with a JSON-RPC error (code as in HTTP: 404 = not found)."""

    def __init__(self, message: str, code: int | None):
        super().__init__(message)
        self.code = code


class KamailioRpc:
    def __init__(self, server: Path, timeout: float = 2.0):
        self._server = str(server)
        self._timeout = timeout
        self._lock = threading.Lock()

    def call(self, method: str, *params):
        """Run one RPC command; returns its "result" or raises EdgeError."""
        request_id = next(_ids)
        request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                              "id": request_id}).encode()
        # The reply goes to the sender's address: bind a private one next to the server socket.
        client_path = f"{self._server}.{os.getpid()}.{request_id}"
        with self._lock, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self._timeout)
            try:
                sock.bind(client_path)
                sock.sendto(request, self._server)
                data = sock.recv(_MAX_REPLY)
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise EdgeError(f"Kamailio control socket {self._server} is not answering "
                                f"({exc.strerror}): is the edge started?") from exc
            except socket.timeout as exc:
                raise EdgeError(f"Kamailio did not answer {method} on {self._server} "
                                f"within {self._timeout} s") from exc
            finally:
                try:
                    os.unlink(client_path)
                except FileNotFoundError:
                    pass
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
