"""What music on hold and conference rooms cost the call service's media engine.

    .venv/bin/python -m tests.bench.media_features [--seconds 10]

Music on hold: N held listeners of one class (the shared stream: one frame per tick, encoded
once per codec, one sendto per listener), next to N legs that each play their own copy of the
same music (what every leg costs without sharing), and next to the floor: a loop that sends one
constant packet per listener every 20 ms and does nothing else (the kernel's cost of N RTP streams,
which no sharing can remove). Conference: rooms of 3, 10 and 30 members,
each member's phone (a generator process) sending G.711 at 50 packets/s into its leg, the
mixer sending each the mix-minus. CPU is the engine process's own (user + system, % of one core)
over the window; the listeners' and members' phones run in other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

from .procstat import CLK_TCK, _stat_fields
from .relay_floor import PACKET, _free_block


async def _engine(kind: str, n: int, first: int, peer_first: int) -> None:
    from services.callsvc.media import MediaEngine, Player
    engine = MediaEngine("127.0.0.1", (first, first + 2 * n + 4))
    legs = []
    for i in range(n):
        leg = await engine.open_leg()
        leg.set_remote(("127.0.0.1", peer_first + 2 * i))
        leg.latched = True
        leg.watch_dtmf(101, lambda digit: None)
        legs.append(leg)
    if kind == "moh":
        from services.callsvc.moh import MohService

        class View:
            def table(self, name):
                return {}

        class Svc:
            media, view, store = engine, View(), None

        service = MohService(Svc())

        class Ch:
            number, is_gone = "1000", False

            def __init__(self, leg):
                self.rtp, self.session = leg, type("S", (), {"n": 0, "dst": "", "who": None, "caller": None})

        for leg in legs:
            service.listen(Ch(leg), "default")
    elif kind == "moh-each":
        from firmware.dsp.tones import hold_music
        for leg in legs:
            engine.play(leg, Player(pcm=hold_music(), loop=True))
    elif kind == "floor":
        # the least any sender can do: one constant packet per listener per 20 ms, no music
        loop = asyncio.get_running_loop()

        def tick(at: float) -> None:
            for leg in legs:
                leg.transport.sendto(PACKET, leg.remote)
            loop.call_at(at + 0.02, tick, at + 0.02)
        tick(loop.time())
    elif kind == "conf":
        engine.mix(legs)
    print("ready", flush=True)
    await asyncio.sleep(3600)  # the parent measures, then kills us


def _phones(kind: str, n: int, first: int, peer_first: int, seconds: float) -> None:
    """The members' / listeners' phones: bound sockets (no ICMP back), sending when in a room."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", peer_first + 2 * i))
        s.setblocking(False)
        socks.append((s, ("127.0.0.1", first + 2 * i)))
    tick = time.monotonic()
    end = tick + seconds
    while time.monotonic() < end:
        for s, dest in socks:
            if kind == "conf":
                s.sendto(PACKET, dest)
            try:
                while True:
                    s.recv(2048)  # drain what the engine sends, as a phone would
            except BlockingIOError:
                pass
        tick += 0.02
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _cpu(pid: int) -> float:
    f = _stat_fields(pid)
    return (int(f[11]) + int(f[12])) / CLK_TCK


def measure(kind: str, n: int, seconds: float) -> float:
    first = _free_block(n + 2)
    peer_first = _free_block(n, start=first + 2 * n + 8)
    me = [sys.executable, "-m", "tests.bench.media_features"]
    args = ["--n", str(n), "--first", str(first), "--peer-first", str(peer_first)]
    eng = subprocess.Popen(me + ["--role", kind] + args, stdout=subprocess.PIPE, text=True)
    try:
        if eng.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} engine did not start")
        phones = subprocess.Popen(me + ["--role", f"phones-{kind}", "--seconds", str(seconds + 4)] + args)
        time.sleep(2)
        c0, t0 = _cpu(eng.pid), time.monotonic()
        time.sleep(seconds)
        c1, wall = _cpu(eng.pid), time.monotonic() - t0
        phones.wait(seconds + 10)
    finally:
        eng.kill()
        eng.wait(5)
    return 100 * (c1 - c0) / wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.media_features", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--role", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--peer-first", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role and args.role.startswith("phones-"):
        _phones(args.role[len("phones-"):], args.n, args.first, args.peer_first, args.seconds)
        return 0
    if args.role:
        import uvloop
        uvloop.run(_engine(args.role, args.n, args.first, args.peer_first))
        return 0
    print(f"Music on hold and conference rooms: media engine CPU, % of one core over {args.seconds:.0f} s "
          f"(load average {os.getloadavg()[0]:.2f})")
    print(f"{'music on hold':<34}{'1':>8}{'50':>8}{'100':>8}{'per listener at 100':>22}")
    for kind, label in (("moh", "one shared stream per class"), ("moh-each", "a player per leg (no sharing)"),
                        ("floor", "floor: a fixed packet per leg")):
        cpu = [measure(kind, n, args.seconds) for n in (1, 50, 100)]
        print(f"{label:<34}{cpu[0]:>8.2f}{cpu[1]:>8.2f}{cpu[2]:>8.2f}{cpu[2] / 100:>21.4f}%", flush=True)
    print(f"{'conference room of':<34}{'3':>8}{'10':>8}{'30':>8}{'per participant at 30':>22}")
    cpu = [measure("conf", n, args.seconds) for n in (3, 10, 30)]
    per = "  ".join(f"{c / n:.3f}%" for c, n in zip(cpu, (3, 10, 30)))
    print(f"{'mix-minus, 50 pps in per member':<34}{cpu[0]:>8.2f}{cpu[1]:>8.2f}{cpu[2]:>8.2f}{cpu[2] / 30:>21.4f}%")
    print(f"per participant (3 / 10 / 30): {per}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
