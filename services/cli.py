"""The `pbx` command: run the PBX, manage extensions, read status and call records."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

DEMO_EXTENSIONS = (("1000", "Reception"), ("1001", "Sales"), ("1002", "Support"))


def _data_default() -> str:
    return os.environ.get("PBX_DATA", "var")


def _port(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port number (0-65535)")
    return n


def _rtp(text: str):
    from .callsvc.media import rtp_ports_from
    try:
        return rtp_ports_from(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pbx", description="Office PBX appliance")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=_data_default(),
                        help="data directory (default ./var or $PBX_DATA)")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", parents=[common], help="start the whole PBX in the foreground")
    r.add_argument("--sip-addr", default="127.0.0.1", help="address for SIP and RTP (phones use it)")
    r.add_argument("--sip-port", type=_port, default=5060)
    r.add_argument("--web-port", type=_port, default=8080)
    r.add_argument("--rtp-ports", type=_rtp, default=(10000, 20000), metavar="A-B")
    r.add_argument("--cs-port", type=_port, default=0, help="call service UDP port on 127.0.0.1 (0: any)")
    r.add_argument("--no-web", action="store_true", help="do not start the web UI")
    r.add_argument("--trusted", action="append", default=[],
                   help="source IP exempt from flood limits (load tests); repeatable")
    r.add_argument("--lines-tty", help="serial port of the analog line board (default: the board simulator "
                   "when line ports are configured)")
    r.add_argument("--no-lines", action="store_true", help="do not run the analog line gateway")
    r.add_argument("--demo", action="store_true",
                   help="create demo extensions 1000-1002 if missing and print their secrets")

    sv = sub.add_parser("service", parents=[common],
                        help="run one part of the PBX as a systemd service (Type=notify, watchdog)")
    sv.add_argument("name", choices=["edge", "calls", "web"])
    sv.add_argument("--sip-addr", default="127.0.0.1")
    sv.add_argument("--sip-port", type=_port, default=5060)
    sv.add_argument("--cs-port", type=_port, default=5080, help="call service UDP port on 127.0.0.1")
    sv.add_argument("--rtp-ports", type=_rtp, default=(10000, 20000), metavar="A-B")
    sv.add_argument("--web-addr", default="127.0.0.1")
    sv.add_argument("--web-port", type=_port, default=8080)
    sv.add_argument("--trusted", action="append", default=[])

    e = sub.add_parser("ext", help="extensions")
    esub = e.add_subparsers(dest="ext_cmd", required=True)
    a = esub.add_parser("add", parents=[common], help="add an extension")
    a.add_argument("number")
    a.add_argument("--name", required=True)
    a.add_argument("--secret", help="SIP password (default: a strong generated one, printed)")
    esub.add_parser("list", parents=[common], help="list extensions").add_argument(
        "--secrets", action="store_true", help="also show the SIP secrets")
    esub.add_parser("rm", parents=[common], help="remove an extension").add_argument("number")

    ln = sub.add_parser("line", help="analog line ports (FXS phones, FXO exchange lines)")
    lsub = ln.add_subparsers(dest="line_cmd", required=True)
    la = lsub.add_parser("add", parents=[common], help="configure a port of the line board")
    la.add_argument("number", type=int, help="port number on the board, from 1")
    la.add_argument("--kind", required=True, choices=["fxs", "fxo"],
                    help="fxs: an analog phone plugged in; fxo: an exchange line plugged in")
    la.add_argument("--extension", required=True,
                    help="the extension the port registers as (an existing extension)")
    la.add_argument("--destination", default="", help="fxo only: the extension an incoming call rings")
    la.add_argument("--name", default="")
    lsub.add_parser("list", parents=[common], help="list configured ports")
    lsub.add_parser("rm", parents=[common], help="remove a port").add_argument("number", type=int)

    s = sub.add_parser("status", parents=[common], help="registrations and active calls")
    s.add_argument("--json", action="store_true")

    c = sub.add_parser("cdr", parents=[common], help="call detail records")
    c.add_argument("--json", action="store_true")
    c.add_argument("--last", type=int, default=20)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=os.environ.get("PBX_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"run": cmd_run, "service": cmd_service, "ext": cmd_ext, "line": cmd_line,
                "status": cmd_status, "cdr": cmd_cdr}[args.cmd](args)
    except KeyboardInterrupt:
        return 130


def _store(args):
    from firmware.config import ConfigStore
    return ConfigStore(Path(args.data))


def cmd_run(args) -> int:
    from .runner import RunOptions, run
    data = Path(args.data).resolve()
    if args.demo:
        _ensure_demo(data, args.sip_addr, args.sip_port)
    opts = RunOptions(data=data, sip_addr=args.sip_addr, sip_port=args.sip_port, web_port=args.web_port,
                      rtp_ports=args.rtp_ports, cs_port=args.cs_port, web=not args.no_web,
                      trusted=tuple(args.trusted), lines_tty=args.lines_tty)
    if args.no_lines:
        opts.components = opts.components - {"lines"}
    return run(opts)


def cmd_service(args) -> int:
    data = Path(args.data).resolve()
    if args.name == "web":
        from .webservice import serve
        return serve(data, args.web_addr, args.web_port)
    from .runner import RunOptions, run
    opts = RunOptions(data=data, sip_addr=args.sip_addr, sip_port=args.sip_port, web_port=args.web_port,
                      rtp_ports=args.rtp_ports, cs_port=args.cs_port, web=False,
                      trusted=tuple(args.trusted), components=frozenset({args.name}))
    return run(opts)


def _ensure_demo(data: Path, addr: str, port: int) -> None:
    from firmware.config import ConfigStore
    store = ConfigStore(data)
    for number, name in DEMO_EXTENSIONS:
        if store.get_extension(number) is None:
            store.add_extension(number, name)
    print(f"Demo extensions (register phones at sip:{addr}:{port}, user = number):", flush=True)
    for number, _ in DEMO_EXTENSIONS:
        ext = store.get_extension(number)
        print(f"  {ext.number}  {ext.name:<10}  secret {ext.secret}", flush=True)


def cmd_ext(args) -> int:
    from firmware.config import ValidationError, ValidationErrors
    store = _store(args)
    try:
        if args.ext_cmd == "add":
            ext = store.add_extension(args.number, args.name, args.secret)
            print(f"added extension {ext.number} ({ext.name})")
            if args.secret is None:
                print(f"secret: {ext.secret}")
        elif args.ext_cmd == "rm":
            store.remove_extension(args.number)
            print(f"removed extension {args.number}")
        else:
            for ext in store.extensions():
                extra = f"  {ext.secret}" if args.secrets else ""
                print(f"{ext.number:<8}{ext.name}{extra}")
    except (ValidationError, ValidationErrors) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_line(args) -> int:
    from firmware.config import ValidationError
    store = _store(args)
    try:
        if args.line_cmd == "add":
            port = store.add_line_port(args.number, args.kind, args.extension, args.destination, args.name)
            rings = f", rings {port.destination}" if port.destination else ""
            print(f"added line port {port.number} ({port.kind}, registers as {port.extension}{rings})")
        elif args.line_cmd == "rm":
            store.remove_line_port(args.number)
            print(f"removed line port {args.number}")
        else:
            for port in store.line_ports():
                rings = f" -> {port.destination}" if port.destination else ""
                print(f"{port.number:<4}{port.kind:<5}{port.extension}{rings}  {port.name}")
    except ValidationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_status(args) -> int:
    from .control import ControlError, query
    try:
        st = query(args.data, "status")
    except ControlError as exc:
        if args.json:
            print(json.dumps({"running": False, "error": str(exc)}))
        else:
            print(str(exc), file=sys.stderr)
        return 1
    st["running"] = True
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    print(f"PBX {st['version']} up {st['uptime']:.0f}s, SIP {st['sip_addr']}:{st['sip_port']}")
    print(f"registrations ({len(st['registrations'])}):")
    for r in st["registrations"]:
        print(f"  {r['aor']:<8}{r['contact']}  expires {r['expires']}s  {r.get('user_agent', '')}")
    print(f"active calls ({len(st['calls'])}):")
    for c in st["calls"]:
        print(f"  {c['src']} -> {c['dst']}  {c['state']}")
    return 0


def cmd_cdr(args) -> int:
    from firmware.cdr import CdrStore
    store = CdrStore(Path(args.data))
    try:
        records = store.last(args.last)
    finally:
        store.close()
    if args.json:
        print(json.dumps([_cdr_dict(r) for r in records], indent=2))
        return 0
    print(f"{'start':<20}{'src':<8}{'dst':<8}{'disposition':<12}{'dur':>5}{'bill':>6}  cause")
    for r in records:
        start = datetime.fromtimestamp(r.start).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{start:<20}{r.src:<8}{r.dst:<8}{r.disposition.value:<12}{r.duration:>5.0f}"
              f"{r.billsec:>6}  {r.cause}")
    return 0


def _cdr_dict(r) -> dict:
    return {"call_id": r.call_id, "src": r.src, "dst": r.dst, "start": r.start, "answer": r.answer,
            "end": r.end, "duration": round(r.duration, 3), "billsec": r.billsec,
            "disposition": r.disposition.value, "cause": r.cause, "cost": r.cost, "legs": r.legs}


if __name__ == "__main__":
    sys.exit(main())
