"""Whether the web UI speaks HTTPS: a small module of its own, because the call service asks it
too (for the URLs it logs and mails) and must not import the web server or Flask to do so."""
from __future__ import annotations

HTTPS_MODES = ("auto", "on", "off")


def wants_tls(mode: str, host: str) -> bool:
    """auto: HTTPS unless the UI listens on loopback only (a development box: `make run`), where
    nothing crosses a network and browsers treat the address as secure already."""
    if mode not in HTTPS_MODES:
        raise ValueError(f"https mode {mode!r}: use one of {', '.join(HTTPS_MODES)}")
    if mode != "auto":
        return mode == "on"
    return not (host == "localhost" or host.startswith("127.") or host == "::1")
