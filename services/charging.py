"""Call charging's storage and bookkeeping (issue 13); the decisions are in firmware/rating.

DATA/rating/
    <sheet>/v0001.csv, v0002.csv ...   every import of a sheet, kept as imported (a new import is a
                                       new version; a call record names the version it was rated by)
    alerts.jsonl                       spend-limit and unusual-pattern alerts, one JSON object a line
    alerts.ack                         when an admin last dismissed the alerts (epoch seconds)

Which sheet a trunk uses is a config record (firmware/features/charging.py: rate_assignments,
"*" for every trunk without its own). Rating a call record, the spend so far per extension and
for the site, and `pbx cdr rerate` live here so the call service, the web UI and the CLI share them.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from firmware.cdr import CDR_FILE, CallRecord, CdrStore, Disposition
from firmware.features.charging import ASSIGNMENTS, LIMITS
from firmware.rating import parse_sheet, rate_call
from firmware.rating.limits import SITE, SpendCheck, Spent, payer
from firmware.rating.patterns import CallSummary, unusual
from firmware.rating.sheet import RateSheet, SheetError

log = logging.getLogger(__name__)

RATING_DIR = "rating"
EXAMPLE = Path(__file__).resolve().parent.parent / "firmware" / "rating" / "sheets" / "uk-example.csv"
MAX_UPLOAD = 2_000_000
_VERSION_RE = re.compile(r"v(\d{4,})\.csv")
ZERO = Decimal(0)
LIMIT_MARK = "call limit reached"        # the start of a spend-limit Reject's reason (firmware/rating/limits.py)


def zone(settings) -> ZoneInfo:
    try:
        return ZoneInfo(getattr(settings, "timezone", "UTC") or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


# --- sheets ---------------------------------------------------------------------------------------
class SheetStore:
    """The imported rate sheets of one box, every version kept."""

    _cache: dict[tuple[str, int], tuple[float, RateSheet]] = {}
    _lock = threading.Lock()

    def __init__(self, data_dir: str | os.PathLike):
        self.root = Path(data_dir) / RATING_DIR

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _VERSION_RE.fullmatch(p.name)))

    def import_text(self, text: str | bytes, name: str = "") -> RateSheet:
        """Check and store a sheet as its next version; the RateSheet's `problems` say which lines
        were left out and why. SheetError (nothing stored) when the sheet cannot be used at all."""
        if isinstance(text, bytes):
            if len(text) > MAX_UPLOAD:
                raise SheetError(f"the file is {len(text) // 1000} kB; a rate sheet is at most {MAX_UPLOAD // 1000} kB")
            try:
                text = text.decode("utf-8-sig")
            except UnicodeDecodeError:
                raise SheetError("the file is not UTF-8 text: save the rate sheet as CSV (UTF-8)") from None
        sheet = parse_sheet(text, name)
        folder = self.root / sheet.name
        with self._lock:
            folder.mkdir(parents=True, exist_ok=True)
            version = (self.versions(sheet.name) or [0])[-1] + 1
            path = folder / f"v{version:04d}.csv"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        log.info("rate sheet %s version %d imported: %d rates, %d line(s) refused", sheet.name, version,
                 len(sheet.rates), len(sheet.problems))
        return replace(sheet, version=version)

    def load(self, name: str, version: int = 0) -> RateSheet | None:
        """A stored sheet (version 0: the newest), or None when there is no such sheet."""
        versions = self.versions(name)
        if not versions:
            return None
        version = version or versions[-1]
        path = self.root / name / f"v{version:04d}.csv"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        key = (str(path), version)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] == mtime:
                return hit[1]
        try:
            sheet = replace(parse_sheet(path.read_text(encoding="utf-8"), name), version=version)
        except (OSError, SheetError) as e:
            log.warning("rate sheet %s: %s", path, e)
            return None
        with self._lock:
            self._cache[key] = (mtime, sheet)
        return sheet

    def text(self, name: str, version: int = 0) -> str:
        versions = self.versions(name)
        if not versions:
            raise FileNotFoundError(f"no rate sheet {name}")
        return (self.root / name / f"v{(version or versions[-1]):04d}.csv").read_text(encoding="utf-8")


def active_sheets(data_dir, assignments) -> dict[str, RateSheet]:
    """trunk (or "*") -> the sheet it uses now, from the rate_assignments records."""
    store = SheetStore(data_dir)
    out = {}
    for a in assignments:
        sheet = store.load(a.sheet, a.version)
        if sheet is not None:
            out[a.trunk] = sheet
    return out


def sheets_from_config(store) -> dict[str, RateSheet]:
    return active_sheets(store.data_dir, store.records(ASSIGNMENTS))


# --- rating a call record ---------------------------------------------------------------------
def rate_record(rec: CallRecord, sheets: dict[str, RateSheet], tz: ZoneInfo) -> CallRecord:
    """The record with cost, currency, rate, destination type and sheet version filled in.

    Outbound (dst on a trunk or line): rated by that trunk's sheet (or "*"). Inbound (src on a
    trunk): 0 unless the sheet has an inbound row. Internal: 0."""
    when = datetime.fromtimestamp(rec.answer if rec.answer is not None else rec.start, tz)
    default = sheets.get("*")
    if rec.dst_kind in ("trunk", "line") and rec.dst_trunk:
        sheet = sheets.get(rec.dst_trunk) or default
        charge = rate_call(sheet, rec.external_number or rec.dst, rec.billsec, when)
    elif rec.src_kind in ("trunk", "line") and rec.src_trunk:
        sheet = sheets.get(rec.src_trunk) or default
        charge = rate_call(sheet, "", rec.billsec, when, direction="in")
    else:
        # between extensions (or the PBX itself): free. A call that never reached anyone and no
        # trunk (refused by a limit, a wrong number) is no destination at all: dest_type ""
        sheet = default
        return replace(rec, cost=ZERO if sheet is None else ZERO.quantize(Decimal(1).scaleb(-sheet.decimals)),
                       currency=sheet.currency if sheet else "", rate="0",
                       dest_type="internal" if rec.answer is not None else "",
                       sheet_version=sheet.version_id if sheet else "")
    return replace(rec, cost=charge.cost, currency=charge.currency, rate=str(charge.rate),
                   dest_type=charge.dest_type or "", sheet_version=charge.sheet_version)


def rerate(data_dir, since: float, until: float | None = None, store=None) -> tuple[int, Decimal, Decimal]:
    """Re-rate the call records that started in [since, until) with the sheets in use now.
    Returns (rows, total before, total after)."""
    from firmware.config import ConfigStore
    config = store or ConfigStore(data_dir, create=False)
    sheets, tz = sheets_from_config(config), zone(config.settings())
    before = after = ZERO
    with CdrStore(data_dir) as cdr:
        rows = cdr.rows_since(since, until)
        changed = []
        for rowid, rec in rows:
            new = rate_record(rec, sheets, tz)
            before += rec.cost or ZERO
            after += new.cost or ZERO
            changed.append((rowid, new))
        cdr.set_charges(changed)
    log.info("re-rated %d call records since %s: %s -> %s", len(rows), since, before, after)
    return len(rows), before, after


# --- spend so far -------------------------------------------------------------------------------
@dataclass
class Entry:
    start: float
    payer: str
    cost: Decimal
    billsec: int
    dest_type: str
    number: str


class Ledger:
    """What was spent, per call, since the start of last month (enough for this month and the last 30 days).

    Loaded from the CDR file once, then kept up to date by the call service as it rates calls, so a
    limit holds for the very next call even before the CDR writer has committed the last one."""

    def __init__(self, data_dir, tz: ZoneInfo, now: float | None = None):
        self.tz = tz
        self.entries: list[Entry] = []
        self.lock = threading.Lock()
        since = _horizon(now or time.time(), tz)
        path = Path(data_dir) / CDR_FILE
        if path.exists():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                rows = db.execute("SELECT start_time, answer_time, end_time, src, src_kind, forwarded_from, transfer, "
                                  "transferred_by, cost_exact, dest_type, external_number, dst FROM calls "
                                  "WHERE start_time >= ? AND dst_kind IN ('trunk', 'line')", (since,)).fetchall()
            except sqlite3.Error as e:
                log.warning("spend ledger: cannot read %s: %s", path, e)
                rows = []
            finally:
                db.close()
            for start, answer, end, src, src_kind, fwd, transfer, tby, cost, dest_type, ext, dst in rows:
                who = fwd or (tby if transfer in ("blind", "attended") and tby else src if src_kind in ("extension", "") else "")
                billsec = round(end - answer) if answer is not None else 0
                self.entries.append(Entry(start, who, Decimal(cost) if cost else ZERO, billsec, dest_type, ext or dst))

    def add(self, rec: CallRecord) -> None:
        if rec.dst_kind not in ("trunk", "line"):
            return
        with self.lock:
            self.entries.append(Entry(rec.start, payer(rec), rec.cost or ZERO, rec.billsec, rec.dest_type,
                                      rec.external_number or rec.dst))

    def spent(self, now: float) -> dict[str, Spent]:
        local = datetime.fromtimestamp(now, self.tz)
        day0 = local.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
        month0 = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
        day: dict[str, Decimal] = {}
        month: dict[str, Decimal] = {}
        with self.lock:
            self.entries = [e for e in self.entries if e.start >= _horizon(now, self.tz)]
            for e in self.entries:
                if e.start >= month0 and e.cost:
                    for scope in (e.payer, SITE):
                        if scope:
                            month[scope] = month.get(scope, ZERO) + e.cost
                            if e.start >= day0:
                                day[scope] = day.get(scope, ZERO) + e.cost
        return {s: Spent(day.get(s, ZERO), m) for s, m in month.items()}

    def summaries(self) -> list[CallSummary]:
        with self.lock:
            return [CallSummary(datetime.fromtimestamp(e.start, self.tz), e.billsec, e.dest_type, e.payer, e.number,
                                e.cost > 0) for e in self.entries]


def _horizon(now: float, tz: ZoneInfo) -> float:
    local = datetime.fromtimestamp(now, tz)
    month0 = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return min(month0.timestamp(), (local - timedelta(days=31)).timestamp())


def spend_check(store, ledger: Ledger, sheets: dict[str, RateSheet], now: float) -> SpendCheck | None:
    """What the router needs to hold spend limits and barred destinations; None when there is nothing to check."""
    limits = {r.scope: r.limit() for r in store.records(LIMITS)}
    if not limits and not sheets:
        return None
    currency = next((s.currency for s in sheets.values()), "")
    return SpendCheck(limits=limits, spent=ledger.spent(now) if limits else {}, sheets=sheets, currency=currency)


def spend_this_month(data_dir, extension: str, tz: ZoneInfo, now: float | None = None) -> tuple[Decimal, str, int]:
    """(spent, currency, calls) of an extension's outbound calls this month (the user's page)."""
    now = now or time.time()
    month0 = datetime.fromtimestamp(now, tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0).timestamp()
    path = Path(data_dir) / CDR_FILE
    if not path.exists():
        return ZERO, "", 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute("SELECT cost_exact, currency FROM calls WHERE start_time >= ? AND dst_kind IN ('trunk', 'line') "
                          "AND ((forwarded_from = ?) OR (forwarded_from = '' AND transfer IN ('blind', 'attended') "
                          "AND transferred_by = ?) OR (forwarded_from = '' AND transfer NOT IN ('blind', 'attended') "
                          "AND src = ?))", (month0, extension, extension, extension)).fetchall()
    except sqlite3.Error:
        return ZERO, "", 0
    finally:
        db.close()
    total = sum((Decimal(c) for c, _ in rows if c), ZERO)
    currency = next((cur for _, cur in rows if cur), "")
    return total, currency, len(rows)


# --- alerts ---------------------------------------------------------------------------------------
def add_alert(data_dir, kind: str, text: str, scope: str = "", now: float | None = None,
              dedupe_s: float = 6 * 3600) -> bool:
    """Append an alert unless one of the same kind and scope was raised within dedupe_s. True if added."""
    now = now or time.time()
    for a in alerts(data_dir, since=now - dedupe_s, include_dismissed=True):
        if a["kind"] == kind and a.get("scope", "") == scope:
            return False
    path = Path(data_dir) / RATING_DIR / "alerts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": now, "kind": kind, "text": text, "scope": scope}) + "\n")
    log.warning("charging alert (%s): %s", kind, text)
    return True


def alerts(data_dir, since: float | None = None, include_dismissed: bool = False) -> list[dict]:
    """Alerts since `since` (default: the last 24 h), newest first, without those an admin dismissed."""
    path = Path(data_dir) / RATING_DIR / "alerts.jsonl"
    since = time.time() - 86400 if since is None else since
    if not include_dismissed:
        try:
            since = max(since, float((path.parent / "alerts.ack").read_text()))
        except (OSError, ValueError):
            pass
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[-500:]
    except OSError:
        return []
    for line in lines:
        try:
            a = json.loads(line)
        except ValueError:
            continue
        if isinstance(a, dict) and isinstance(a.get("time"), (int, float)) and a["time"] > since:
            out.append(a)
    return sorted(out, key=lambda a: -a["time"])


def dismiss_alerts(data_dir, now: float | None = None) -> None:
    path = Path(data_dir) / RATING_DIR / "alerts.ack"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(now or time.time()))


def mail_alert(data_dir, to: str, subject: str, text: str) -> str:
    """Queue the alert in the box's mail outbox (services/mailer); "" when no address or no mailer."""
    if not to:
        return ""
    try:
        from services.mailer import outbox
    except ImportError:
        log.warning("charging alert not mailed: the mailer (services/mailer) is not installed")
        return ""
    try:
        return outbox.enqueue(data_dir, to=to, subject=subject[:150], text=text, ref="charging-alert")
    except (ValueError, OSError) as e:
        log.warning("charging alert not mailed to %s: %s", to, e)
        return ""


def check_patterns(data_dir, ledger: Ledger, now: float) -> list[str]:
    """Raise unusual-pattern alerts (firmware/rating/patterns.py); returns the texts of new ones."""
    added = []
    for alert in unusual(ledger.summaries(), datetime.fromtimestamp(now, ledger.tz)):
        if add_alert(data_dir, alert.kind, alert.text, now=now):
            added.append(alert.text)
    return added


def answered_outbound(rec: CallRecord) -> bool:
    return rec.disposition is Disposition.ANSWERED and rec.dst_kind in ("trunk", "line")
