"""The outbox: outgoing messages on disk, one JSON record and one RFC 5322 file each.

    DATA/mail/blobs/ID.eml    the message as it goes out (CRLF, attachments base64), minus From
                              and Message-ID, which the sender adds from the settings of the moment
    DATA/mail/queue/ID.json   a message still to send (queued, retrying)
    DATA/mail/done/ID.json    a message that was sent or failed (kept for the mail page)

Every file is written to a temporary name, fsynced and renamed, and the directory fsynced: a
message is committed when `enqueue` returns and a power cut loses nothing committed. The blob is
written before its record, so a record always has its message. Any process may enqueue (web UI,
call service, CLI); only the sender changes a queued record (the web UI's "retry now" leaves a
marker file instead). A message may be sent twice if the box dies between the server's "250 OK"
and the record of it: at least once, never lost.
"""
from __future__ import annotations

import email.policy
import email.utils
import json
import logging
import os
import re
import secrets
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Callable

from firmware import mailer as rules

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 20 * 1024 * 1024   # providers refuse 25 MB; base64 is inside this figure
MAX_SUBJECT = 200
_ID = re.compile(r"\d{8}-\d{6}-\d{3}-[0-9a-f]{8}")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
AFTER_SENT_ACTIONS = ("delete_file",)
PUBLIC_FIELDS = ("id", "to", "subject", "ref", "state", "attempts", "last_error", "next_try", "sent_at",
                 "created", "updated", "size")

_sent_callbacks: list[Callable[[dict], None]] = []


def mail_dir(data_dir) -> Path:
    return Path(data_dir) / "mail"


def _dirs(data_dir) -> tuple[Path, Path, Path]:
    root = mail_dir(data_dir)
    return root / "queue", root / "done", root / "blobs"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """`path` holds `data` or what it held before, whatever happens (temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(3)}.tmp")
    try:
        # 0600: voicemail audio and addresses are nobody else's business on the box
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _write_record(path: Path, record: dict) -> None:
    write_atomic(path, json.dumps(record, indent=1, ensure_ascii=False).encode())


def _read_record(path: Path) -> dict | None:
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("mail record %s unreadable: %s", path.name, exc)
        return None


def _new_id(now: float) -> str:
    ms = int(now * 1000) % 1000
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-{ms:03d}-{secrets.token_hex(4)}"


def check_id(message_id: str) -> str:
    if not isinstance(message_id, str) or not _ID.fullmatch(message_id):
        raise ValueError(f"{str(message_id)[:60]!r} is not a mail message id (see `pbx mail list`)")
    return message_id


def _attachment_bytes(name, content, mime: str) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, (str, Path)):
        try:
            return Path(content).read_bytes()
        except OSError as exc:
            raise ValueError(f"attachment {name!r}: cannot read {content}: {exc.strerror}") from None
    raise ValueError(f"attachment {name!r}: give its content as bytes or the path of a file, "
                     f"not {type(content).__name__}")


def _after_sent(data_dir, action: dict | None) -> dict | None:
    if not action:
        return None
    if not isinstance(action, dict) or set(action) - set(AFTER_SENT_ACTIONS):
        raise ValueError(f"after_sent {action!r}: the only action is {{'delete_file': PATH}}")
    path = Path(action["delete_file"]).resolve()
    if not path.is_relative_to(Path(data_dir).resolve()):
        raise ValueError(f"after_sent: {path} is outside the data directory; only the PBX's own files "
                         "may be deleted after sending")
    return {"delete_file": str(path)}


def build_message(*, to: list[str], subject: str, text: str, html: str | None, attachments, created: float
                  ) -> bytes:
    # 7bit: non-ASCII text goes quoted-printable or base64, for servers without 8BITMIME
    msg = EmailMessage(policy=email.policy.SMTP.clone(cte_type="7bit"))
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(created, usegmt=True)
    msg["Auto-Submitted"] = "auto-generated"       # RFC 3834: no auto-replies to a machine
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    for item in attachments:
        try:
            name, content, mime = item
        except (TypeError, ValueError):
            raise ValueError(f"attachment {item!r:.80}: give (filename, bytes or path, mime type)") from None
        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name:
            raise ValueError(f"attachment file name {name!r} must be a plain name such as message.wav")
        if not isinstance(mime, str) or not _MIME.fullmatch(mime.lower()):
            raise ValueError(f"attachment {name!r}: {mime!r} is not a MIME type such as audio/wav")
        maintype, subtype = mime.lower().split("/")
        msg.add_attachment(_attachment_bytes(name, content, mime), maintype=maintype, subtype=subtype,
                           filename=name)
    return msg.as_bytes()


def enqueue(data_dir, *, to: str | list[str], subject: str, text: str, html: str | None = None,
            attachments=(), ref: str = "", after_sent: dict | None = None) -> str:
    """Queue one message; it is on disk when this returns. Returns its id.

    to: "a@example.com", "A <a@example.com>, b@example.com" or a list of those.
    attachments: (filename, content, mime type); content is bytes or the path of a file (str or
    Path), read now, so the file may go away afterwards. ref: the caller's own note (e.g.
    "voicemail:1000/msg0003"), shown on the mail page. after_sent: {"delete_file": PATH} deletes
    that file (inside the data directory) once the message was sent.
    ValueError names the bad argument: an address, an attachment, a subject over one line.
    """
    recipients = rules.parse_recipients(to)
    if not isinstance(subject, str) or "\r" in subject or "\n" in subject or len(subject) > MAX_SUBJECT:
        raise ValueError(f"mail subject must be one line of at most {MAX_SUBJECT} characters, got {subject!r:.80}")
    if not isinstance(text, str):
        raise ValueError("mail text must be a str")
    if html is not None and not isinstance(html, str):
        raise ValueError("mail html must be a str or None")
    if not isinstance(ref, str) or len(ref) > 200:
        raise ValueError("mail ref must be text of at most 200 characters")
    action = _after_sent(data_dir, after_sent)
    now = time.time()
    blob = build_message(to=recipients, subject=subject, text=text, html=html, attachments=attachments,
                         created=now)
    if len(blob) > MAX_MESSAGE_BYTES:
        raise ValueError(f"the message would be {len(blob) / 1e6:.1f} MB; mail servers refuse more than "
                         f"{MAX_MESSAGE_BYTES / 1e6:.0f} MB: send a link instead of the attachment")
    queue, done, blobs = _dirs(data_dir)
    for d in (queue, done, blobs):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    message_id = _new_id(now)
    write_atomic(blobs / f"{message_id}.eml", blob)
    record = {"id": message_id, "to": recipients, "subject": subject, "ref": ref, "state": "queued",
              "attempts": 0, "last_error": "", "next_try": now, "sent_at": None, "created": now,
              "updated": now, "size": len(blob), "after_sent": action}
    _write_record(queue / f"{message_id}.json", record)
    log.info("mail %s queued to %s: %s%s", message_id, ", ".join(recipients), subject,
             f" ({ref})" if ref else "")
    return message_id


def _public(record: dict) -> dict:
    return {k: record.get(k) for k in PUBLIC_FIELDS}


def _record(data_dir, message_id: str) -> tuple[Path, dict] | None:
    queue, done, _ = _dirs(data_dir)
    for d in (queue, done):     # queue first: a finished record is in done/ before it leaves queue/
        record = _read_record(d / f"{message_id}.json")
        if record is not None:
            return d, record
    return None


def status(data_dir, message_id: str) -> dict:
    """One message: id, to, subject, ref, state ("queued"|"retrying"|"sent"|"failed"), attempts,
    last_error, next_try, sent_at, created, updated (epoch seconds or None), size (bytes).
    KeyError when there is no such message (pruned or never queued)."""
    found = _record(data_dir, check_id(message_id))
    if found is None:
        raise KeyError(f"no mail message {message_id} (`pbx mail list` shows the messages kept)")
    return _public(found[1])


def _newest(directory: Path, limit: int) -> list[str]:
    try:
        names = [n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith(".")]
    except FileNotFoundError:
        return []
    return sorted(names, reverse=True)[:limit]    # ids start with the UTC time


def messages(data_dir, limit: int = 200) -> list[dict]:
    """The newest `limit` messages (queued, retrying, sent and failed), newest first."""
    queue, done, _ = _dirs(data_dir)
    seen: dict[str, dict] = {}
    for d in (queue, done):
        for name in _newest(d, limit):
            record = _read_record(d / name)
            if record is not None and record.get("id") not in seen:
                seen[record["id"]] = _public(record)
    return sorted(seen.values(), key=lambda r: r.get("created") or 0, reverse=True)[:limit]


_finished_cache: dict[str, tuple[int, dict]] = {}     # done/ records: written once, then only deleted


def _read_finished(path: Path) -> dict | None:
    try:
        stamp = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    cached = _finished_cache.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    record = _read_record(path)
    if record is not None:
        if len(_finished_cache) > 5000:
            _finished_cache.clear()
        _finished_cache[str(path)] = (stamp, record)
    return record


def summary(data_dir, now: float | None = None) -> dict:
    """{"queued", "retrying", "failed" (in the last week): counts, "last_error"} for the dashboard
    (asked every second by each open dashboard: reads the queue and only the last 8 days of done/,
    each finished record parsed once)."""
    now = time.time() if now is None else now
    queue, done, _ = _dirs(data_dir)
    since = _new_id(now - 8 * 86400)[:15]          # ids start with the UTC time they were queued
    records = [_read_record(queue / n) for n in _newest(queue, 10 ** 9)]
    records += [_read_finished(done / n) for n in _newest(done, 10 ** 9) if n[:15] >= since]
    return rules.summary([r for r in records if r is not None], now)


def retry(data_dir, message_id: str) -> str:
    """Try a retrying message now, or queue a failed one again (the admin fixed the cause).
    Returns the message's state afterwards; ValueError when there is nothing to retry."""
    queue, done, blobs = _dirs(data_dir)
    found = _record(data_dir, check_id(message_id))
    if found is None:
        raise ValueError(f"no mail message {message_id}")
    where, record = found
    if where == queue:
        write_atomic(queue / f"{message_id}.now", b"")     # the sender picks it up (it owns the record)
        return record["state"]
    if record["state"] != "failed":
        raise ValueError(f"mail {message_id} was sent already")
    if not (blobs / f"{message_id}.eml").exists():
        raise ValueError(f"mail {message_id} cannot be sent again: its content was removed")
    now = time.time()
    record.update(state="queued", next_try=now, retry_from=now, retry_base=record.get("attempts", 0), updated=now)
    _write_record(queue / f"{message_id}.json", record)
    (done / f"{message_id}.json").unlink(missing_ok=True)
    log.info("mail %s queued again by hand (it had failed: %s)", message_id, record.get("last_error"))
    return "queued"


def on_sent(callback: Callable[[dict], None]) -> Callable[[dict], None]:
    """Call `callback(record)` in the sender's process after each message was sent (usable as a
    decorator). For an action that must happen whichever process queued the message, give
    enqueue(after_sent=...) instead."""
    _sent_callbacks.append(callback)
    return callback


# --- for the sender (services/mailer/sender.py), the only writer of queued records ---

def pending(data_dir) -> list[dict]:
    """Queued and retrying records, with "poke": True when someone asked to try it now."""
    queue, done, blobs = _dirs(data_dir)
    try:
        names = os.listdir(queue)
    except FileNotFoundError:
        return []
    out = []
    pokes = {n[:-4] for n in names if n.endswith(".now")}
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        record = _read_record(queue / name)
        if record is None:
            continue
        finished = _read_record(done / name) if (done / name).exists() else None
        if finished is not None:
            # in both places: finished, then the box died before it left the queue (done/ is newer),
            # or queued again by hand (retry(): the queue's copy is newer, its done/ copy about to go)
            if float(finished.get("updated") or 0) >= float(record.get("updated") or 0):
                (queue / name).unlink(missing_ok=True)
                continue
            (done / name).unlink(missing_ok=True)
        record["poke"] = record["id"] in pokes
        out.append(record)
    return out


def message_bytes(data_dir, message_id: str) -> bytes:
    return (_dirs(data_dir)[2] / f"{message_id}.eml").read_bytes()


def save(data_dir, record: dict) -> None:
    """Store a changed queued record (still queued or retrying)."""
    queue = _dirs(data_dir)[0]
    record = {k: v for k, v in record.items() if k != "poke"}
    _write_record(queue / f"{record['id']}.json", record)
    (queue / f"{record['id']}.now").unlink(missing_ok=True)


def finish(data_dir, record: dict) -> None:
    """Move a sent or failed record from the queue to done/; a sent message's content goes."""
    queue, done, blobs = _dirs(data_dir)
    record = {k: v for k, v in record.items() if k != "poke"}
    _write_record(done / f"{record['id']}.json", record)
    (queue / f"{record['id']}.json").unlink(missing_ok=True)
    (queue / f"{record['id']}.now").unlink(missing_ok=True)
    if record["state"] == "sent":
        (blobs / f"{record['id']}.eml").unlink(missing_ok=True)


def tidy(data_dir, now: float, keep: int = 1000, max_age: float = 90 * 86400, orphan_age: float = 3600) -> int:
    """Forget finished messages beyond the newest `keep` or older than `max_age`; delete leftover
    temp files and blobs without a record (an enqueue that died half way). Returns files removed."""
    queue, done, blobs = _dirs(data_dir)
    removed = 0
    names = _newest(done, 10 ** 9)
    for i, name in enumerate(names):
        record = _read_record(done / name) if i < keep else None
        if record is None or now - float(record.get("updated") or 0) > max_age:
            (done / name).unlink(missing_ok=True)
            (blobs / f"{name[:-5]}.eml").unlink(missing_ok=True)
            removed += 1
    live = {n[:-5] for d in (queue, done) if d.exists() for n in os.listdir(d) if n.endswith(".json")}
    for d in (queue, done, blobs):
        if not d.exists():
            continue
        for entry in os.scandir(d):
            stale = now - entry.stat().st_mtime > orphan_age
            orphan = (entry.name.endswith(".eml") and entry.name[:-4] not in live) or entry.name.endswith(".tmp") \
                or (entry.name.endswith(".now") and entry.name[:-4] not in live)
            if orphan and stale:
                os.unlink(entry.path)
                removed += 1
    return removed


def sent_callbacks() -> list[Callable[[dict], None]]:
    return list(_sent_callbacks)


def enqueue_test(data_dir, to: str, requested_by: str = "") -> str:
    """Queue the test message of the mail page and `pbx mail test`; ValueError when no mail server
    is set (the message could not go anywhere) or the address is bad."""
    from firmware.config import ConfigStore
    settings = ConfigStore(data_dir, create=False).settings()
    if not settings.smtp_host:
        raise ValueError("no mail server is set: fill in Outgoing mail on the Settings page "
                         "(smtp_host) first")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    text = (f"This is a test e-mail from the PBX \"{settings.site_name}\", queued {when}"
            f"{' by ' + requested_by if requested_by else ''}.\n\n"
            f"It is sent through {settings.smtp_host}:{settings.smtp_port} "
            f"({settings.smtp_tls}) as {settings.smtp_from}.\n"
            "If you can read this, voicemail to e-mail will reach this address.\n")
    return enqueue(data_dir, to=to, subject=f"Test e-mail from {settings.site_name}", text=text,
                   ref=f"test{' by ' + requested_by if requested_by else ''}")
