"""libnftables (the library behind the `nft` command) called in-process through ctypes.

Why not the `nft` command: a fork+exec per call setup costs ~5 ms; one libnftables command here
costs ~0.12 ms (measured: adding a call's flows). Why not a PyPI package: netfilter's own Python
binding is a Debian package (python3-nftables) that does not install into the venv, and it is itself
this same thin ctypes layer (docs/decisions/022-kernel-media-path.md).

One Nft keeps one libnftables context, and with it one netlink socket, for its whole life. A table
made with `flags owner` belongs to that socket: the kernel deletes it when the socket closes, so a
killed process leaves no rule behind.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json

OUTPUT_JSON = 1 << 4   # NFT_CTX_OUTPUT_JSON (nftables/libnftables.h)


class NftError(RuntimeError):
    pass


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nftables") or "libnftables.so.1"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.nft_ctx_new.restype = ctypes.c_void_p
    lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
    lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
    lib.nft_ctx_output_get_flags.restype = ctypes.c_uint
    lib.nft_ctx_output_get_flags.argtypes = [ctypes.c_void_p]
    lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
    lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
    lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
    return lib


class Nft:
    """`run("add element ...")` -> the command's text output; NftError carries nft's message."""

    def __init__(self) -> None:
        try:
            self._lib = _load()
        except OSError as exc:
            raise NftError(f"libnftables not found ({exc}): install the nftables package") from None
        self._ctx = self._lib.nft_ctx_new(0)
        if not self._ctx:
            raise NftError("libnftables could not make a context")
        self._lib.nft_ctx_buffer_output(self._ctx)
        self._lib.nft_ctx_buffer_error(self._ctx)

    def run(self, cmd: str) -> str:
        if self._ctx is None:
            raise NftError("nftables context closed")
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, cmd.encode())
        out = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode(errors="replace")
        err = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode(errors="replace")
        if rc != 0:
            first = next((line for line in err.splitlines() if line.startswith("Error")), err.strip())
            raise NftError(first or f"nft command failed ({rc})")
        return out

    def json(self, cmd: str) -> list[dict]:
        """A list command's output as nftables' JSON objects (the "nftables" array)."""
        flags = self._lib.nft_ctx_output_get_flags(self._ctx)
        self._lib.nft_ctx_output_set_flags(self._ctx, flags | OUTPUT_JSON)
        try:
            out = self.run(cmd)
        finally:
            self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        return json.loads(out).get("nftables", []) if out.strip() else []

    def close(self) -> None:
        """Free the context: its netlink socket closes, and tables it owns go with it."""
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None
