"""A seeded mutation fuzz of SIP and SDP against the running PBX, then the invariants.

Three phases, each from a real attacker position: (a) anything, unauthenticated, at the edge from a
LAN host; (b) as a registered extension with digest credentials, so mutated INVITE SDP (and
in-dialog requests, and mutated SDP answers of a registered callee) reach the call service and
its media engine; (c) straight at the call service's own UDP port. Afterwards every process is
alive, memory has not run away, pbx.log holds no Python traceback, no call or RTP leg is left
over, and two real phones still talk.

PBX_FUZZ_COUNT (total messages, default 10,000), PBX_FUZZ_SEED (reproduce a run; the seed is
printed) and PBX_FUZZ_RATE (messages/s) tune it; `make security` runs a longer version. The LAN
host is a trusted address of the PBX so that flood protection does not simply ban the fuzzer
(tests/security/test_sipvicious.py shows the bans on an untrusted one).
"""

import os
import random
import socket
import time

import pytest

from tests.lanhost import LanHost
from tests.pbxproc import PbxProcess
from tests.security import fuzz
from tests.security.helpers import alive, memory, real_call, tracebacks, wait_idle

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("PBX_FUZZ_SEED") or random.SystemRandom().randrange(1 << 31))
TOTAL = int(os.environ.get("PBX_FUZZ_COUNT") or 10_000)
RATE = float(os.environ.get("PBX_FUZZ_RATE") or 150)
SHARE = {"edge": 0.4, "auth": 0.3, "direct": 0.3}
EXTENSIONS = [str(n) for n in range(1000, 1010)]
# the edge allows an account 20 INVITE + REGISTER per 10 s: phase b calls from these in turn
CALLERS = [str(n) for n in range(1100, 1160)]
CALLER, CALLEE, UNREGISTERED = "1000", "1001", "1002"
REAL_A, REAL_B = "1008", "1009"


def count(phase):
    return max(1, int(TOTAL * SHARE[phase]))


@pytest.fixture(scope="module")
def box(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    print(f"\nfuzz seed {SEED} (PBX_FUZZ_SEED={SEED} reproduces the messages), total {TOTAL}, rate {RATE}/s")
    with LanHost() as lan:
        pbx = PbxProcess(tmp / "pbx", extensions=EXTENSIONS + CALLERS, trusted=(lan.host_addr,), rtp_size=1000,
                         addr=lan.box_addr, settings={"busy_tone_seconds": 1, "no_answer_timeout": 20})
        pbx.start()
        try:
            time.sleep(0.5)
            state = {"lan": lan, "pbx": pbx, "tmp": tmp, "mem0": memory(pbx), "results": {},
                     "log": open(tmp / "fuzz-messages.log", "w"), "t0": time.monotonic()}
            state["edge_processes"] = state["mem0"]["edge_processes"]
            yield state
            state["log"].close()
        finally:
            pbx.stop()


def lan_agent(box, *, role, user, secret="", seed_offset=0, rtp=False, target=None):
    lan, pbx = box["lan"], box["pbx"]
    sock = lan.socket()
    sock.bind((lan.host_addr, 0))
    rtp_sock = None
    if rtp:
        rtp_sock = lan.socket()
        rtp_sock.bind((lan.host_addr, 0))
    ctx = fuzz.Ctx(target=target or (pbx.addr, pbx.sip_port), local=sock.getsockname(), user=user,
                   media_host=lan.host_addr)
    agent = fuzz.Agent(sock, ctx, secret=secret, mutator=fuzz.Mutator(SEED + 100 + seed_offset), role=role,
                       rng_seed=SEED + 200 + seed_offset, rtp_sock=rtp_sock)
    agent.log = box["log"]
    return agent.start()


def finish(box, name, agents, began, extra=None):
    """Stop the agents, wait a moment for answers, record and print the phase's numbers."""
    time.sleep(1.0)
    for a in agents:
        a.stop()
    stats = [a.stats() for a in agents]
    result = {"seconds": round(time.monotonic() - began, 1),
              "fuzz_sent": sum(s["fuzz_sent"] for s in stats),
              "helper_sent": sum(s["helper_sent"] for s in stats),
              "answered_call_ids": stats[0]["answered_call_ids"], "call_ids": stats[0]["call_ids"],
              "answers": sum(s["answers"] for s in stats), "codes": stats[0]["codes"],
              "established_calls": stats[0]["established"], "agent_errors": sum((s["errors"] for s in stats), []),
              **(extra or {})}
    box["results"][name] = result
    for a in agents:
        box.setdefault("cancelled", set()).update(a.cancelled_ids)
    print(f"\nphase {name}: {result}")
    return result


def check_survived(box, phase):
    pbx = box["pbx"]
    dead = alive(pbx, box["edge_processes"])
    found = tracebacks(pbx)
    assert not dead, f"seed {SEED}, after phase {phase}: {dead}\n{pbx.log_tail(40)}"
    assert not found, (f"seed {SEED}, after phase {phase}: {len(found)} Python tracebacks in {pbx.log_path}, "
                       f"messages in {box['tmp'] / 'fuzz-messages.log'}; first ones:\n" + "\n\n".join(found[:3]))


def test_a_fuzz_at_the_edge_unauthenticated_from_a_lan_host(box):
    pbx = box["pbx"]
    agent = lan_agent(box, role="scanner", user="1000", seed_offset=1)
    mut = fuzz.Mutator(SEED)
    began = time.monotonic()
    fuzz.run_edge_unauthenticated(agent, mut, count("edge"), RATE, EXTENSIONS + ["1999", "abc", ""])
    result = finish(box, "a_edge", [agent], began)
    assert result["answers"] > 0, "the edge answered nothing at all: was the fuzzer banned?"
    check_survived(box, "a")


def test_b_fuzz_authenticated_mutated_sdp_reaches_the_call_service(box):
    pbx = box["pbx"]
    callee = lan_agent(box, role="callee", user=CALLEE, secret=pbx.secrets[CALLEE], seed_offset=2)
    caller = lan_agent(box, role="caller", user=CALLER, secret=pbx.secrets[CALLER], seed_offset=3, rtp=True)
    assert callee.register() == 200 and caller.register() == 200
    rx0 = pbx.status()["sip"]["rx"]
    mut = fuzz.Mutator(SEED + 1)
    began = time.monotonic()
    fuzz.run_authenticated(caller, mut, count("auth"), RATE, CALLEE, UNREGISTERED, EXTENSIONS + ["1999"],
                           accounts=[(u, pbx.secrets[u]) for u in CALLERS])
    result = finish(box, "b_authenticated", [caller, callee], began,
                    {"cs_received": pbx.status()["sip"]["rx"] - rx0})
    assert result["cs_received"] > count("auth") // 4, "few fuzz requests got through the edge to the call service"
    assert result["established_calls"] > 0, "no fuzz call was ever answered: the SDP answers never got checked"
    check_survived(box, "b")


def test_c_fuzz_the_call_service_port_directly(box):
    pbx, lan = box["pbx"], box["lan"]
    cs_port = pbx.status()["cs_port"]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    rtp_sock = lan.socket()
    rtp_sock.bind((lan.host_addr, 0))
    ctx = fuzz.Ctx(target=("127.0.0.1", cs_port), local=sock.getsockname(), user=CALLER, media_host=lan.host_addr)
    caller = fuzz.Agent(sock, ctx, mutator=fuzz.Mutator(SEED + 104), role="caller", rng_seed=SEED + 204,
                        rtp_sock=rtp_sock)
    caller.log = box["log"]
    caller.start()
    callee = lan_agent(box, role="callee", user=CALLEE, secret=pbx.secrets[CALLEE], seed_offset=5)
    assert callee.register() == 200
    mut = fuzz.Mutator(SEED + 2)
    began = time.monotonic()
    fuzz.run_call_service_direct(caller, mut, count("direct"), RATE, CALLEE, EXTENSIONS + ["1999"])
    finish(box, "c_direct", [caller, callee], began, {"cs_port": cs_port})
    check_survived(box, "c")


def test_d_after_the_fuzz_nothing_is_dead_stuck_or_leaked_and_phones_still_talk(box, tmp_path):
    pbx = box["pbx"]
    status, drained_in = wait_idle(pbx, 35)
    mem1, mem0 = memory(pbx), box["mem0"]
    results = box["results"]
    stuck = status["calls"]
    summary = {"seed": SEED, "fuzz_sent": sum(r["fuzz_sent"] for r in results.values()),
               "helper_sent": sum(r["helper_sent"] for r in results.values()),
               "answers": sum(r["answers"] for r in results.values()),
               "fuzz_seconds": round(sum(r["seconds"] for r in results.values()), 1),
               "stuck_calls": len(stuck), "stuck_calls_the_fuzz_had_cancelled":
                   sum(c["call_id"] in box.get("cancelled", ()) for c in stuck),
               "rtp_legs": status["rtp_legs"], "waited_for_idle_s": round(drained_in, 1),
               "memory_before": mem0, "memory_after": mem1}
    problems = []
    if stuck or status["rtp_legs"]:
        problems.append(f"{len(stuck)} calls ({summary['stuck_calls_the_fuzz_had_cancelled']} of them cancelled by "
                        f"the fuzzer) and {status['rtp_legs']} RTP legs still up {drained_in:.0f} s after the fuzz: "
                        f"{stuck[:3]}")
    dead = alive(pbx, box["edge_processes"])
    if dead:
        problems.append(f"dead: {dead}")
    if mem1["pbx_rss_kb"] >= 2 * mem0["pbx_rss_kb"]:
        problems.append(f"call service RSS {mem0['pbx_rss_kb']} -> {mem1['pbx_rss_kb']} kB")
    if mem1["edge_shm_used_kb"] >= 2 * mem0["edge_shm_used_kb"] + 4096:
        problems.append(f"edge shared memory in use {mem0['edge_shm_used_kb']} -> {mem1['edge_shm_used_kb']} kB")
    if not dead:
        heard_callee, heard_caller = real_call(pbx, tmp_path, REAL_A, REAL_B)
        summary["real_call_audio_both_ways"] = heard_callee and heard_caller
        if not (heard_callee and heard_caller):
            problems.append(f"real call after the fuzz: caller heard callee {heard_callee}, "
                            f"callee heard caller {heard_caller}")
    found = tracebacks(pbx)
    summary["tracebacks"] = len(found)
    if found:
        problems.append(f"{len(found)} Python tracebacks in {pbx.log_path}; first:\n" + "\n\n".join(found[:3]))
    print(f"\nfuzz summary: {summary}")
    assert not problems, f"seed {SEED}: " + "\n".join(problems)
