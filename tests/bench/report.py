"""The bench's numbers as a printed table and as the generated part of docs/benchmarks.md."""

from __future__ import annotations

import re
from pathlib import Path

from .phases import (CALLEE, CARRIER, DID, CallsResult, Plan, SetupResult, TrunkResult, footprint,
                     per_call_memory)

DOC = Path(__file__).resolve().parents[2] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin (written by `make bench`) -->", "<!-- bench:end -->"

# Issue 2, item 7, issue 16 and the peers measured on the same kind of machine
# (shared/notes/sip-and-media.md).
CPU_TARGET, CPU_GOAL = 0.1, 0.05            # % of one core per bridged call
CPU_300_TARGET = 30.0                       # % of one core for 300 bridged calls
RATE_TARGET = 500                           # call setups/s with no failed call (issue 16)
PDD_P99_TARGET = 10.0                       # ms at Plan.pdd_rate (100) setups/s (issue 16)
IDLE_TARGET_MB, PER_CALL_TARGET_MB = 150, 0.3
ASTERISK = {"cpu": "0.136 %", "rate": "~450/s (350 with RTP)", "idle": "54 MB",
            "per_call": "~0.36 MB (54 -> ~125 MB at 200)"}
KAM_RTPENGINE = {"cpu": "0.063 %", "rate": "1,600/s", "idle": "51 MB (38 + 13)", "per_call": "-"}


def _f(value, fmt="{:.3f}", none="-"):
    return none if value is None else fmt.format(value)


def _verdict(value, target, goal=None, lower_is_better=True):
    if value is None:
        return "NOT MEASURED"
    ok = value <= target if lower_is_better else value >= target
    if not ok:
        return "SHORT"
    if goal is not None and (value <= goal if lower_is_better else value >= goal):
        return "goal met"
    return "met"


def _table(header: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return out + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _reference_step(calls: CallsResult, at: int):
    """The step the headline per-call CPU comes from: `at` calls if held, else the largest held."""
    held = [s for s in calls.steps if s.held]
    return next((s for s in held if s.calls == at), held[-1] if held else None)


def summary_rows(calls: CallsResult, setups: SetupResult, plan: Plan) -> list[list[str]]:
    rows = []
    ref = _reference_step(calls, plan.memory_at)
    per_call = ref.per_call if ref else None
    rows.append([f"CPU per bridged call, call service ({ref.calls if ref else '-'} calls)",
                 _f(per_call, "{:.3f} %"), f"<= {CPU_TARGET} % (goal {CPU_GOAL} %)",
                 ASTERISK["cpu"], KAM_RTPENGINE["cpu"], _verdict(per_call, CPU_TARGET, CPU_GOAL)])
    s300 = next((s for s in calls.steps if s.calls == 300), None)
    cpu300 = s300.cpu.get("call service") if s300 and s300.held else None
    rows.append(["300 bridged calls, call service CPU", _f(cpu300, "{:.1f} % of a core", "not held"),
                 f"< {CPU_300_TARGET:.0f} % of a core", "-", "-", _verdict(cpu300, CPU_300_TARGET)])
    kam = ref.cpu.get("kamailio") / ref.calls if ref else None
    rows.append([f"CPU per bridged call, Kamailio edge ({ref.calls if ref else '-'} calls)",
                 _f(kam, "{:.4f} %"), "(no media in the edge)", "-", "-", "info"])
    best = setups.best_clean_rate if setups.steps else None
    rows.append(["Call setups/s to the first failure (no RTP)", setups_reached(setups),
                 f">= {RATE_TARGET}/s", ASTERISK["rate"], KAM_RTPENGINE["rate"],
                 _verdict(best, RATE_TARGET, lower_is_better=False)])
    pdd = setups.pdd
    rows.append([f"Post-dial delay INVITE -> 180, p99 at {plan.pdd_rate}/s",
                 _f(pdd.p99, "{:.1f} ms") + f" (p50 {_f(pdd.p50, '{:.1f}')} ms)",
                 f"< {PDD_P99_TARGET:.0f} ms", "-", "-", _verdict(pdd.p99, PDD_P99_TARGET)])
    idle = footprint(calls.idle) if calls.idle else None
    rows.append(["Idle memory, call service (RSS) + Kamailio (PSS)", _f(idle, "{:.1f} MB"),
                 f"< {IDLE_TARGET_MB} MB", ASTERISK["idle"], KAM_RTPENGINE["idle"],
                 _verdict(idle, IDLE_TARGET_MB)])
    step, per = per_call_memory(calls, plan.memory_at)
    rows.append([f"Memory per active call at {plan.memory_at} calls", _f(per, "{:.3f} MB", "not measured"),
                 f"< {PER_CALL_TARGET_MB} MB", ASTERISK["per_call"], KAM_RTPENGINE["per_call"],
                 _verdict(per, PER_CALL_TARGET_MB)])
    return rows


def setups_reached(s: SetupResult) -> str:
    """The highest clean setup rate, and the step that failed first (or that none did)."""
    if not s.steps:
        return "-"
    top, failed = s.best_clean_rate, s.first_failure
    if failed is None:
        return f"{top}/s (highest step tried)"
    return (f"{top}/s" if top else "none clean") + f" ({failed}/s failed)"


CALLS_HEADER = ["calls", "up before/after", "call service", "per call", "Kamailio", "SIPp",
                "machine (of 200)", "RTP a->b", "RTP b->a", "PBX drops", "memory MB"]
RATES_HEADER = ["rate", "calls", "completed", "failed (caller)", "failed (callee)", "200 without 180",
                "retransmissions", "call service %", "Kamailio %", "call service ms CPU/call",
                "Kamailio ms CPU/call", "edge shm peak MB",
                "log errors / warnings", "clean"]
DELAY_HEADER = ["path", "calls", "p50", "p90", "p99", "max", "failed", "SIPp rtd p50 / p99 (4 ms ticks)"]


def calls_rows(calls: CallsResult) -> list[list[str]]:
    """Table 1 (and 5a): the idle row, then one row per concurrent-calls step."""
    rows = [["idle", "-", _f(calls.idle_cpu.get("call service"), "{:.2f}"), "-",
             _f(calls.idle_cpu.get("kamailio"), "{:.2f}"), "-", _f(calls.idle_cpu.get("machine"), "{:.0f}"),
             "-", "-", "-", _f(footprint(calls.idle) if calls.idle else None, "{:.1f}")]]
    for s in calls.steps:
        rows.append([str(s.calls), f"{s.up}/{s.up_after}", _f(s.cpu.get("call service"), "{:.2f}"),
                     _f(s.per_call if s.cpu else None, "{:.4f}"), _f(s.cpu.get("kamailio"), "{:.2f}"),
                     _f(s.cpu.get("sipp"), "{:.0f}"), _f(s.cpu.get("machine"), "{:.0f}"),
                     _f(s.delivered_ab, "{:.1%}"), _f(s.delivered_ba, "{:.1%}"), str(s.pbx_drops),
                     _f(footprint(s.memory) if s.memory else None, "{:.1f}")])
    return rows


def calls_footer(calls: CallsResult) -> str:
    return (f"Failed calls: {calls.callers_failed} at the callers, {calls.callee_failed} at the callee; "
            f"SIP retransmissions seen by the callers: {calls.retransmissions}.")


def rates_rows(setups: SetupResult) -> list[list[str]]:
    """Table 2 (and 5b): one row per setup rate."""
    return [[f"{s.rate}/s", str(s.calls), str(s.successful), str(s.failed), str(s.callee_failed),
             str(s.no_180), str(s.retransmissions), _f(s.cpu.get("call service"), "{:.0f}"),
             _f(s.cpu.get("kamailio"), "{:.0f}"), _f(s.cpu_ms("call service"), "{:.2f}"),
             _f(s.cpu_ms("kamailio"), "{:.2f}"),
             f"{_f(s.edge_shm.get('max_used'), '{:.0f}')} of {_f(s.edge_shm.get('total'), '{:.0f}')}",
             f"{s.log_problems} / {s.log_warnings}",
             "yes" if s.clean else "NO"]
            for s in setups.steps]


def delay_rows(setups: SetupResult) -> list[list[str]]:
    """Table 3 (and 5c): through the PBX, peer to peer, and the difference."""
    rows = []
    for name, d in (("through the PBX", setups.pdd), ("SIPp to SIPp, no PBX", setups.baseline)):
        rows.append([name, str(d.samples), _f(d.p50, "{:.2f}"), _f(d.p90, "{:.2f}"), _f(d.p99, "{:.2f}"),
                     _f(d.max, "{:.2f}"), str(d.failed),
                     f"{_f(d.rtd_p50, '{:.0f}')} / {_f(d.rtd_p99, '{:.0f}')}"])
    p, b = setups.pdd, setups.baseline
    if p.p50 is not None and b.p50 is not None:
        rows.append(["added by the PBX", "-", _f(p.p50 - b.p50, "{:.2f}"), _f(p.p90 - b.p90, "{:.2f}"),
                     _f(p.p99 - b.p99, "{:.2f}"), "-", "-", "-"])
    return rows


def _step_at(calls: CallsResult, n: int | None):
    return next((s for s in calls.steps if s.calls == n and s.held), None)


def trunk_rows(trunk: TrunkResult, calls: CallsResult, setups: SetupResult, plan: Plan) -> list[list[str]]:
    """Section 5's headline: each measure for trunk -> extension beside extension -> extension of the
    same run (at the same number of calls), with the targets of the first table."""
    ref = _reference_step(trunk.calls, max(plan.trunk_call_steps))
    n = ref.calls if ref else max(plan.trunk_call_steps)
    ext = _step_at(calls, n)
    per_call = ref.per_call if ref else None
    rows = [[f"CPU per bridged call, call service ({n} calls)", _f(per_call, "{:.3f} %"),
             _f(ext.per_call if ext else None, "{:.3f} %", "not measured"),
             f"<= {CPU_TARGET} % (goal {CPU_GOAL} %)", _verdict(per_call, CPU_TARGET, CPU_GOAL)]]
    kam = ref.cpu.get("kamailio") / ref.calls if ref else None
    rows.append([f"CPU per bridged call, Kamailio edge ({n} calls)", _f(kam, "{:.4f} %"),
                 _f(ext.cpu.get("kamailio") / ext.calls if ext else None, "{:.4f} %", "not measured"),
                 "(no media in the edge)", "info"])

    top = trunk.setups.best_clean_rate if trunk.setups.steps else None
    rows.append(["Call setups/s to the first failure (no RTP)", setups_reached(trunk.setups),
                 setups_reached(setups), f">= {RATE_TARGET}/s",
                 _verdict(top, RATE_TARGET, lower_is_better=False)])
    tp, ep = trunk.setups.pdd, setups.pdd
    rows.append([f"Post-dial delay INVITE -> 180, p99 at {plan.pdd_rate}/s",
                 _f(tp.p99, "{:.1f} ms") + f" (p50 {_f(tp.p50, '{:.1f}')} ms)",
                 _f(ep.p99, "{:.1f} ms") + f" (p50 {_f(ep.p50, '{:.1f}')} ms)",
                 f"< {PDD_P99_TARGET:.0f} ms", _verdict(tp.p99, PDD_P99_TARGET)])
    return rows


def render(calls: CallsResult, setups: SetupResult, plan: Plan, markdown: bool,
           trunk: TrunkResult | None = None) -> list[str]:
    out = []
    h = (lambda t: ["", f"### {t}", ""]) if markdown else (lambda t: ["", t])
    h4 = (lambda t: ["", f"#### {t}", ""]) if markdown else (lambda t: ["", t])
    out += h("Against the targets")
    out += _table(["measure", "measured", "target", "Asterisk 22", "Kamailio+rtpengine", "verdict"],
                  summary_rows(calls, setups, plan), markdown)

    out += h("1. Concurrent bridged G.711 calls, RTP both ways, 20 ms packets "
             f"(CPU in % of one core over {plan.window:.0f} s; call service on {calls.event_loop})")
    out += _table(CALLS_HEADER, calls_rows(calls), markdown)
    out.append("")
    out.append(calls_footer(calls))

    out += h(f"2. Call setups per second (no RTP, {plan.hold_ms} ms calls, "
             f"{plan.rate_seconds:.0f} s per step)")
    out += _table(RATES_HEADER, rates_rows(setups), markdown)

    out += h(f"3. Post-dial delay, INVITE with credentials -> 180 at the caller "
             f"({plan.pdd_rate} setups/s, ms)")
    out += _table(DELAY_HEADER, delay_rows(setups), markdown)

    out += h("4. Memory (MB; PSS shares each page among the processes mapping it, so Kamailio's "
             "shared pool counts once)")
    rows = [[f"{name}, idle", f"{m.rss_mb:.1f}", f"{m.pss_mb:.1f}"] for name, m in calls.idle.items()]
    step, per = per_call_memory(calls, plan.memory_at)
    if step is not None:
        rows += [[f"{name}, {step.calls} calls up", f"{m.rss_mb:.1f}", f"{m.pss_mb:.1f}"]
                 for name, m in step.memory.items()]
    out += _table(["processes", "RSS", "PSS"], rows, markdown)
    if calls.idle:
        out.append("")
        out.append(f"Held by the PBX (call service RSS + Kamailio PSS): {footprint(calls.idle):.1f} MB idle"
                   + (f", {footprint(step.memory):.1f} MB with {step.calls} calls up: {per:.3f} MB per call."
                      if step is not None else "."))

    if trunk is not None:
        out += h(f"5. Trunk to extension: a carrier on an IP trunk ({CARRIER}, not challenged) calls DID "
                 f"{DID}, routed to extension {CALLEE}")
        out += _table(["measure", "trunk -> extension", "extension -> extension (above)", "target",
                       "verdict"], trunk_rows(trunk, calls, setups, plan), markdown)
        out += h4(f"5a. Concurrent trunk calls, G.711 RTP both ways (CPU in % of one core over "
                  f"{plan.window:.0f} s; a = carrier, b = extension)")
        out += _table(CALLS_HEADER, calls_rows(trunk.calls), markdown)
        out.append("")
        out.append(calls_footer(trunk.calls))
        out += h4(f"5b. Trunk call setups per second (no RTP, {plan.hold_ms} ms calls, "
                  f"{plan.rate_seconds:.0f} s per step)")
        out += _table(RATES_HEADER, rates_rows(trunk.setups), markdown)
        out += h4(f"5c. Post-dial delay, carrier's INVITE -> 180 at the carrier "
                  f"({plan.pdd_rate} setups/s, ms)")
        out += _table(DELAY_HEADER, delay_rows(trunk.setups), markdown)

    trouble = calls.trouble + setups.trouble + (trunk.trouble if trunk is not None else [])
    if trouble:
        out += h("What went wrong under load (as seen)")
        for t in trouble:
            lines = t.lines()
            out.append(f"- {lines[0]}")
            if len(lines) > 1:
                detail = ["    " + x for x in lines[1:]]
                out += ["  ```", *detail, "  ```"] if markdown else detail
    return out


def write_doc(body: list[str], header: list[str]) -> Path:
    """Put the generated section between the markers of docs/benchmarks.md, keeping the rest."""
    generated = "\n".join([BEGIN, *header, *body, END])
    if DOC.exists() and BEGIN in DOC.read_text():
        text = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: generated, DOC.read_text(),
                      flags=re.S)
    else:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        text = "# Benchmarks\n\n" + generated + "\n"
    DOC.write_text(text)
    return DOC
