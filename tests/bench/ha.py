"""Failover bench (`make ha-bench`, issue 14): for each way box A can fail, how long until the
virtual IP is on B, how long until a new call through the VIP succeeds, and how many of the
phones registered on A are still registered on B (without re-registering).

Each failure kind gets a fresh office LAN in network namespaces (tests/hanet.py: a switch, box
A primary, box B backup, a phone host) and two real PBXes (`pbx run` with `pbx ha set`):

    kill9     every process of A killed with SIGKILL, its cable still in (keepalived too: the VIP
              stays configured on the dead box, B announces it with gratuitous ARP)
    linkdown  A's cable pulled (the switch port down), A's processes keep running
    sigstop   every process of A stopped (SIGSTOP): a hung box
    power     a power cut: every process of A killed at once and its cable pulled
    vrrponly  only the VRRP adverts between A and B dropped at the switch (nftables on the
              bridge), everything else flows: what a "heartbeat-only cut" can be on one LAN; it
              counts how many boxes hold the VIP 3 s later

"New call" = phone 1000 dials *97 (its own voicemail: the call service answers and speaks; the
RTP packets the phone receives in the first second are counted) through the VIP,
one attempt after the other, each given up after 0.25 s without an answer (so the time has that
resolution; faster attempts would trip the edge's flood limit), and hangs up (BYE answered 200).

"Answered call" = desks 2000 and 2001 in a call through A, each sending RTP every 20 ms: the
longest silence either hears in the 3 s after the failure, then 2000's BYE (200 = the dialog
lived on) and whether 2001 got the BYE.

"Remote site" (kind remote, tests/wannet.py): box A alone on the office LAN with a remote
standby R behind a WAN of 40 ms each way and 1 % loss, a carrier on its own link to the office
router; A's power is cut: when R is active, when the carrier sees R's REGISTER, when the
carrier's inbound DID call to R is answered by a phone registered on R as its backup (RTP both
ways for 2 s, packets counted), and after A's power comes back, when R hands back.

    python -m tests.bench.ha [--phones 50] [--kinds power,kill9,remote] [--runs 1]
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.hanet import OfficeLan, PbxPair, RtpStream, wait_for
from tests.phones.raw import RawPhone, drain, raw_call, sdp_body

ATTEMPT_S = 0.25        # a call attempt not answered in this time is given up and the next one sent
KINDS = ("kill9", "linkdown", "sigstop", "power", "vrrponly", "remote")
ROOT = Path(__file__).resolve().parents[2]
PBX = str(ROOT / ".venv" / "bin" / "pbx")


def _seed(phones: int):
    def seed(store):
        from firmware.features import voicemail as vm
        from firmware.features.voicemail import Mailbox
        store.add_extension("1000", "Ann", secret="Ann-ha-1000-secret")
        store.add_record(vm.TABLE, Mailbox("1000", generated_pin="123456"))
        for n in range(phones):
            store.add_extension(str(2000 + n), f"Desk {n}", secret=f"desk-secret-{n:04d}")
    return seed


def _registered_on(data: Path) -> set[str]:
    out = subprocess.run([PBX, "status", "--data", str(data), "--json"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return set()
    return {r["aor"].split(":")[-1].split("@")[0] for r in json.loads(out.stdout).get("registrations", [])}


class _Log:
    def __init__(self, path):
        self.path = path

    def log_tail(self) -> str:
        return self.path.read_text(errors="replace")[-3000:]


def _live(data: Path) -> dict:
    from services.control import ControlError, query
    try:
        return query(str(data), "ha", timeout=3.0) or {}
    except ControlError:
        return {}


def _call(phone: RawPhone, rtp, timeout: float, listen: float = 0.0) -> tuple[float, int] | None:
    """(monotonic time the call was answered, RTP packets received in `listen` seconds) when it
    was answered and its BYE answered 200."""
    rtp.setblocking(False)
    drain(rtp)
    status, dialog, _ = phone.invite("*97", sdp_body(phone.ip, rtp.getsockname()[1]), timeout=timeout)
    answered = time.monotonic()
    if status != 200 or dialog is None:
        return None
    packets, until = 0, answered + listen
    while time.monotonic() < until:
        rtp.settimeout(max(0.01, until - time.monotonic()))
        try:
            data = rtp.recv(2048)
        except OSError:
            continue
        packets += len(data) > 12 and data[0] >> 6 == 2
    return (answered, packets) if phone.bye(dialog) == 200 else None


def _fail(lan: OfficeLan, kind: str) -> float:
    a = lan.box_a
    if kind == "power":
        return lan.power_cut(a)
    if kind == "linkdown":
        subprocess.run(["ip", "-n", lan.switch, "link", "set", a.if_out, "down"], check=True)
        return time.monotonic()
    if kind in ("kill9", "sigstop"):
        sig = signal.SIGKILL if kind == "kill9" else signal.SIGSTOP
        at = time.monotonic()
        for pid in a.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return at
    if kind == "vrrponly":
        rules = ("add table bridge hb; add chain bridge hb f { type filter hook forward priority 0; }; "
                 "add rule bridge hb f ip protocol 112 drop")
        subprocess.run(["ip", "netns", "exec", lan.switch, "nft", rules], check=True)
        return time.monotonic()
    raise ValueError(kind)


def run_kind(kind: str, phones: int) -> dict:
    base = Path(tempfile.mkdtemp(prefix=f"ha-bench-{kind}-"))
    result = {"kind": kind, "phones": phones + 1}
    with OfficeLan() as lan, PbxPair(lan, base, seed=_seed(phones)) as pair:
        pair.wait_ready()
        caller = RawPhone("1000", "Ann-ha-1000-secret", (lan.vip, 5060), sock=lan.phone.socket(), ip=lan.phone.addr)
        desks = [RawPhone(str(2000 + n), f"desk-secret-{n:04d}", (lan.vip, 5060), sock=lan.phone.socket(),
                          ip=lan.phone.addr) for n in range(phones)]
        assert caller.register() == 200, "phone 1000 did not register on A"
        assert [d.register() for d in desks] == [200] * phones, "a desk phone did not register on A"
        everyone = {"1000"} | {str(2000 + n) for n in range(phones)}
        wait_for("every registration replicated to B", lambda: everyone <= _registered_on(pair.data["b"]), 30,
                 every=0.5)
        rtp = lan.phone.socket()
        rtp.bind((lan.phone.addr, 40000))
        wait_for("a call through A", lambda: _call(caller, rtp, 2.0), 20, every=0.5)
        # an answered call between desks 2000 and 2001, audio both ways, known to B before the failure
        talk = {n: lan.phone.socket() for n in (0, 1)}
        talk[0].bind((lan.phone.addr, 40010))
        talk[1].bind((lan.phone.addr, 40012))
        dialog, pbx_0, pbx_1, dialog_1 = raw_call(_Log(base / "a.log"), desks[0], desks[1], talk[0], talk[1],
                                                  offer=sdp_body(lan.phone.addr, 40010),
                                                  answer=sdp_body(lan.phone.addr, 40012))
        streams = [RtpStream(talk[0], pbx_0), RtpStream(talk[1], pbx_1)]
        wait_for("the answered call's audio", lambda: all(len(st.arrivals) > 20 for st in streams), 10)
        wait_for("the answered call known to B",
                 lambda: _live(pair.data["b"]).get("answered_calls_held") or kind == "vrrponly", 10, every=0.1)
        vip_at: list[float] = []

        def watch():
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not vip_at:
                if lan.vip in lan.box_b.addresses():
                    vip_at.append(time.monotonic())
                time.sleep(0.005)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        cut = _fail(lan, kind)
        call_at = None
        deadline = cut + 30
        while time.monotonic() < deadline:
            call = _call(caller, rtp, ATTEMPT_S, listen=1.0)
            if call:
                call_at, result["audio_packets"] = call
                break
        watcher.join(25)
        time.sleep(max(0.0, cut + 3.0 - time.monotonic()))
        for st in streams:
            st.stop()
        result["talk_gap_s"] = round(max(st.largest_gap(cut, cut + 3.0) for st in streams), 3)
        bye_seen = {}

        def callee_bye():
            req = desks[1].wait_request("BYE", 8)
            if req is not None:
                desks[1].reply(req, 200)
                bye_seen["ok"] = True
        t = threading.Thread(target=callee_bye)
        t.start()
        result["bye"] = desks[0].bye(dialog)
        t.join(10)
        result["bye"] = f"{result['bye']}{'' if bye_seen else ' (callee got no BYE)'}"
        for sock in talk.values():
            sock.close()
        result["vip_s"] = round(vip_at[0] - cut, 3) if vip_at else None
        result["call_s"] = round(call_at - cut, 3) if call_at else None
        kept = everyone & _registered_on(pair.data["b"])
        result["registrations"] = f"{len(kept)}/{len(everyone)}"
        live = _live(pair.data["b"])
        result["gap_b_s"] = (live.get("last_takeover") or {}).get("gap_s")
        if kind == "vrrponly":
            time.sleep(3.0)
            result["vip_holders"] = sum(lan.vip in h.addresses() for h in (lan.box_a, lan.box_b))
        if kind == "sigstop":
            for pid in lan.box_a.pids():
                try:
                    os.kill(pid, signal.SIGCONT)      # so that the clean-up's SIGKILL lands
                except ProcessLookupError:
                    pass
        for p in [caller, *desks]:
            p.close()
        rtp.close()
    return result


def run_remote() -> dict:
    """The remote standby over the emulated WAN (tests/wannet.py), A's power cut."""
    from tests.wannet import Carrier, TwoSites, WanSites, inbound_call
    result: dict = {"kind": "remote"}
    with tempfile.TemporaryDirectory(prefix="ha-remote-") as base, WanSites(delay_ms=40, loss_pct=1.0) as net:
        result["wan"] = f"{net.emulated}: 40 ms each way, 1 % loss"
        carrier = Carrier(net.carrier)
        try:
            with TwoSites(net, base) as sites:
                a, r = net.box_a.addr, net.remote.addr
                wait_for("A to register the trunk", lambda: carrier.from_(a), 60)
                wait_for("R to be the standby with A's configuration", lambda: sites.state("r") == "BACKUP"
                         and _has_extension(sites.data["r"]), 60)
                phone = RawPhone("1000", "Ann-remote-1000-pw", (r, 5060), sock=net.phone.socket(), ip=net.phone.addr)
                wait_for("the phone's backup registration on R", lambda: phone.register(timeout=2) == 200, 20, every=0.2)
                time.sleep(1.0)
                cut = net.power_cut(net.box_a)
                result["active_s"] = wait_for("R to take over", lambda: sites.state("r") == "MASTER"
                                              and time.monotonic(), 20, every=0.02) - cut
                result["trunk_s"] = wait_for("R to register the trunk", lambda: (carrier.from_(r) or [None])[0],
                                             30, every=0.02) - cut
                call = inbound_call(net, net.carrier.addr, r, phone)
                result["answered_s"] = call["answered_at"] - cut if call["status"] == 200 else None
                result["audio"] = f"{call['carrier_rx']}/{call['phone_rx']}"
                result["bye"] = call["bye"]
                result["gap_r_s"] = ((_live(sites.data["r"]).get("last_takeover") or {}).get("gap_s"))
                subprocess.run(["ip", "-n", net.switch, "link", "set", net.box_a.if_out, "up"], check=True)
                back = time.monotonic()
                sites.start_box("a")
                result["handback_s"] = wait_for("R to hand back", lambda: sites.state("r") == "BACKUP"
                                                and time.monotonic(), 60, every=0.05) - back
                phone.close()
        finally:
            carrier.close()
    return result


def _has_extension(data: Path) -> bool:
    from firmware.config import ConfigStore
    return ConfigStore(data).get_extension("1000") is not None


def remote_table(results: list[dict]) -> str:
    lines = ["| remote site over the WAN | R active | trunk registered on R | first inbound DID call answered "
             "| its audio (RTP packets in 2 s, carrier/phone) | its BYE | gap R measured | R hands back after A's power returns |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        def s(v):
            return "-" if v is None else f"{v:.2f} s"
        lines.append(f"| {r.get('wan', r.get('error', '-'))} | {s(r.get('active_s'))} | {s(r.get('trunk_s'))} "
                     f"| {s(r.get('answered_s'))} | {r.get('audio', '-')} | {r.get('bye', '-')} | {s(r.get('gap_r_s'))} "
                     f"| {s(r.get('handback_s'))} |")
    return "\n".join(lines)


def table(results: list[dict]) -> str:
    lines = ["| failure | VIP on B | new call OK | its audio (RTP packets in 1 s) | registrations kept "
             "| answered call: longest audio gap | its BYE after | gap B measured | VIP holders 3 s later |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        def s(v):
            return "-" if v is None else f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"
        lines.append(f"| {r['kind']} | {s(r.get('vip_s'))} | {s(r.get('call_s'))} | {r.get('audio_packets', '-')} "
                     f"| {r.get('registrations', '-')} | {s(r.get('talk_gap_s'))} | {r.get('bye', '-')} "
                     f"| {s(r.get('gap_b_s'))} | {r.get('vip_holders', '-')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phones", type=int, default=50, help="desk phones registered on A besides the caller")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    ap.add_argument("--runs", type=int, default=1, help="runs of each kind")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error(f"--kinds: {', '.join(bad)} unknown: use {', '.join(KINDS)}")
    # a stopped bench (timeout, Ctrl-C) still takes its namespaces and PBXes down (OfficeLan.stop)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        print("make ha-bench needs root (network namespaces)", file=sys.stderr)
        return 2
    results = []
    for kind in kinds:
        for _ in range(args.runs):
            try:
                r = run_remote() if kind == "remote" else run_kind(kind, args.phones)
            except (AssertionError, subprocess.CalledProcessError) as exc:
                r = {"kind": kind, "error": str(exc)}
                print(f"{kind}: {exc}", file=sys.stderr)
            print(json.dumps(r), file=sys.stderr)
            results.append(r)
    lan = [r for r in results if r["kind"] != "remote"]
    remote = [r for r in results if r["kind"] == "remote"]
    if lan:
        print(table(lan))
    if remote:
        print(remote_table(remote))
    return 0


if __name__ == "__main__":
    sys.exit(main())
