"""A realistic call history for reports: thousands of CDR rows, each rated by the rating code.

`make_history(data_dir, n)` writes n call records to data_dir/cdr.sqlite over the `days` before
`end`: office-hours heavy, some at night, internal, inbound and outbound calls to landlines,
mobiles, freephone, directory and abroad, some unanswered; every row is rated by
services.charging.rate_record with the shipped UK example sheet (as the call service does).
"""
from __future__ import annotations

import random
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from firmware.cdr import CallRecord, CdrStore, Disposition
from firmware.rating import parse_sheet
from services import charging

NUMBERS = [("01632960%03d", 30), ("02079460%03d", 25), ("07700900%03d", 25), ("0800123%04d", 5),
           ("118%03d", 1), ("0033145678%03d", 6), ("001212555%04d", 5), ("004930123%04d", 2)]


def make_history(data_dir, n: int = 3000, days: int = 60, extensions=("1000", "1001", "1002", "1003", "1004"),
                 trunk: str = "carrier", end: float | None = None, seed: int = 13, tz: str = "Europe/London") -> dict:
    rng = random.Random(seed)
    zone = ZoneInfo(tz)
    sheet = parse_sheet(charging.EXAMPLE.read_text())
    from dataclasses import replace
    sheet = replace(sheet, version=1)
    sheets = {"*": sheet}
    end = end or time.time()
    start0 = datetime.fromtimestamp(end, zone) - timedelta(days=days)
    records = []
    weights = [w for _, w in NUMBERS]
    for i in range(n):
        day = start0 + timedelta(days=rng.randrange(days))
        hour = rng.choices(range(24), weights=[1, 1, 1, 1, 1, 1, 2, 4, 10, 14, 15, 13, 9, 12, 14, 13, 11, 8, 4, 3, 2, 2, 1, 1])[0]
        start = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60)).timestamp()
        if start >= end:
            start = end - rng.randrange(60, 86400)
        ext = rng.choice(extensions)
        kind = rng.choices(("out", "in", "internal"), weights=(60, 25, 15))[0]
        answered = rng.random() < 0.8
        talk = int(rng.expovariate(1 / 150)) + 1 if answered else 0
        ring = rng.uniform(2, 15)
        answer = start + ring if answered else None
        finish = (answer + talk) if answered else start + ring
        common = dict(call_id=f"hist-{seed}-{i}", start=start, answer=answer, end=finish,
                      disposition=Disposition.ANSWERED if answered else rng.choice(
                          (Disposition.NO_ANSWER, Disposition.BUSY, Disposition.CANCELLED)))
        if kind == "out":
            pattern = rng.choices([p for p, _ in NUMBERS], weights=weights)[0]
            number = pattern % rng.randrange(1000)
            rec = CallRecord(src=ext, dst=number, src_kind="extension", dst_kind="trunk", dst_trunk=trunk,
                             external_number=number, **common)
        elif kind == "in":
            rec = CallRecord(src="07700900%03d" % rng.randrange(1000), dst=ext, src_kind="trunk", dst_kind="extension",
                             src_trunk=trunk, **common)
        else:
            other = rng.choice([e for e in extensions if e != ext])
            rec = CallRecord(src=ext, dst=other, src_kind="extension", dst_kind="extension", **common)
        records.append(charging.rate_record(rec, sheets, zone))
    with CdrStore(data_dir) as store:
        for k in range(0, len(records), 1000):
            store.write_many(records[k:k + 1000])
    total = sum((r.cost for r in records), start=type(records[0].cost)(0))
    return {"rows": len(records), "total": total, "since": start0.timestamp(), "end": end}
