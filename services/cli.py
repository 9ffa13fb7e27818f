"""The `pbx` command: run the PBX, manage extensions, read status and call records."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from datetime import datetime
from pathlib import Path

DEMO_EXTENSIONS = (("1000", "Reception"), ("1001", "Sales"), ("1002", "Support"))


def _data_default() -> str:
    return os.environ.get("PBX_DATA", "var")


class Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one `error:` line (what is wrong, and where the help is)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _port(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if not 0 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return n


def _whole(low: int, high: int):
    def whole(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            n = low - 1
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return n
    whole.__name__ = "number"
    return whole


def _rtp(text: str):
    from .callsvc.media import rtp_ports_from
    try:
        return rtp_ports_from(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not an IPv4 address of this machine (e.g. 192.168.1.10, or 0.0.0.0 for all)") from None


def _ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not an IP address of this machine (e.g. 192.168.1.10, or 0.0.0.0 for all)") from None


def _on_off(text: str) -> bool:
    if text.lower() in ("on", "yes", "true", "1"):
        return True
    if text.lower() in ("off", "no", "false", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text[:20]!r}: say on or off")


def _ipv4_net(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(text, strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not an IPv4 address or network (e.g. 192.168.1.20 or 192.168.1.0/24)") from None


def _tty(text: str) -> str:
    if not text or not os.path.exists(text):
        raise argparse.ArgumentTypeError(
            f"serial port {text[:60]!r} does not exist: plug in the line board, or check the name (ls /dev/tty*)")
    return text


def _join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """`--secret -abc` as `--secret=-abc`: argparse would take a value starting with '-' for an
    option and stop with "expected one argument". Any option that takes one value gets the next
    word as it is, unless that word is itself one of the options."""
    takes_value, options = set(), set()

    def walk(p):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    walk(sub)
                continue
            options.update(action.option_strings)
            if action.option_strings and action.nargs is None:
                takes_value.update(action.option_strings)
    walk(parser)
    out, i = [], 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            out += argv[i:]
            break
        following = argv[i + 1] if i + 1 < len(argv) else None
        if (word in takes_value and following is not None and following.startswith("-")
                and following != "--" and following.split("=", 1)[0] not in options):
            out.append(f"{word}={following}")
            i += 2
            continue
        out.append(word)
        i += 1
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="pbx", description="Office PBX appliance")
    common = Parser(add_help=False)
    common.add_argument("--data", default=_data_default(),
                        help="data directory (default ./var or $PBX_DATA)")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", parents=[common], help="start the whole PBX in the foreground")
    r.add_argument("--sip-addr", type=_ipv4, default="127.0.0.1",
                   help="address for SIP and RTP (phones use it)")
    r.add_argument("--sip-port", type=_port, default=5060)
    r.add_argument("--web-port", type=_port, default=8080)
    r.add_argument("--rtp-ports", type=_rtp, default=(10000, 20000), metavar="A-B")
    r.add_argument("--kernel-media", choices=("auto", "off"), default="auto", help=KERNEL_MEDIA_HELP)
    r.add_argument("--cs-port", type=_port, default=0, help="call service UDP port on 127.0.0.1 (0: any)")
    r.add_argument("--call-services", type=_whole(1, 8), default=1, metavar="N",
                   help="scale-out: run N call services, the edge spreading calls to extensions over them "
                        "(docs/decisions/025-scale-out-dispatcher.md); each gets 1/N of --rtp-ports")
    r.add_argument("--no-web", action="store_true", help="do not start the web UI")
    r.add_argument("--web-idle-exit", type=_whole(0, 86400), default=600, metavar="SECONDS",
                   help="stop the web UI after this many seconds without a request; the next connection "
                        "starts it again (default 600; 0: keep it running)")
    r.add_argument("--browser-phone-port", type=_port, default=0, metavar="PORT",
                   help="SIP over WebSocket for the browser phone page on PORT (e.g. 8443; starts rtpengine); 0: off")
    r.add_argument("--browser-phone-rtp-ports", type=_rtp, default=(21000, 21999), metavar="A-B",
                   help="rtpengine's RTP ports for browser phone calls")
    r.add_argument("--trusted", type=_ipv4_net, action="append", default=[],
                   help="source IP exempt from flood limits (load tests); repeatable")
    r.add_argument("--lines-tty", type=_tty, help="serial port of the analog line board (default: the board simulator "
                   "when line ports are configured)")
    r.add_argument("--no-lines", action="store_true", help="do not run the analog line gateway")
    r.add_argument("--demo", action="store_true",
                   help="create demo extensions 1000-1002 if missing and print their secrets")

    sv = sub.add_parser("service", parents=[common],
                        help="run one part of the PBX as a systemd service (Type=notify, watchdog)")
    sv.add_argument("name", choices=["edge", "calls", "web"])
    sv.add_argument("--sip-addr", type=_ipv4, default="127.0.0.1")
    sv.add_argument("--sip-port", type=_port, default=5060)
    sv.add_argument("--cs-port", type=_port, default=5080, help="call service UDP port on 127.0.0.1")
    sv.add_argument("--instance", type=_whole(1, 8), default=1, metavar="I",
                    help="calls: this is call service I of several (2..8: its own lock and control socket "
                         "DATA/run/control-I.sock, no mail sender; give it its own --cs-port and --rtp-ports)")
    sv.add_argument("--call-service-port", type=_port, action="append", default=[], metavar="PORT",
                    help="edge: the UDP port on 127.0.0.1 of call service 2, 3... (repeatable; decision 025)")
    sv.add_argument("--rtp-ports", type=_rtp, default=(10000, 20000), metavar="A-B")
    sv.add_argument("--kernel-media", choices=("auto", "off"), default="auto", help=KERNEL_MEDIA_HELP)
    sv.add_argument("--web-addr", type=_ip, default="127.0.0.1")
    sv.add_argument("--web-port", type=_port, default=8080)
    sv.add_argument("--https", choices=("auto", "on", "off"), default="auto",
                    help="web UI over HTTPS (auto: unless --web-addr is loopback)")
    sv.add_argument("--redirect-port", type=_port, default=None,
                    help="answer plain HTTP here with a redirect to the HTTPS UI (e.g. 80)")
    sv.add_argument("--idle-exit", type=_whole(0, 86400), default=0, metavar="SECONDS",
                    help="web: stop after this many seconds without a request, when socket-activated "
                         "(pbx-web.socket starts it again on the next connection); 0: never")
    sv.add_argument("--trusted", type=_ipv4_net, action="append", default=[])
    sv.add_argument("--browser-phone-port", type=_port, default=0, metavar="PORT",
                    help="edge: SIP over WebSocket for browser phones on PORT (starts rtpengine); 0: off")
    sv.add_argument("--browser-phone-rtp-ports", type=_rtp, default=(21000, 21999), metavar="A-B")

    e = sub.add_parser("ext", help="extensions")
    esub = e.add_subparsers(dest="ext_cmd", required=True)
    a = esub.add_parser("add", parents=[common], help="add an extension")
    a.add_argument("number")
    a.add_argument("--name", required=True)
    a.add_argument("--secret", help="SIP password (default: a strong generated one, printed); "
                   "may start with '-'")
    esub.add_parser("list", parents=[common], help="list extensions").add_argument(
        "--secrets", action="store_true", help="also show the SIP secrets")
    esub.add_parser("rm", parents=[common], help="remove an extension").add_argument("number")
    es = esub.add_parser("set", parents=[common], help="change an extension's name, DND, forwards, caller ID")
    es.add_argument("number")
    es.add_argument("--name")
    es.add_argument("--enabled", type=_on_off, metavar="on|off")
    es.add_argument("--dnd", type=_on_off, metavar="on|off", help="do not disturb (as *78 / *79)")
    for flag, code in (("always", "*72"), ("busy", "*90"), ("no-answer", "*52")):
        es.add_argument(f"--forward-{flag}", metavar="DEST",
                        help=f"as {code}: extension:1001, external:07700900123, a bare extension number, "
                             "or none")
    es.add_argument("--caller-id", dest="external_caller_id", metavar="NUMBER",
                    help="number outside callees see (e.g. +442071234567); none for the route's")
    es.add_argument("--department", metavar="NAME", help="for reports (e.g. Sales); none to clear it")

    ln = sub.add_parser("line", help="analog line ports (FXS phones, FXO exchange lines)")
    lsub = ln.add_subparsers(dest="line_cmd", required=True)
    la = lsub.add_parser("add", parents=[common], help="configure a port of the line board")
    la.add_argument("number", type=_whole(1, 999), help="port number on the board, from 1")
    la.add_argument("--kind", required=True, choices=["fxs", "fxo"],
                    help="fxs: an analog phone plugged in; fxo: an exchange line plugged in")
    la.add_argument("--extension", required=True,
                    help="the extension the port registers as (an existing extension)")
    la.add_argument("--destination", default="", help="fxo only: the extension an incoming call rings")
    la.add_argument("--name", default="")
    lsub.add_parser("list", parents=[common], help="list configured ports")
    lsub.add_parser("rm", parents=[common], help="remove a port").add_argument("number", type=_whole(1, 999))

    t = sub.add_parser("trunk", help="SIP trunks")
    tsub = t.add_subparsers(dest="trunk_cmd", required=True)
    tsub.add_parser("list", parents=[common], help="trunks and their registration state").add_argument(
        "--json", action="store_true")

    s = sub.add_parser("status", parents=[common], help="registrations and active calls")
    s.add_argument("--json", action="store_true")

    c = sub.add_parser("cdr", parents=[common], help="call detail records")
    c.add_argument("--json", action="store_true")
    c.add_argument("--last", type=_whole(1, 100000), default=20, metavar="N",
                   help="the N most recent calls (default 20)")
    csub = c.add_subparsers(dest="cdr_cmd", required=False)
    cr = csub.add_parser("rerate", parents=[common], help="price the calls since --from again with the rate "
                                                          "sheets in use now (call charging)")
    cr.add_argument("--from", dest="since", metavar="DATE", required=True, help="first day (YYYY-MM-DD, box time)")
    cr.add_argument("--to", dest="until", metavar="DATE", help="last day (default: up to now)")

    rt = sub.add_parser("rating", help="call charging: rate sheets")
    rtsub = rt.add_subparsers(dest="rating_cmd", required=True)
    ri = rtsub.add_parser("import", parents=[common], help="import a rate sheet (CSV) as its next version")
    ri.add_argument("file", help="the CSV file, or 'example' for the shipped UK example")
    ri.add_argument("--trunk", help="use it for this trunk (* for every trunk without its own sheet)")
    rtsub.add_parser("list", parents=[common], help="sheets, versions and which trunk uses which")

    from .codes_cli import add_parser as add_codes_parser
    add_codes_parser(sub, common)

    m = sub.add_parser("mail", help="outgoing e-mail: test the SMTP settings, list the outbox")
    msub = m.add_subparsers(dest="mail_cmd", required=True)
    mt = msub.add_parser("test", parents=[common], help="queue a test e-mail and wait for the outcome")
    mt.add_argument("address")
    mt.add_argument("--wait", type=_whole(0, 600), default=30, metavar="SECONDS",
                    help="how long to wait for sent/failed (default 30; 0: just queue it)")
    ml = msub.add_parser("list", parents=[common], help="messages: sent, retrying, failed and why")
    ml.add_argument("--json", action="store_true")
    ml.add_argument("--last", type=_whole(1, 1000), default=50, metavar="N")
    from .ha.cli import add_parser as add_ha
    add_ha(sub, common)
    from .update import add_parser as add_update
    add_update(sub, common)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_dash_values(parser, sys.argv[1:] if argv is None else list(argv)))
    # No log line says where in the code, in which thread or process it was made: skip finding out
    # per record (the caller lookup alone, sys._getframe and a walk up the stack, was 6 % of the
    # call service's CPU at 250 call setups/s; issue 16)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=os.environ.get("PBX_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"run": cmd_run, "service": cmd_service, "ext": cmd_ext, "line": cmd_line,
                "trunk": cmd_trunk, "status": cmd_status, "cdr": cmd_cdr, "mail": cmd_mail,
                "rating": cmd_rating, "codes": cmd_codes, "ha": cmd_ha, "update": cmd_update}[args.cmd](args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        return _error(exc)


def _error(exc: Exception) -> int:
    """One `error:` line on stderr for any failure, never a traceback: 2 for a bad value,
    1 for everything else (an unusable data directory, a PBX that cannot start...)."""
    from firmware.config import ConfigFileError, ConfigLockTimeout, ValidationError
    from .control import ControlError
    expected = [ConfigFileError, ConfigLockTimeout, ControlError]
    for module, name in (("services.runner", "RunError"), ("services.edge.config", "EdgeError")):
        if module in sys.modules:
            expected.append(getattr(sys.modules[module], name))
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    if isinstance(exc, ValidationError):
        print(f"error: {text}", file=sys.stderr)
        return 2
    if isinstance(exc, tuple(expected)):
        print(f"error: {text}", file=sys.stderr)
        return 1
    logging.getLogger(__name__).debug("unexpected failure", exc_info=True)
    print(f"error: unexpected {type(exc).__name__}: {text} (PBX_LOG_LEVEL=DEBUG shows where; "
          "please report it)", file=sys.stderr)
    return 1


def _store(args, create: bool = False):
    """The configuration in --data; only commands that add something may make a new directory."""
    from firmware.config import ConfigStore
    return ConfigStore(Path(args.data), create=create)


KERNEL_MEDIA_HELP = ("auto (default): bridged G.711 calls forwarded by the kernel (nftables) when the box "
                     "allows it (CAP_NET_ADMIN, media on a LAN interface's address), else the "
                     "user-space relay, the reason logged once; off: always the user-space relay")


def cmd_run(args) -> int:
    from .runner import RunOptions, run
    data = Path(args.data).resolve()
    _store(args, create=True)          # an unusable --data is one error line, before anything starts
    if args.demo:
        _ensure_demo(data, args.sip_addr, args.sip_port)
    opts = RunOptions(data=data, sip_addr=args.sip_addr, sip_port=args.sip_port, web_port=args.web_port,
                      rtp_ports=args.rtp_ports, kernel_media=args.kernel_media, cs_port=args.cs_port,
                      web=not args.no_web, web_idle_exit=args.web_idle_exit,
                      trusted=tuple(args.trusted), lines_tty=args.lines_tty,
                      browser_phone_port=args.browser_phone_port,
                      browser_phone_rtp_ports=args.browser_phone_rtp_ports, call_services=args.call_services)
    if args.no_lines:
        opts.components = opts.components - {"lines"}
    return run(opts)


def cmd_service(args) -> int:
    data = Path(args.data).resolve()
    _store(args, create=True)
    if args.name == "web":
        from .runner import RunError, port_in_use
        from .webservice import serve
        if "LISTEN_FDS" not in os.environ:     # socket-activated: systemd holds the ports
            busy = port_in_use(args.web_addr, args.web_port)
            if busy:
                raise RunError(f"web UI cannot start: {busy}")
        return serve(data, args.web_addr, args.web_port, args.https, args.redirect_port, args.idle_exit)
    from .runner import RunOptions, run
    opts = RunOptions(data=data, sip_addr=args.sip_addr, sip_port=args.sip_port, web_port=args.web_port,
                      rtp_ports=args.rtp_ports, kernel_media=args.kernel_media, cs_port=args.cs_port, web=False,
                      trusted=tuple(args.trusted), components=frozenset({args.name}),
                      browser_phone_port=args.browser_phone_port,
                      browser_phone_rtp_ports=args.browser_phone_rtp_ports,
                      instance=args.instance if args.name == "calls" else 1,
                      more_call_services=tuple(args.call_service_port) if args.name == "edge" else ())
    if opts.instance > 1:    # its log lines are told apart from call service 1's
        for handler in logging.getLogger().handlers:
            handler.setFormatter(logging.Formatter(
                f"%(asctime)s %(levelname)s calls-{opts.instance} %(name)s: %(message)s"))
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
    store = _store(args, create=args.ext_cmd == "add")
    try:
        if args.ext_cmd == "add":
            ext = store.add_extension(args.number, args.name, args.secret)
            print(f"added extension {ext.number} ({ext.name})")
            if args.secret is None:
                print(f"secret: {ext.secret}")
        elif args.ext_cmd == "rm":
            store.remove_extension(args.number)
            print(f"removed extension {args.number}")
        elif args.ext_cmd == "set":
            changes = {k: getattr(args, k) for k in ("name", "enabled", "dnd", "forward_always", "forward_busy",
                                                     "forward_no_answer", "external_caller_id", "department")
                       if getattr(args, k) is not None}
            for k in ("forward_always", "forward_busy", "forward_no_answer", "external_caller_id", "department"):
                if changes.get(k, "").lower() in ("none", "off"):
                    changes[k] = ""
            if not changes:
                print("error: nothing to change: give --name, --dnd, --forward-always/-busy/-no-answer, "
                      "--caller-id, --department or --enabled", file=sys.stderr)
                return 2
            ext = store.update_extension(args.number, **changes)
            print(f"extension {ext.number}: " + ", ".join(
                f"{k} {'on' if v is True else 'off' if v is False else (v or 'none')}"
                for k, v in ((k, getattr(ext, k)) for k in changes)))
        else:
            for ext in store.extensions():
                extra = f"  {ext.secret}" if args.secrets else ""
                print(f"{ext.number:<8}{ext.name}{extra}")
    except (ValidationError, ValidationErrors) as exc:
        for err in exc.errors:       # one line per mistake
            print(f"error: {err}", file=sys.stderr)
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
    from firmware.config import ConfigFileError
    from firmware.config.store import open_data_dir
    from .control import ControlError, query
    try:
        open_data_dir(args.data, create=False)
        st = query(args.data, "status")
    except (ControlError, ConfigFileError) as exc:
        if args.json:
            print(json.dumps({"running": False, "error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
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
    for cs in st.get("call_services") or []:     # scale-out: call services 2..N (decision 025)
        print(f"call service {cs['call_service']}: " + (cs["error"] if "error" in cs else
              f"{cs['calls']} active calls, {cs['completed_calls']} completed (pid {cs['pid']}, udp {cs['cs_port']})"))
    km = st.get("kernel_media") or {}
    print(f"media: {km.get('bridges', 0)} bridged calls forwarded by the kernel" if km.get("on")
          else "media: user-space relay (kernel path off: the reason is in the log)")
    if st.get("ha"):          # failover on: `pbx ha status` says more
        ha = st["ha"]
        print(f"failover: {ha.get('role')} box {ha.get('state')}, peer {ha.get('peer')} {ha.get('peer_state')}")
    return 0


def cmd_trunk(args) -> int:
    """`pbx trunk list`: every configured trunk with the running edge's view of it (registered,
    registering, failed + last code, disabled, ip) or "unknown" when the PBX is not running."""
    from .control import ControlError, query
    trunks = _store(args).trunks()
    try:
        live = {t.get("name"): t for t in query(args.data, "status").get("trunks", [])}
    except ControlError:
        live = {}
    rows = []
    for t in trunks:
        st = live.get(t.name, {})
        rows.append({"name": t.name, "host": t.host, "transport": t.transport, "register": t.register,
                     "state": st.get("state", "unknown"), "last_code": st.get("last_code"),
                     "expires": st.get("expires")})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(_table(("name", "host", "transport", "register", "state", "code", "expires"),
                 [(r["name"], r["host"], r["transport"], "yes" if r["register"] else "no", r["state"],
                   "" if r["last_code"] is None else str(r["last_code"]),
                   "" if r["expires"] is None else f"{r['expires']}s") for r in rows],
                 right={"code", "expires"}))
    return 0


def cmd_ha(args) -> int:
    from .ha.cli import cmd_ha as run
    return run(args)


def cmd_update(args) -> int:
    from .update import cmd_update as run
    _store(args)          # a --data without PBX data in it is an error here too, before rauc runs
    return run(args)


def cmd_codes(args) -> int:
    from .codes_cli import cmd_codes as run
    return run(args)


def cmd_rating(args) -> int:
    from .charging_cli import cmd_rating as run
    return run(args)


def cmd_cdr(args) -> int:
    from firmware.cdr import CdrStore
    from firmware.config.store import open_data_dir
    if getattr(args, "cdr_cmd", None) == "rerate":
        from .charging_cli import cmd_rerate
        return cmd_rerate(args)
    store = CdrStore(open_data_dir(args.data, create=False))
    try:
        records = store.last(args.last)
    finally:
        store.close()
    if args.json:
        print(json.dumps([_cdr_dict(r) for r in records], indent=2))
        return 0
    from firmware.cdr import details
    rows = [(datetime.fromtimestamp(r.start).strftime("%Y-%m-%d %H:%M:%S"), r.src, r.dst,
             r.disposition.value, str(r.duration), str(r.billsec), r.cause, ", ".join(details(r)))
            for r in records]
    headers = ("start", "src", "dst", "disposition", "dur", "bill", "cause", "details")
    if not any(row[-1] for row in rows):   # trunk, forward, transfer: a column only when a call has them
        headers, rows = headers[:-1], [row[:-1] for row in rows]
    if any(r.currency for r in records):   # call charging: a cost column once calls are rated
        headers = headers[:6] + ("cost",) + headers[6:]
        rows = [row[:6] + ((f"{r.cost} {r.currency}" if r.currency and r.cost is not None else ""),) + row[6:]
                for row, r in zip(rows, records)]
    print(_table(headers, rows, right={"dur", "bill", "cost"}))
    return 0


def cmd_mail(args) -> int:
    """`pbx mail test ADDRESS`: queue a test message, wait for the running PBX's sender to send it.
    `pbx mail list`: the outbox, newest first (services/mailer)."""
    import time
    from firmware.config.store import open_data_dir
    from .mailer import outbox
    data = open_data_dir(args.data, create=False)
    if args.mail_cmd == "test":
        try:
            message_id = outbox.enqueue_test(data, args.address, requested_by="pbx mail test")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"queued test e-mail {message_id} to {args.address}")
        deadline = time.monotonic() + args.wait
        st = outbox.status(data, message_id)
        while st["state"] in ("queued", "retrying") and time.monotonic() < deadline:
            time.sleep(0.2)
            st = outbox.status(data, message_id)
        if st["state"] == "sent":
            print(f"sent to {args.address}" + (f" ({st['last_error']})" if st["last_error"] else ""))
            return 0
        if st["state"] == "failed":
            print(f"error: the test e-mail failed: {st['last_error']}", file=sys.stderr)
            return 1
        if args.wait == 0:
            return 0
        why = st["last_error"] or "not tried yet: is the PBX running? (`pbx status`)"
        print(f"error: still {st['state']} after {args.wait} s: {why}", file=sys.stderr)
        return 1
    records = outbox.messages(data, args.last)
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0

    def when(t):
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else ""
    rows = [(when(r["created"]), r["state"], str(r["attempts"]), ", ".join(r["to"]), r["subject"],
             r["last_error"] or (f"next try {when(r['next_try'])}" if r["state"] == "retrying" else ""))
            for r in records]
    print(_table(("queued", "state", "tries", "to", "subject", "why"), rows, right={"tries"}))
    return 0


def _table(headers, rows, right=frozenset()) -> str:
    """Columns as wide as their widest cell, two spaces apart; numbers right-aligned."""
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells):
        out = [c.rjust(w) if h in right else c.ljust(w) for h, c, w in zip(headers, cells, widths)]
        return "  ".join(out).rstrip()
    return "\n".join([line(headers)] + [line(row) for row in rows])


def _cdr_dict(r) -> dict:
    return {"call_id": r.call_id, "src": r.src, "dst": r.dst, "start": r.start, "answer": r.answer,
            "end": r.end, "duration": r.duration, "billsec": r.billsec,
            "disposition": r.disposition.value, "cause": r.cause,
            "cost": None if r.cost is None else str(r.cost), "currency": r.currency, "rate": r.rate,
            "dest_type": r.dest_type, "sheet_version": r.sheet_version, "legs": r.legs,
            "linkedid": r.linkedid, "seq": r.seq, "src_kind": r.src_kind, "dst_kind": r.dst_kind,
            "src_trunk": r.src_trunk, "dst_trunk": r.dst_trunk, "external_number": r.external_number,
            "forwarded_from": r.forwarded_from, "transfer": r.transfer, "transferred_by": r.transferred_by}


if __name__ == "__main__":
    sys.exit(main())
