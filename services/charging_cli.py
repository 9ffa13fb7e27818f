"""`pbx cdr rerate --from DATE` and `pbx rating import|list` (call charging, issue 13)."""
from __future__ import annotations

import sys
from datetime import datetime, timedelta

from firmware.config.errors import ValidationError
from firmware.features.charging import ASSIGNMENTS, RateAssignment
from firmware.rating.sheet import SheetError

from . import charging


def _day(value: str, tz, end: bool) -> float:
    try:
        day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=tz)
    except ValueError:
        raise ValidationError("from" if not end else "to", f"'{value}' is not a date: use YYYY-MM-DD") from None
    return (day + timedelta(days=1) if end else day).timestamp()


def cmd_rerate(args) -> int:
    from firmware.config import ConfigStore
    from firmware.config.store import open_data_dir
    if not args.since:
        raise ValidationError("from", "needs a day, YYYY-MM-DD: the first day to rate again")
    data = open_data_dir(args.data, create=False)
    store = ConfigStore(data, create=False)
    tz = charging.zone(store.settings())
    since = _day(args.since, tz, end=False)
    until = _day(args.until, tz, end=True) if args.until else None
    rows, before, after = charging.rerate(data, since, until, store=store)
    print(f"re-rated {rows} call records from {args.since}: total {before} -> {after}")
    return 0


def cmd_rating(args) -> int:
    from firmware.config import ConfigStore
    from firmware.config.store import open_data_dir
    data = open_data_dir(args.data, create=False)
    store = ConfigStore(data, create=False)
    sheets = charging.SheetStore(data)
    if args.rating_cmd == "import":
        if args.trunk is not None:
            RateAssignment(args.trunk, "x").validate()
            known = {"*"} | {t.name for t in store.trunks()} | {f"line:{p.number}" for p in store.line_ports()}
            if args.trunk not in known:
                raise ValidationError("trunk", f"no trunk {args.trunk}: see `pbx trunk list` (or * for every trunk)")
        path = charging.EXAMPLE if args.file == "example" else args.file
        try:
            with open(path, "rb") as f:
                raw = f.read(charging.MAX_UPLOAD + 1)
        except OSError as e:
            print(f"error: cannot read {path}: {e.strerror}", file=sys.stderr)
            return 2
        try:
            sheet = sheets.import_text(raw)
        except SheetError as e:
            print(f"error: {e}", file=sys.stderr)
            for p in e.problems:
                print(f"  {p}", file=sys.stderr)
            return 2
        print(f"imported {sheet.version_id}: {len(sheet.rates)} rates in {sheet.currency}")
        for p in sheet.problems:
            print(f"  refused {p}")
        if args.trunk:
            assignment = RateAssignment(args.trunk, sheet.name)
            if store.record(ASSIGNMENTS, args.trunk) is None:
                store.add_record(ASSIGNMENTS, assignment)
            else:
                store.replace_record(ASSIGNMENTS, assignment)
            print(f"trunk {args.trunk} now uses {sheet.name} (newest version)")
        return 0
    uses = {}
    for a in store.records(ASSIGNMENTS):
        uses.setdefault(a.sheet, []).append(a.trunk + (f"@{a.version}" if a.version else ""))
    for name in sheets.names():
        versions = sheets.versions(name)
        print(f"{name}: versions {', '.join(map(str, versions))}; used by {', '.join(uses.get(name, [])) or 'no trunk'}")
    if not sheets.names():
        print("no rate sheets: pbx rating import FILE --trunk NAME (or 'example' for the UK example)")
    return 0
