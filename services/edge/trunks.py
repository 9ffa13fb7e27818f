"""SIP trunks at the edge: the tables Kamailio reads to register to providers, to relay the call
service's calls to them and to recognise calls coming from them, and the state it reports back.

The contract with the call service (CS):
- outbound: the CS sends an INVITE with Request-URI `sip:<number>@<trunk host[:port]>` (the host
  exactly as configured) and a header `X-PBX-Trunk: <trunk name>`; the edge removes the header and
  relays to the trunk's host over its transport. The provider's 401/407 reaches the CS unchanged.
- inbound: an INVITE from a trunk reaches the CS with `X-PBX-Trunk: <trunk name>` added. Anyone
  else's X-PBX-Trunk is removed before routing.

Kamailio's view of a trunk:
- `uacreg` (trunks.sqlite, uac module): one row per registration trunk. l_uuid is the Contact user
  the provider sends our calls to: a token derived from the trunk's credentials, so that nobody
  without them can guess it and have an INVITE taken for the provider's. l_username is the
  trunk name (uac_reg_lookup hands it back as sip:<name>@trunk).
- `htable` (trunks.sqlite, htable "trunks"): name -> where outbound calls go, host:name -> the
  host the CS must have put in the Request-URI.
- `address` group 2 (subscribers.sqlite, permissions): trunk host IPs, tagged with the trunk name.
"""
from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import socket
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from .config import EdgeError
from .subscribers import _connect, replace_address_group

logger = logging.getLogger(__name__)

TRUNK_HEADER = "X-PBX-Trunk"
TRUNK_GROUP = 2  # address-table group of trunk source addresses (tag = trunk name)
CONTACT_DOMAIN = "trunk"  # l_domain of every registration: uac_reg_lookup gives sip:<name>@trunk

# uac flags (uac.reg_info in the module's README)
_DISABLED, _ONGOING, _ONLINE = 1, 2, 4

# Kamailio 5.6 uac and htable tables. Columns the uac module must see as "not set" are NULL-able:
# it ignores a whole record that has an empty string where it expects a value or NULL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('uacreg', 5);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('htable', 2);
CREATE TABLE IF NOT EXISTS uacreg (
    id INTEGER PRIMARY KEY NOT NULL,
    l_uuid VARCHAR(64) DEFAULT '' NOT NULL,
    l_username VARCHAR(64) DEFAULT '' NOT NULL,
    l_domain VARCHAR(64) DEFAULT '' NOT NULL,
    r_username VARCHAR(64) DEFAULT '' NOT NULL,
    r_domain VARCHAR(64) DEFAULT '' NOT NULL,
    realm VARCHAR(64) DEFAULT NULL,
    auth_username VARCHAR(64) DEFAULT '' NOT NULL,
    auth_password VARCHAR(64) DEFAULT NULL,
    auth_ha1 VARCHAR(128) DEFAULT NULL,
    auth_proxy VARCHAR(255) DEFAULT NULL,
    expires INTEGER DEFAULT 0 NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    reg_delay INTEGER DEFAULT 0 NOT NULL,
    contact_addr VARCHAR(255) DEFAULT NULL,
    socket VARCHAR(128) DEFAULT NULL,
    CONSTRAINT uacreg_l_uuid_idx UNIQUE (l_uuid)
);
CREATE TABLE IF NOT EXISTS htable (
    id INTEGER PRIMARY KEY NOT NULL,
    key_name VARCHAR(64) DEFAULT '' NOT NULL,
    key_type INTEGER DEFAULT 0 NOT NULL,
    value_type INTEGER DEFAULT 0 NOT NULL,
    key_value VARCHAR(128) DEFAULT '' NOT NULL,
    expires INTEGER DEFAULT 0 NOT NULL
);
"""

_UACREG_COLUMNS = ("l_uuid", "l_username", "l_domain", "r_username", "r_domain", "auth_username",
                   "auth_password", "auth_proxy", "expires", "contact_addr")


@dataclasses.dataclass(frozen=True)
class EdgeTrunk:
    """A configured trunk as the edge needs it (firmware.config.routing.Trunk plus its address)."""
    name: str
    host: str                 # as configured: host or host:port (what the CS puts in the R-URI)
    hostname: str
    port: int | None
    transport: str
    register: bool
    username: str
    secret: str
    ip: str | None            # the host resolved now; None when it does not resolve

    @classmethod
    def of(cls, trunk, resolve: bool = True) -> "EdgeTrunk":
        from firmware.config.routing import split_host_port
        hostname, port = split_host_port(trunk.host)
        return cls(trunk.name, trunk.host, hostname, port, trunk.transport, bool(trunk.register),
                   trunk.username, trunk.secret, _resolve(trunk.name, hostname) if resolve else None)

    @property
    def contact_user(self) -> str:
        """The Contact user registered at the provider (uac l_uuid): unguessable without the
        trunk's credentials, stable while they stay the same."""
        seed = "\0".join((self.name, self.host, self.username, self.secret)).encode()
        return "t" + hashlib.sha256(seed).hexdigest()[:24]

    @property
    def dest_uri(self) -> str:
        """Where the edge sends this trunk's calls and REGISTERs ($du / auth_proxy)."""
        return f"sip:{self.host};transport={self.transport}"

    @property
    def aor(self) -> str:
        """To/From of our REGISTERs, the key of the registration state the cfg keeps."""
        return f"sip:{self.username}@{self.host}"


def _resolve(name: str, hostname: str) -> str | None:
    try:
        return str(ipaddress.IPv4Address(hostname))
    except ValueError:
        pass
    try:
        return socket.gethostbyname(hostname)
    except OSError as exc:
        logger.warning("edge: trunk %s host %s not resolved (%s): calls from it are not "
                       "recognised by address", name, hostname, exc)
        return None


def ensure_trunks_db(path: Path) -> None:
    db = _connect(path)
    fresh = path.stat().st_size == 0
    try:
        if fresh:
            path.chmod(0o600)  # provider passwords
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise EdgeError(f"cannot create the trunks database {path}: {exc}") from exc
    finally:
        db.close()


def contact_addr(trunk: EdgeTrunk, sip_addr: str, sip_port: int) -> str:
    """host:port[;transport=] of our Contact for this provider: the edge's address, or when the
    edge listens on every address (0.0.0.0), the local address the route to the trunk uses."""
    host = sip_addr
    if sip_addr == "0.0.0.0":
        host = "127.0.0.1"
        if trunk.ip:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                    probe.connect((trunk.ip, trunk.port or 5060))  # no packet: picks the route only
                    host = probe.getsockname()[0]
            except OSError:
                pass
    tail = "" if trunk.transport == "udp" else f";transport={trunk.transport}"
    return f"{host}:{sip_port}{tail}"


def write_trunks(path: Path, trunks: Iterable[EdgeTrunk], sip_addr: str, sip_port: int,
                 expires: int) -> tuple[set[str], set[str], bool]:
    """Make `trunks` the complete set in trunks.sqlite.

    Returns (registrations added or changed, registrations removed, routing table changed): the
    l_uuids a running edge must load (uac.reg_refresh) or drop (uac.reg_remove), and whether it
    must reload the "trunks" htable."""
    trunks = list(trunks)
    regs = {t.contact_user: (t.contact_user, t.name, CONTACT_DOMAIN, t.username, t.host, t.username,
                             t.secret, t.dest_uri, expires, contact_addr(t, sip_addr, sip_port))
            for t in trunks if t.register}
    routes = sorted([(t.name, t.dest_uri) for t in trunks] + [(f"host:{t.name}", t.host) for t in trunks])
    ensure_trunks_db(path)
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        old = {row[0]: tuple(row) for row in db.execute(f"SELECT {', '.join(_UACREG_COLUMNS)} FROM uacreg")}
        changed = {uuid for uuid, row in regs.items() if old.get(uuid) != row}
        removed = set(old) - set(regs)
        db.executemany("DELETE FROM uacreg WHERE l_uuid = ?", [(u,) for u in removed | changed])
        db.executemany(f"INSERT INTO uacreg ({', '.join(_UACREG_COLUMNS)}) "
                       f"VALUES ({', '.join('?' * len(_UACREG_COLUMNS))})", [regs[u] for u in changed])
        old_routes = sorted(db.execute("SELECT key_name, key_value FROM htable"))
        routes_changed = old_routes != routes
        if routes_changed:
            db.execute("DELETE FROM htable")
            db.executemany("INSERT INTO htable (key_name, key_type, value_type, key_value) "
                           "VALUES (?, 0, 0, ?)", routes)  # string values
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.rollback()
        raise EdgeError(f"cannot write trunks to {path}: {exc}") from exc
    finally:
        db.close()
    if changed or removed or routes_changed:
        logger.info("edge trunks synced: %s", ", ".join(
            f"{t.name} ({'register' if t.register else 'ip'} {t.host} {t.transport})" for t in trunks) or "none")
    return changed, removed, routes_changed


def write_trunk_addresses(path: Path, trunks: Iterable[EdgeTrunk]) -> bool:
    """Trunk source addresses (address group 2, tag = trunk name); True when they changed."""
    return replace_address_group(path, TRUNK_GROUP, [(t.ip, 32, t.name) for t in trunks if t.ip],
                                 "trunk addresses")


class Backoff:
    """When a failed registration is tried again: base, 2 x base, 4 x base ... up to `ceiling`.

    The uac module disables a registration when it fails (reg_retry_interval 0); the edge's
    owner calls Edge.tend_trunks() about once a second, which re-enables it when its time is due.
    """

    def __init__(self, base: int, ceiling: int):
        self.base, self.ceiling = base, ceiling
        self.failures: dict[str, int] = {}
        self.due: dict[str, float] = {}

    def delay(self, failures: int) -> float:
        return min(self.base * 2 ** max(0, failures - 1), self.ceiling)

    def failed(self, uuid: str, now: float) -> float:
        n = self.failures[uuid] = self.failures.get(uuid, 0) + 1
        wait = self.delay(n)
        self.due[uuid] = now + wait
        return wait

    def ok(self, uuid: str) -> None:
        self.failures.pop(uuid, None)
        self.due.pop(uuid, None)


def registration_states(trunks: Iterable[EdgeTrunk], dump: list[dict], codes: dict[str, str],
                        now: float | None = None) -> list[dict]:
    """One entry per configured trunk: name, host, register, state, last_code, expires.

    state: "registered", "registering", "failed" (last_code says why; 408 = no answer),
    "disabled" (a registration trunk the edge does not register: not loaded yet or switched
    off), "ip" (no registration: calls are recognised by the trunk's address).
    `dump` is uac.reg_dump, `codes` the "trunkreg" htable the cfg fills from the replies."""
    now = time.time() if now is None else now
    by_uuid = {str(r.get("l_uuid")): r for r in dump}
    out = []
    for t in trunks:
        entry = {"name": t.name, "host": t.host, "register": t.register, "transport": t.transport,
                 "state": "ip", "last_code": None, "expires": None}
        if t.register:
            reg = by_uuid.get(t.contact_user)
            code = _int(codes.get(f"last:{t.aor}"))
            at = _int(codes.get(f"at:{t.aor}")) or 0
            entry["last_code"] = code
            if reg is None:
                entry["state"] = "disabled"
            else:
                flags = _int(reg.get("flags")) or 0
                sent = _int(reg.get("timer_expires")) or 0
                if flags & _ONLINE:
                    entry["state"] = "registered"
                    entry["expires"] = max(0, _int(reg.get("diff_expires")) or 0)
                elif flags & _DISABLED:
                    entry["state"], entry["disabled"] = "failed", True
                    if code is None or code < 300 or at < sent:
                        entry["last_code"] = 408  # the last attempt got no final answer
                elif code is not None and code >= 300 and not flags & _ONGOING:
                    entry["state"] = "failed"
                else:
                    entry["state"] = "registering"
        out.append(entry)
    return out


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
