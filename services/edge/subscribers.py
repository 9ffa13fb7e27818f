"""The sqlite subscriber table that Kamailio's auth_db reads on every challenge."""
from __future__ import annotations

import ipaddress
import logging
import re
import sqlite3
from pathlib import Path
from typing import Mapping

from .config import EdgeError

logger = logging.getLogger(__name__)

# Kamailio's db_sqlite schema (standard + auth_db, Kamailio 5.6): auth_db
# refuses to start unless version says subscriber is at version 7.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('version', 1);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('subscriber', 7);
CREATE TABLE IF NOT EXISTS subscriber (
    id INTEGER PRIMARY KEY NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT '' NOT NULL,
    password VARCHAR(64) DEFAULT '' NOT NULL,
    ha1 VARCHAR(128) DEFAULT '' NOT NULL,
    ha1b VARCHAR(128) DEFAULT '' NOT NULL,
    CONSTRAINT subscriber_account_idx UNIQUE (username, domain)
);
CREATE INDEX IF NOT EXISTS subscriber_username_idx ON subscriber (username);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('address', 6);
CREATE TABLE IF NOT EXISTS address (
    id INTEGER PRIMARY KEY NOT NULL,
    grp INTEGER DEFAULT 1 NOT NULL,
    ip_addr VARCHAR(50) NOT NULL,
    mask INTEGER DEFAULT 32 NOT NULL,
    port SMALLINT DEFAULT 0 NOT NULL,
    tag VARCHAR(64)
);
"""

# usrloc's table (Kamailio 5.6 usrloc-create.sql, version 9), in its own file: the timer process
# writes it while Edge.sync_subscribers writes the subscriber DB.
_LOCATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS version (
    id INTEGER PRIMARY KEY NOT NULL,
    table_name VARCHAR(32) NOT NULL,
    table_version INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT version_table_name_idx UNIQUE (table_name)
);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('location', 9);
INSERT OR IGNORE INTO version (table_name, table_version) VALUES ('location_attrs', 1);
CREATE TABLE IF NOT EXISTS location (
    id INTEGER PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    contact VARCHAR(512) DEFAULT '' NOT NULL,
    received VARCHAR(128) DEFAULT NULL,
    path VARCHAR(512) DEFAULT NULL,
    expires TIMESTAMP WITHOUT TIME ZONE DEFAULT '2030-05-28 21:32:15' NOT NULL,
    q REAL DEFAULT 1.0 NOT NULL,
    callid VARCHAR(255) DEFAULT 'Default-Call-ID' NOT NULL,
    cseq INTEGER DEFAULT 1 NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL,
    flags INTEGER DEFAULT 0 NOT NULL,
    cflags INTEGER DEFAULT 0 NOT NULL,
    user_agent VARCHAR(255) DEFAULT '' NOT NULL,
    socket VARCHAR(64) DEFAULT NULL,
    methods INTEGER DEFAULT NULL,
    instance VARCHAR(255) DEFAULT NULL,
    reg_id INTEGER DEFAULT 0 NOT NULL,
    server_id INTEGER DEFAULT 0 NOT NULL,
    connection_id INTEGER DEFAULT 0 NOT NULL,
    keepalive INTEGER DEFAULT 0 NOT NULL,
    partition INTEGER DEFAULT 0 NOT NULL,
    CONSTRAINT location_ruid_idx UNIQUE (ruid)
);
CREATE INDEX IF NOT EXISTS location_account_contact_idx ON location (username, domain, contact);
CREATE INDEX IF NOT EXISTS location_expires_idx ON location (expires);
CREATE TABLE IF NOT EXISTS location_attrs (
    id INTEGER PRIMARY KEY NOT NULL,
    ruid VARCHAR(64) DEFAULT '' NOT NULL,
    username VARCHAR(64) DEFAULT '' NOT NULL,
    domain VARCHAR(64) DEFAULT NULL,
    aname VARCHAR(64) DEFAULT '' NOT NULL,
    atype INTEGER DEFAULT 0 NOT NULL,
    avalue VARCHAR(512) DEFAULT '' NOT NULL,
    last_modified TIMESTAMP WITHOUT TIME ZONE DEFAULT '2000-01-01 00:00:01' NOT NULL
);
"""

PEER_GROUP = 1  # the address-table group the edge template checks (trusted networks and trunks)

# RFC 3261 "user" unreserved characters, minus the escapes and the
# separators that would need quoting in a digest username.
_USER = re.compile(r"^[A-Za-z0-9._~!$&'()*+=-]{1,64}$")


def ensure_db(path: Path) -> None:
    """Create the database with Kamailio's schema; WAL lets Kamailio read while we write."""
    fresh = not path.exists()
    db = _connect(path)
    if fresh:
        path.chmod(0o600)  # plain-text SIP passwords (auth_db calculate_ha1)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise EdgeError(f"cannot create the subscriber database {path}: {exc}") from exc
    finally:
        db.close()


def ensure_location_db(path: Path) -> None:
    """The registrations table usrloc loads at start and writes back to."""
    db = _connect(path)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(_LOCATION_SCHEMA)
    except sqlite3.Error as exc:
        raise EdgeError(f"cannot create the registrations database {path}: {exc}") from exc
    finally:
        db.close()


def replace_address_group(path: Path, group: int, rows, what: str) -> bool:
    """Make rows ((ip, mask, tag), ...) the whole of one group of Kamailio's address table (the
    permissions module's trusted peers, trunk source addresses); True when it changed."""
    rows = sorted(set(rows))
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        old = sorted(db.execute("SELECT ip_addr, mask, tag FROM address WHERE grp = ?", (group,)))
        if old == rows:
            db.execute("COMMIT")
            return False
        db.execute("DELETE FROM address WHERE grp = ?", (group,))
        db.executemany("INSERT INTO address (grp, ip_addr, mask, port, tag) VALUES (?, ?, ?, 0, ?)",
                       [(group, ip, mask, tag) for ip, mask, tag in rows])
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.rollback()
        raise EdgeError(f"cannot write {what} to {path}: {exc}") from exc
    finally:
        db.close()
    return True


def write_peers(path: Path, networks: list[ipaddress.IPv4Network]) -> bool:
    """Make `networks` the complete trusted set (address table); True when it changed."""
    ensure_db(path)
    rows = [(str(n.network_address), n.prefixlen, "peer") for n in networks]
    if not replace_address_group(path, PEER_GROUP, rows, "trusted peers"):
        return False
    logger.info("edge trusted peers synced: %s",
                ", ".join(f"{ip}/{m}" for ip, m, _ in sorted(set(rows))) or "none")
    return True


def write_subscribers(path: Path, subscribers: Mapping[str, str]) -> None:
    """Replace the whole subscriber set in one transaction."""
    rows = _checked_rows(subscribers)
    ensure_db(path)
    db = _connect(path)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM subscriber")
        db.executemany("INSERT INTO subscriber (username, domain, password) VALUES (?, '', ?)", rows)
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.rollback()
        raise EdgeError(f"cannot write subscribers to {path}: {exc}") from exc
    finally:
        db.close()
    logger.info("edge subscribers synced: %d extensions", len(rows))


def _checked_rows(subscribers: Mapping[str, str]) -> list[tuple[str, str]]:
    if not isinstance(subscribers, Mapping):
        raise EdgeError("sync_subscribers needs a mapping {extension: password}, "
                        f"got {type(subscribers).__name__}")
    rows = []
    for user, password in subscribers.items():
        if not isinstance(user, str) or not _USER.match(user):
            raise EdgeError(f"extension {user!r} is not a valid SIP user name: "
                            "use 1-64 letters, digits or . _ - (e.g. '1000')")
        if not isinstance(password, str) or not password or len(password) > 64:
            raise EdgeError(f"password of extension {user} must be a non-empty string "
                            "of at most 64 characters")
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in password):
            raise EdgeError(f"password of extension {user} contains control characters: "
                            "use printable characters only")
        rows.append((user, password))
    return rows


def _connect(path: Path) -> sqlite3.Connection:
    # Kamailio holds short read locks; wait for them rather than fail.
    return sqlite3.connect(path, timeout=5.0, isolation_level=None)


PRESENCE_SCHEMAS = (Path("/usr/share/kamailio/db_sqlite/standard-create.sql"),
                    Path("/usr/share/kamailio/db_sqlite/presence-create.sql"))


def ensure_presence_db(path: Path) -> None:
    """The presence module's tables (Kamailio's own schema from the kamailio-sqlite-modules
    package). The module keeps state in memory (publ_cache 2, subs_db_mode 0) but checks
    the table versions at start."""
    db = _connect(path)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name='presentity'").fetchone() is None:
            for schema in PRESENCE_SCHEMAS:
                db.executescript(schema.read_text())
    except OSError as exc:
        raise EdgeError(f"cannot read Kamailio's presence schema {exc.filename}: reinstall "
                        "kamailio-sqlite-modules") from exc
    except sqlite3.Error as exc:
        raise EdgeError(f"cannot create the presence database {path}: {exc}") from exc
    finally:
        db.close()
