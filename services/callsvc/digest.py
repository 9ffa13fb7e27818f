"""Answering a provider's digest challenge (RFC 2617 / RFC 3261 22.4) to an INVITE on a trunk.

Written here because no maintained Python SIP library offers a client-side digest for our own
transaction layer (aiosipua parses messages only), and it is twenty lines: MD5 with qop=auth or
without qop, as SIP providers challenge. Decision 001 covers the SIP stack choice.
"""

from __future__ import annotations

import hashlib
import re
import secrets

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def parse_challenge(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a Digest challenge: {value[:40]!r}")
    return {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
            for m in _PARAM.finditer(rest)}


def authorization(challenge: str, method: str, uri: str, username: str, password: str) -> str:
    """The Authorization / Proxy-Authorization value answering challenge."""
    p = parse_challenge(challenge)
    algorithm = p.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        raise ValueError(f"digest algorithm {algorithm} is not supported (MD5 only)")
    realm, nonce = p.get("realm", ""), p["nonce"]
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1, ha2 = md5(f"{username}:{realm}:{password}"), md5(f"{method}:{uri}")
    value = (f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
             f"algorithm=MD5")
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce, nc = secrets.token_hex(8), "00000001"
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
        value += f', qop=auth, nc={nc}, cnonce="{cnonce}", response="{response}"'
    else:
        value += f', response="{md5(f"{ha1}:{nonce}:{ha2}")}"'
    if "opaque" in p:
        value += f', opaque="{p["opaque"]}"'
    return value
