"""The floor under the call service's media cost: a bare uvloop relay next to ours, same load.

    .venv/bin/python -m tests.bench.relay_floor [--calls 200] [--seconds 10]

A generator process sends G.711 packets (172 bytes, 50/s) into 2 x CALLS RTP sockets; the relay
forwards each one out of its peer socket to the generator's (never read) socket. We compare
  bare: the smallest uvloop relay possible (one line in datagram_received),
  pbx:  services.callsvc.media legs bridged as in a call (fast path, DTMF watch on),
splitting CPU into user (Python + uvloop) and system (the kernel's UDP path; on loopback the
receiver's path is charged to the sender too). Whatever the bare relay costs, no Python relay on
this machine can cost less.
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

PACKET = bytes([0x80, 8]) + bytes(10) + b"\xd5" * 160


def _free_block(count: int, start: int = 20000) -> int:
    """A first port p such that p, p+2, ... p+2*(count-1) bind now (the range is then used at once)."""
    for first in range(start, 60000 - 2 * count, 2 * count + 2):
        socks = []
        try:
            for i in range(count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", first + 2 * i))
            return first
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no block of {count} free UDP ports on 127.0.0.1")


async def _relay(kind: str, calls: int, first: int, gen_first: int) -> None:
    loop = asyncio.get_running_loop()
    if kind.startswith("bare"):
        connected = kind == "bare-conn"

        class Bare(asyncio.DatagramProtocol):
            def connection_made(self, t):
                self.t = t

            def datagram_received(self, data, addr):
                if connected:
                    self.peer.t.sendto(data)
                else:
                    self.peer.t.sendto(data, self.peer.remote)

        legs = []
        for i in range(2 * calls):
            remote = ("127.0.0.1", gen_first + 2 * i)
            _, p = await loop.create_datagram_endpoint(Bare, local_addr=("127.0.0.1", first + 2 * i),
                                                       remote_addr=remote if connected else None)
            p.remote = remote
            legs.append(p)
        for i in range(0, 2 * calls, 2):
            legs[i].peer, legs[i + 1].peer = legs[i + 1], legs[i]
    else:
        from services.callsvc.media import MediaEngine
        engine = MediaEngine("127.0.0.1", (first, first + 4 * calls + 2))
        legs = []
        for i in range(2 * calls):
            leg = await engine.open_leg()
            leg.set_remote(("127.0.0.1", gen_first + (leg.port - first)))
            leg.latched = True
            leg.watch_dtmf(101, lambda digit: None)
            legs.append(leg)
        for i in range(0, 2 * calls, 2):
            engine.bridge(legs[i], legs[i + 1])
    print("ready", flush=True)
    await asyncio.sleep(3600)  # the parent measures, then kills us


def _generate(calls: int, first: int, gen_first: int, seconds: float) -> None:
    socks = []
    for i in range(2 * calls):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", gen_first + 2 * i))
        socks.append((s, ("127.0.0.1", first + 2 * i)))
    tick = time.monotonic()
    end = tick + seconds
    while time.monotonic() < end:
        for s, dest in socks:
            s.sendto(PACKET, dest)
        tick += 0.02
        delay = tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _cpu(pid: int) -> tuple[float, float]:
    f = _stat_fields(pid)
    return int(f[11]) / CLK_TCK, int(f[12]) / CLK_TCK


def measure(kind: str, calls: int, seconds: float) -> dict:
    first = _free_block(2 * calls + 2)
    gen_first = _free_block(2 * calls, start=first + 4 * calls + 8)
    me = [sys.executable, "-m", "tests.bench.relay_floor"]
    relay = subprocess.Popen(me + ["--role", kind, "--calls", str(calls), "--first", str(first),
                                   "--gen-first", str(gen_first)], stdout=subprocess.PIPE, text=True)
    try:
        if relay.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{kind} relay did not start")
        gen = subprocess.Popen(me + ["--role", "gen", "--calls", str(calls), "--first", str(first),
                                     "--gen-first", str(gen_first), "--seconds", str(seconds + 4)])
        time.sleep(2)  # let the load settle
        u0, s0 = _cpu(relay.pid)
        t0 = time.monotonic()
        time.sleep(seconds)
        u1, s1 = _cpu(relay.pid)
        wall = time.monotonic() - t0
        gen.wait(seconds + 10)
    finally:
        relay.kill()
        relay.wait(5)
    user, system = 100 * (u1 - u0) / wall, 100 * (s1 - s0) / wall
    return {"kind": kind, "calls": calls, "user": user, "system": system,
            "per_call": (user + system) / calls, "per_call_user": user / calls}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.relay_floor", description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--role", choices=["bare", "bare-conn", "pbx", "gen"], help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, help=argparse.SUPPRESS)
    p.add_argument("--gen-first", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "gen":
        _generate(args.calls, args.first, args.gen_first, args.seconds)
        return 0
    if args.role in ("bare", "bare-conn", "pbx"):
        import uvloop
        uvloop.run(_relay(args.role, args.calls, args.first, args.gen_first))
        return 0
    print(f"Relay floor: {args.calls} bridged calls, 2 x 50 packets/s each, {args.seconds:.0f} s window "
          f"(% of one core; load average {os.getloadavg()[0]:.2f})")
    print(f"{'relay':<10}{'user':>8}{'system':>9}{'total':>8}{'per call':>10}{'user/call':>11}")
    for kind in ("bare", "bare-conn", "pbx"):
        r = measure(kind, args.calls, args.seconds)
        print(f"{kind:<10}{r['user']:>8.1f}{r['system']:>9.1f}{r['user'] + r['system']:>8.1f}"
              f"{r['per_call']:>9.3f}%{r['per_call_user']:>10.3f}%", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
