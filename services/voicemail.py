"""Voicemail on disk: each mailbox's messages (WAV files) and greetings, and the message index.

    DATA/voicemail/messages.sqlite          one row per message: mailbox, caller, when, length,
                                            new/old, its e-mail's outbox id
    DATA/voicemail/<mailbox>/msg-<id>.wav   the message (8 kHz mono 16-bit, written atomically)
    DATA/voicemail/<mailbox>/greeting-unavailable.wav, greeting-busy.wav, greeting-name.wav

The call service writes messages and greetings; the web UI lists, plays, marks and deletes them;
both are separate processes, so every operation opens its own short SQLite connection (WAL,
busy timeout). The mailbox settings themselves are config (firmware/features/voicemail.py).
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from services.media.wavfile import RATE, parse_wav, write_wav

log = logging.getLogger(__name__)

GREETING_KINDS = ("unavailable", "busy", "name")
MAX_GREETING_S = 120
MAX_GREETING_UPLOAD = 8 * 1024 * 1024        # 8 MB: two minutes of 44.1 kHz stereo WAV fits
_BOX_RE = re.compile(r"[1-9][0-9]{1,5}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mailbox TEXT NOT NULL,
    caller_number TEXT NOT NULL DEFAULT '',
    caller_name TEXT NOT NULL DEFAULT '',
    received REAL NOT NULL,
    duration REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'new',
    file TEXT NOT NULL,
    email_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS messages_mailbox ON messages (mailbox, status);
"""


@dataclass(frozen=True)
class Message:
    id: int
    mailbox: str
    caller_number: str
    caller_name: str
    received: float          # unix time
    duration: float          # seconds
    status: str              # "new" or "old"
    file: str                # name inside the mailbox's folder
    email_id: str = ""       # the outbox message id of its e-mail ("" = none)


def _check_box(mailbox: str) -> str:
    if not isinstance(mailbox, str) or not _BOX_RE.fullmatch(mailbox):
        raise ValueError(f"{mailbox!r} is not a mailbox number")
    return mailbox


class VoicemailStore:
    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir) / "voicemail"
        self.root.mkdir(parents=True, exist_ok=True)
        self.db_path = self.root / "messages.sqlite"
        with closing(self._connect()) as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.row_factory = sqlite3.Row
        return db

    # --- folders --------------------------------------------------------------------------------
    def box_dir(self, mailbox: str) -> Path:
        path = self.root / _check_box(mailbox)
        path.mkdir(exist_ok=True)
        return path

    def recording_path(self, mailbox: str) -> Path:
        """Where a new message is recorded before it is added (a unique name in the mailbox)."""
        return self.box_dir(mailbox) / f"rec-{time.time_ns()}-{os.getpid()}.wav"

    def file_of(self, message: Message) -> Path:
        return self.box_dir(message.mailbox) / message.file

    # --- messages -------------------------------------------------------------------------------
    def add(self, mailbox: str, recorded: Path, caller_number: str, caller_name: str, received: float,
            duration: float) -> Message:
        """Index a recorded message; its file is renamed to msg-<id>.wav."""
        with closing(self._connect()) as db:
            cur = db.execute("INSERT INTO messages (mailbox, caller_number, caller_name, received, duration, "
                             "status, file) VALUES (?, ?, ?, ?, ?, 'new', ?)",
                             (_check_box(mailbox), caller_number, caller_name, received, duration, recorded.name))
            msg_id = cur.lastrowid
            name = f"msg-{msg_id}.wav"
            os.replace(recorded, self.box_dir(mailbox) / name)
            db.execute("UPDATE messages SET file = ? WHERE id = ?", (name, msg_id))
        log.info("voicemail %s: message %d from %s (%.1f s)", mailbox, msg_id, caller_number or "unknown", duration)
        return self.get(mailbox, msg_id)

    def messages(self, mailbox: str) -> list[Message]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM messages WHERE mailbox = ? ORDER BY received DESC, id DESC",
                              (_check_box(mailbox),)).fetchall()
        return [Message(**dict(r)) for r in rows]

    def get(self, mailbox: str, msg_id: int) -> Message | None:
        with closing(self._connect()) as db:
            row = db.execute("SELECT * FROM messages WHERE mailbox = ? AND id = ?",
                             (_check_box(mailbox), int(msg_id))).fetchone()
        return Message(**dict(row)) if row else None

    def counts(self, mailbox: str) -> tuple[int, int]:
        """(new, old) message counts of a mailbox."""
        return self.all_counts().get(mailbox, (0, 0))

    def all_counts(self) -> dict[str, tuple[int, int]]:
        with closing(self._connect()) as db:
            rows = db.execute("SELECT mailbox, SUM(status = 'new'), SUM(status != 'new') FROM messages "
                              "GROUP BY mailbox").fetchall()
        return {r[0]: (int(r[1] or 0), int(r[2] or 0)) for r in rows}

    def mark(self, mailbox: str, msg_id: int, status: str) -> None:
        if status not in ("new", "old"):
            raise ValueError(f"message status {status!r}: use new or old")
        with closing(self._connect()) as db:
            db.execute("UPDATE messages SET status = ? WHERE mailbox = ? AND id = ?",
                       (status, _check_box(mailbox), int(msg_id)))

    def set_email(self, msg_id: int, email_id: str) -> None:
        with closing(self._connect()) as db:
            db.execute("UPDATE messages SET email_id = ? WHERE id = ?", (email_id, int(msg_id)))

    def delete(self, mailbox: str, msg_id: int) -> bool:
        msg = self.get(mailbox, msg_id)
        if msg is None:
            return False
        with closing(self._connect()) as db:
            db.execute("DELETE FROM messages WHERE id = ?", (msg.id,))
        try:
            self.file_of(msg).unlink()
        except FileNotFoundError:
            pass
        log.info("voicemail %s: message %d deleted", mailbox, msg_id)
        return True

    def with_email(self) -> list[Message]:
        """Messages whose e-mail went to the outbox (for delete-after-sending)."""
        with closing(self._connect()) as db:
            rows = db.execute("SELECT * FROM messages WHERE email_id != ''").fetchall()
        return [Message(**dict(r)) for r in rows]

    # --- greetings ------------------------------------------------------------------------------
    def greeting_path(self, mailbox: str, kind: str) -> Path:
        if kind not in GREETING_KINDS:
            raise ValueError(f"greeting {kind!r}: use one of {', '.join(GREETING_KINDS)}")
        return self.box_dir(mailbox) / f"greeting-{kind}.wav"

    def greeting(self, mailbox: str, kind: str) -> Path | None:
        path = self.greeting_path(mailbox, kind)
        return path if path.is_file() else None

    def save_greeting(self, mailbox: str, kind: str, raw_wav: bytes) -> float:
        """Store an uploaded greeting (any WAV: converted to 8 kHz mono); returns its length in
        seconds. ValueError names what is wrong with the file."""
        if len(raw_wav) > MAX_GREETING_UPLOAD:
            raise ValueError(f"the file is {len(raw_wav) // 1024} kB: a greeting may be at most "
                             f"{MAX_GREETING_UPLOAD // 1024 // 1024} MB")
        pcm = parse_wav(raw_wav, "the greeting")
        seconds = len(pcm) / 2 / RATE
        if seconds < 0.5:
            raise ValueError("the greeting is shorter than half a second: record it again")
        if seconds > MAX_GREETING_S:
            raise ValueError(f"the greeting is {seconds:.0f} s long: at most {MAX_GREETING_S} s")
        write_wav(self.greeting_path(mailbox, kind), pcm)
        log.info("voicemail %s: %s greeting stored (%.1f s)", mailbox, kind, seconds)
        return seconds

    def delete_greeting(self, mailbox: str, kind: str) -> bool:
        try:
            self.greeting_path(mailbox, kind).unlink()
        except FileNotFoundError:
            return False
        log.info("voicemail %s: %s greeting deleted", mailbox, kind)
        return True


# --- links in e-mails ------------------------------------------------------------------------------
LINK_HOURS = 7 * 24          # a link in an e-mail plays the message for a week
_LINK_SALT = "voicemail-link"


def _secret_key(data_dir) -> bytes:
    """The web UI's signing key, DATA/webui/secret-key: made here the way webui/app.py makes it
    (32 random bytes, 0600, created once) when the call service signs a link before the web UI
    first started, so the link still works once it has."""
    path = Path(data_dir) / "webui" / "secret-key"
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:            # the web UI made it meanwhile
        return path.read_bytes()
    key = os.urandom(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


def sign_link(data_dir, mailbox: str, msg_id: int) -> str:
    from itsdangerous import URLSafeTimedSerializer
    return URLSafeTimedSerializer(_secret_key(data_dir), salt=_LINK_SALT).dumps([_check_box(mailbox), int(msg_id)])


def check_link(data_dir, token: str, max_age_s: int = LINK_HOURS * 3600) -> tuple[str, int]:
    """(mailbox, message id) of a valid, unexpired link token; ValueError says why not."""
    from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
    try:
        mailbox, msg_id = URLSafeTimedSerializer(_secret_key(data_dir), salt=_LINK_SALT).loads(token, max_age=max_age_s)
    except SignatureExpired:
        raise ValueError(f"this link has expired (links work for {LINK_HOURS // 24} days): "
                         "dial *97 or open your page on the PBX") from None
    except (BadSignature, ValueError, TypeError):
        raise ValueError("this link is not valid: copy the whole link from the e-mail") from None
    return _check_box(mailbox), int(msg_id)


def remember_link_base(data_dir, url: str) -> None:
    """The web UI's address as people open it (set from the page where e-mail links are switched
    on), for the links the call service puts in e-mails."""
    if url.startswith(("http://", "https://")) and len(url) < 300 and "\n" not in url:
        path = Path(data_dir) / "voicemail" / "web-url"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(url.rstrip("/") + "/")


def link_base(data_dir, sip_addr: str) -> str:
    try:
        return (Path(data_dir) / "voicemail" / "web-url").read_text().strip()
    except FileNotFoundError:
        return f"http://{sip_addr}:8080/"
