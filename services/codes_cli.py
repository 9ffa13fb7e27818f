"""`pbx codes`: the feature codes, and the administrator's changes to them.

    pbx codes [list] [--json]          every code: what is dialled, what it does, on/off
    pbx codes set *33 --code *34       dial *34 for the day/night toggle (quote codes with ** in a shell)
    pbx codes set *8 --off | --on      switch a code off / on again

`python -m services.codes_cli readme` (a development tool, not a box command: it writes this
checkout's README.md) rewrites the README's feature code table from the registry.
"""
from __future__ import annotations

import json
from pathlib import Path


def add_parser(sub, common) -> None:
    c = sub.add_parser("codes", parents=[common], help="feature codes: list, switch off, change the code")
    csub = c.add_subparsers(dest="codes_cmd")
    ls = csub.add_parser("list", parents=[common], help="every feature code and its setting")
    ls.add_argument("--json", action="store_true")
    c.add_argument("--json", action="store_true", help="with no sub-command: the list as JSON")
    st = csub.add_parser("set", parents=[common], help="switch a code on/off or give it another code")
    st.add_argument("code", help="the code as registered (*33) or as dialled now")
    st.add_argument("--code", dest="new_code", metavar="NEW", help="dial NEW instead (e.g. *34)")
    onoff = st.add_mutually_exclusive_group()
    onoff.add_argument("--off", dest="enabled", action="store_false", default=None, help="switch it off")
    onoff.add_argument("--on", dest="enabled", action="store_true", help="switch it on again")


def cmd_codes(args) -> int:
    from firmware.config import ConfigStore, ValidationError
    from firmware.features.codes import TABLE, rows, set_override
    store = ConfigStore(Path(args.data), create=False)
    if args.codes_cmd == "set":
        if args.new_code is None and args.enabled is None:
            raise ValidationError("code", "nothing to change: give --code NEW, --off or --on")
        o = set_override(store, args.code, code=args.new_code, enabled=args.enabled)
        state = "off" if not o.enabled else "on"
        print(f"{o.default}: dialled as {o.code or o.default}, {state}")
        return 0
    table = rows({o.default: o for o in store.records(TABLE)})
    if getattr(args, "json", False):
        print(json.dumps([{"default": r.default, "code": r.code, "dialled": r.dialled, "label": r.label,
                           "group": r.group, "enabled": r.enabled} for r in table], indent=2))
        return 0
    from .cli import _table
    print(_table(("code", "default", "on", "group", "what it does"),
                 [(r.dialled, r.default if r.default != r.code else "", "yes" if r.enabled else "no", r.group,
                   r.label) for r in table]))
    return 0


def rewrite_readme_table() -> int:
    from firmware.features.codes import rewrite_readme
    readme = Path(__file__).resolve().parents[1] / "README.md"
    print(f"{readme}: {'updated' if rewrite_readme(readme) else 'already up to date'}")
    return 0


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["readme"]:
        sys.exit("usage: python -m services.codes_cli readme")
    sys.exit(rewrite_readme_table())
