"""Call records from channel events, in the manner of Asterisk's CEL -> CDR (issue 8, section 6).

A call (a session, tied by a linkedid: the first channel's SIP Call-ID) is a log of events about
its channels. `cdr_rows(events, channels)` turns that log into call records: one row per interval
in which two answered channels shared a bridge (a blind transfer gives A->B then A->C; an attended
one A->B, the consultation B->C, then A->C), or one row for a call that never connected. Pure: no
clock, no I/O; the call service calls it once, when the session's last channel has ended.

Event schema
============
`events` is a sequence of `(time, kind, channel, data)`:

- time: float epoch seconds. Events are taken in time order (ties keep their list order).
- kind: one of the kinds below; any other kind (feature, dial_out, pickup, forward ...) is
  ignored, so the call service may log more than the builder reads.
- channel: int, the channel's id (`Channel.n`); 0 for an event about no channel.
- data: dict, the keys listed for the kind. Channel ids in data are ints too.

chan_start      a channel was born: an INVITE came in, or the PBX sent one. Required first event of
                every channel. data:
                  number          str  the party: caller ID of an inbound channel, the number the PBX
                                       dialled for an outbound one (the extension, or the outside
                                       number as the user dialled it, e.g. "907700900123")
                  direction       "in" (called the PBX) | "out" (the PBX called it)
                  call_id         str  the SIP Call-ID of its dialog
                  kind            "extension" | "trunk" | "line" (an analog exchange line, FXO)
                  trunk           str  the trunk's name, or "line:N", when kind is trunk / line
                  external        str  outbound on a trunk / line: the number as sent to the provider
                                       (after strip / prepend, e.g. "07700900123")
                  forwarded_from  str  outbound: the extension whose forward made the PBX ring it
                  dialled         str  inbound: the number the caller dialled (Request-URI user)
                Only number and direction are needed; the others default to "" (kind to
                "extension"). Values given in the `channels` table win over these.
answer          the channel was answered: the PBX answered an inbound channel (200 OK sent), or
                the far end answered an outbound one (200 OK received). data: {}.
bridge_enter    the channel joined a bridge. data:
                  bridge  str  an id unique within the session (two bridges that are both called
                               "call" must have different ids)
                  peer    int  the member already in the bridge, 0 if none (optional: lets the
                               builder pair a channel whose own bridge_enter is logged elsewhere)
bridge_exit     the channel left the bridge. data: {bridge}. A channel that hangs up while bridged
                logs bridge_exit and then hangup (a hangup alone also takes it out).
hangup          the channel ended. data:
                  cause        str  e.g. "bye", "cancel", "486 Busy Here", "completed elsewhere",
                                    "rtp timeout", "transferred"
                  by           "remote" (the far end hung up / cancelled / answered an error) |
                               "pbx" (the PBX ended it)
                  status       int  the final SIP status of a dialog that was never answered: what
                                    the far end answered an outbound INVITE (486, 408, 404 ...; 487
                                    when the PBX cancelled it), or what the PBX answered an inbound
                                    one (486, 480, 404 ...; 487 when the caller cancelled); 0 or
                                    absent otherwise
                  disposition  str  optional, on the caller's channel of a call that never
                                    connected: the Disposition the call service decided ("BUSY",
                                    "NO ANSWER", "FAILED", "CANCELLED"); without it the builder
                                    derives one from the statuses (see `_unconnected`)
blind_transfer  logged on the transferrer's channel when it blind-transfers its partner.
                data: {transferee: int channel id, number: str the target dialled}
attended_transfer_start
                logged on the transferrer's channel when it starts a consultation (`*2`): its
                partner waits. data: {transferee: int, number: str}
attended_transfer
                logged on the transferrer's channel when the transferee and the target are to be
                joined (REFER with Replaces, or the transferrer hanging up after `*2`).
                data: {transferee: int, target: int}
transfer_failed_back
                logged on the transferrer's channel when the transferee goes back to it.
                data: {transferee: int}
transfer_connect
                accepted and not needed (the transferee's next bridge says the same).
dtmf            data: {digit: str}; kept in the row's legs.
recording       a recording of the channel started. data: {path: str}; kept in the row's legs.

Cross-session rule (as Asterisk moves a linkedid): when a channel of another session is bridged
with a channel of this one (a pickup, an attended transfer by REFER whose target came from the
transferrer's second call), its chan_start (or a `channels` entry) and its bridge events must be
in this session's log too; otherwise `peer` in the bridge_enter names it and the `channels` table
describes it.

`channels` maps a channel id to a `ChannelInfo` (or a dict of its fields); it may be empty when
every chan_start carries the fields. A channel named by an event but described nowhere gets
number "unknown": a call record is never refused at hang-up time.

Rows
====
- A row per talk interval: both channels answered and alone together in one bridge. The interval
  starts when the last of (both in the bridge, both answered) happens and ends at the first exit
  or hangup. Intervals of the same two channels in the same bridge merge into one row (a transfer
  that failed back, the pause while `##` digits are collected, music while held).
- src is the transferee and dst the target on a row a transfer made; src is the transferrer on an
  attended consultation; otherwise src is the channel that started first.
- start: src's own start on the first row src is in (the caller's setup, routing and ringing
  count towards its first row's duration); when src was in an earlier row, dst's start. answer: the interval's start;
  end: its end. So billsec is the talk time of the two, and duration >= billsec.
- Channels that rang and never talked (the losers of a ring-all, a busy forward target, a failed
  transfer target) are listed as "attempt" legs of the row that was going on when they started.
- No interval at all: one row. If the PBX answered the caller itself (a feature code, a prompt)
  it is ANSWERED with dst the number dialled; else dst is the last party rung (or the number
  dialled when none was rung) and the disposition says why it did not connect.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

from firmware.cdr import PARTY_KINDS, TRANSFER_KINDS, CallRecord, Disposition, cdr_text

logger = logging.getLogger(__name__)

BUSY_STATUSES = (486, 600, 603)
NO_ANSWER_STATUSES = (408, 487)


@dataclass
class ChannelInfo:
    number: str
    direction: str = "out"           # "in" | "out"
    call_id: str = ""
    kind: str = "extension"          # "extension" | "trunk" | "line"
    trunk: str = ""
    external: str = ""
    forwarded_from: str = ""
    dialled: str = ""

    @classmethod
    def of(cls, *sources: Mapping | "ChannelInfo" | None) -> "ChannelInfo":
        """Fields from the first source that gives them (a dict or a ChannelInfo), later ones fill in."""
        merged: dict = {}
        names = [f.name for f in fields(cls)]
        for src in sources:
            if src is None:
                continue
            if isinstance(src, ChannelInfo):
                src = {n: getattr(src, n) for n in names}
            for name in names:
                value = src.get(name)
                if name not in merged and value not in (None, ""):
                    merged[name] = value
        merged.setdefault("number", "unknown")
        info = cls(**{n: str(v) for n, v in merged.items()})
        if info.kind not in PARTY_KINDS:
            info.kind = "extension"
        return info


@dataclass
class _Interval:
    bridge: str
    a: int                           # the two channels, a started first
    b: int
    start: float
    end: float
    ender: int = 0                   # the channel whose exit / hangup ended it
    end_index: int = -1              # index of that event in the sorted log
    src: int = 0
    dst: int = 0
    transfer: str = ""
    transferred_by: int = 0


def cdr_rows(events: Iterable, channels: Mapping | None = None, linkedid: str | None = None) -> list[CallRecord]:
    """The call records of one session's event log (see the module docstring for the schema)."""
    log = [(float(t), str(kind), int(ch or 0), dict(data or {}))
           for t, kind, ch, data in events]
    log = [e for _, e in sorted(enumerate(log), key=lambda ie: (ie[1][0], ie[0]))]
    channels = channels or {}
    if not log:
        raise ValueError("no events: a call record needs at least the caller's chan_start")

    order: list[int] = []             # channel ids, first appearance first
    started: dict[int, float] = {}
    start_data: dict[int, dict] = {}
    answered: dict[int, float] = {}
    gone: dict[int, tuple[float, dict]] = {}
    members: dict[str, list[int]] = {}
    talking: dict[str, tuple[frozenset, float]] = {}
    intervals: list[_Interval] = []
    pending: dict[int, tuple[str, int]] = {}     # transferee -> (blind | attended, transferrer)
    consulting: dict[int, int] = {}              # transferrer -> transferee waiting on music
    dtmf: dict[int, list[tuple[float, str]]] = {}
    recordings: dict[int, list[tuple[float, str]]] = {}

    def seen(ch: int, t: float) -> None:
        if ch and ch not in started:
            order.append(ch)
            started[ch] = t

    def leave_all(ch: int) -> None:
        for m in members.values():
            if ch in m:
                m.remove(ch)

    def open_interval(pair: frozenset, bridge: str, t: float) -> None:
        a, b = sorted(pair, key=order.index)
        iv = _Interval(bridge, a, b, t, t, src=a, dst=b)
        for x, y in ((a, b), (b, a)):
            if x in pending:
                kind, by = pending.pop(x)
                if y != by:
                    iv.src, iv.dst, iv.transfer, iv.transferred_by = x, y, kind, by
                    consulting.pop(by, None)
                    break
            if x in consulting and y != consulting[x]:
                iv.src, iv.dst, iv.transfer = x, y, "consultation"
                break
        intervals.append(iv)

    def update(t: float, index: int, actor: int) -> None:
        for bridge, m in members.items():
            live = [c for c in m if c not in gone]
            pair = frozenset(live) if len(live) == 2 and all(c in answered for c in live) else None
            current = talking.get(bridge)
            if current is not None and current[0] != pair:
                iv = next(i for i in reversed(intervals) if i.bridge == bridge and frozenset((i.a, i.b)) == current[0])
                iv.end, iv.ender, iv.end_index = t, actor, index
                del talking[bridge]
            if pair is not None and bridge not in talking:
                talking[bridge] = (pair, t)
                open_interval(pair, bridge, t)

    for index, (t, kind, ch, data) in enumerate(log):
        seen(ch, t)
        if kind == "chan_start":
            start_data[ch] = data
            started[ch] = min(started[ch], t)
        elif kind == "answer":
            answered.setdefault(ch, t)
        elif kind == "bridge_enter":
            bridge = str(data.get("bridge", ""))
            leave_all(ch)
            m = members.setdefault(bridge, [])
            peer = int(data.get("peer") or 0)
            if peer and peer not in m and peer not in gone:
                seen(peer, t)
                leave_all(peer)
                m.append(peer)
            m.append(ch)
        elif kind == "bridge_exit":
            m = members.get(str(data.get("bridge", "")), [])
            if ch in m:
                m.remove(ch)
            else:
                leave_all(ch)
        elif kind == "hangup":
            gone.setdefault(ch, (t, data))
            leave_all(ch)
        elif kind == "blind_transfer":
            pending[int(data.get("transferee") or 0)] = ("blind", ch)
        elif kind == "attended_transfer_start":
            consulting[ch] = int(data.get("transferee") or 0)
            pending[int(data.get("transferee") or 0)] = ("attended", ch)
        elif kind == "attended_transfer":
            consulting.pop(ch, None)
            pending[int(data.get("transferee") or 0)] = ("attended", ch)
        elif kind == "transfer_failed_back":
            consulting.pop(ch, None)
            pending.pop(int(data.get("transferee") or 0), None)
        elif kind == "dtmf":
            dtmf.setdefault(ch, []).append((t, str(data.get("digit", ""))))
        elif kind == "recording":
            recordings.setdefault(ch, []).append((t, str(data.get("path", ""))))
        update(t, index, ch)
    last_time = log[-1][0]
    for bridge, (pair, _) in list(talking.items()):   # a log cut short: end at its last event
        iv = next(i for i in reversed(intervals) if i.bridge == bridge and frozenset((i.a, i.b)) == pair)
        iv.end = last_time

    info = {ch: ChannelInfo.of(channels.get(ch), start_data.get(ch)) for ch in order}
    linkedid = linkedid or (info[order[0]].call_id if order else "") or "unknown"
    intervals = _merge(intervals)
    if not intervals:
        return [_unconnected(log, order, info, started, answered, gone, linkedid, dtmf, recordings)]

    rows: list[CallRecord] = []
    had_row: set[int] = set()
    talked = {c for iv in intervals for c in (iv.a, iv.b)}
    # a channel that rang and never talked goes with the row going on when it started (else the first)
    attempts_of: dict[int, list[int]] = {}
    for c in order:
        if c not in talked:
            at = max((n for n, iv in enumerate(intervals) if iv.start <= started[c]), default=0)
            attempts_of.setdefault(at, []).append(c)
    for n, iv in enumerate(intervals):
        src, dst = info[iv.src], info[iv.dst]
        start = min(started[iv.src] if iv.src not in had_row else started[iv.dst], iv.start)
        had_row.update((iv.src, iv.dst))
        by, cause = _who_ended(iv, log, gone, _transferrers(log, iv))
        legs = [_leg("a", src, iv.src, dtmf, recordings, iv.start, iv.end, hangup_by=by, **_media(gone, iv.src)),
                _leg("b", dst, iv.dst, dtmf, recordings, iv.start, iv.end, final=200, **_media(gone, iv.dst))]
        legs += [_attempt(info[c], c, gone) for c in attempts_of.get(n, ())]
        rows.append(_record(linkedid, n + 1, src, dst, start, iv.start, iv.end, Disposition.ANSWERED,
                            legs, cause, iv.transfer, info[iv.transferred_by].number if iv.transferred_by else ""))
    return rows


def _merge(intervals: list[_Interval]) -> list[_Interval]:
    """One interval per pair and bridge: later ones of the same two in the same bridge extend it."""
    out: list[_Interval] = []
    for iv in intervals:
        same = next((o for o in out if o.bridge == iv.bridge and {o.a, o.b} == {iv.a, iv.b}), None)
        if same is None:
            out.append(iv)
        else:
            same.end, same.ender, same.end_index = iv.end, iv.ender, iv.end_index
    return sorted(out, key=lambda i: i.start)


def _transferrers(log, iv: _Interval) -> set[int]:
    """Channels that were transferring someone when iv ended (their leaving is the transfer)."""
    out = set()
    for t, kind, ch, data in log[:iv.end_index + 1] if iv.end_index >= 0 else ():
        if kind in ("blind_transfer", "attended_transfer_start", "attended_transfer"):
            out.add(ch)
        elif kind == "transfer_failed_back":
            out.discard(ch)
    return out


def _who_ended(iv: _Interval, log, gone, pending_transferrers: set[int]) -> tuple[str, str]:
    """(hangup_by for leg a, the row's cause): caller / callee hung up, transfer, or the PBX."""
    ender = iv.ender
    if not ender or iv.end_index < 0:
        return "", ""
    if ender in pending_transferrers and log[iv.end_index][1] == "bridge_exit":
        return "transfer", "transferred"
    hangup = gone.get(ender)
    if hangup is None or not _hangs_up_next(log, iv.end_index, ender):
        return "", ""
    data = hangup[1]
    if data.get("by") == "remote":
        who = "caller" if ender == iv.src else "callee"
        return who, f"hangup by {who}"
    return "pbx", str(data.get("cause") or "hangup by pbx")


def _hangs_up_next(log, index: int, ch: int) -> bool:
    """The exit at index is the channel going away (its next event is its hangup)."""
    if log[index][1] == "hangup":
        return True
    for _, kind, c, _ in log[index + 1:]:
        if c == ch:
            return kind == "hangup"
    return False


def _leg(name: str, info: ChannelInfo, ch: int, dtmf, recordings, t0: float, t1: float, **extra) -> dict:
    leg = {"leg": name, "peer": info.number, "call_id": info.call_id, **extra}
    digits = "".join(d for t, d in dtmf.get(ch, ()) if t0 <= t <= t1)
    if digits:
        leg["dtmf"] = digits
    paths = [p for t, p in recordings.get(ch, ()) if t <= t1]
    if paths:
        leg["recording"] = paths[-1]
    return leg


def _media(gone, ch: int) -> dict:
    """The channel's RTP packet counts from its hangup (rtp_in: all its phone sent; rtp_kernel: of
    those, the ones the kernel forwarded), when the call service recorded them."""
    data = gone.get(ch, (0, {}))[1]
    return {k: int(data[k]) for k in ("rtp_in", "rtp_kernel") if isinstance(data.get(k), int)}


def _attempt(info: ChannelInfo, ch: int, gone) -> dict:
    data = gone.get(ch, (0, {}))[1]
    leg = {"leg": "attempt", "peer": info.number, "call_id": info.call_id,
           "final": int(data.get("status") or 0), "cause": str(data.get("cause") or "")}
    if info.forwarded_from:
        leg["forwarded_from"] = info.forwarded_from
    if info.trunk:
        leg["trunk"] = info.trunk
    return leg


def _unconnected(log, order, info, started, answered, gone, linkedid, dtmf, recordings) -> CallRecord:
    """The one row of a call nobody talked in: answered by the PBX itself, or why it failed.

    Disposition without the caller's own `disposition`: the caller hung up or cancelled
    (by remote) -> CANCELLED; else any status 486/600/603 (the caller's or an attempt's) -> BUSY;
    else any 408/487 (a ring time ran out) -> NO ANSWER; else FAILED.
    """
    caller = order[0]
    me = info[caller]
    others = [c for c in order[1:]]
    end_t, end_data = gone.get(caller, (log[-1][0], {}))
    start = started[caller]
    legs = [_leg("a", me, caller, dtmf, recordings, start, end_t,
                 hangup_by={"remote": "caller", "pbx": "pbx"}.get(end_data.get("by"), ""))]
    legs += [_attempt(info[c], c, gone) for c in others]
    if caller in answered:
        dst = ChannelInfo.of({"number": me.dialled or "(none)"})
        return _record(linkedid, 1, me, dst, start, answered[caller], end_t, Disposition.ANSWERED, legs,
                       str(end_data.get("cause") or ""))
    last = others[-1] if others else None
    dst = info[last] if last is not None else ChannelInfo.of({"number": me.dialled or "(none)"})
    statuses = [int(end_data.get("status") or 0)] + [int(gone.get(c, (0, {}))[1].get("status") or 0) for c in others]
    try:
        disposition = Disposition(end_data["disposition"])
        cause = str(end_data.get("cause") or "")
    except (KeyError, ValueError):
        if end_data.get("by") == "remote":
            disposition = Disposition.CANCELLED
        elif any(s in BUSY_STATUSES for s in statuses):
            disposition = Disposition.BUSY
        elif any(s in NO_ANSWER_STATUSES for s in statuses):
            disposition = Disposition.NO_ANSWER
        else:
            disposition = Disposition.FAILED
        cause = ""
    if not cause:
        last_data = gone.get(last, (0, {}))[1] if last is not None else {}
        cause = str((last_data.get("cause") if int(last_data.get("status") or 0) >= 300 else "")
                    or end_data.get("cause") or "")
    if disposition is Disposition.ANSWERED:   # an explicit ANSWERED without an answer: not possible here
        disposition = Disposition.FAILED
    return _record(linkedid, 1, me, dst, start, None, max(end_t, start), disposition, legs, cause)


def _record(linkedid: str, seq: int, src: ChannelInfo, dst: ChannelInfo, start: float, answer: float | None,
            end: float, disposition: Disposition, legs: list[dict], cause: str, transfer: str = "",
            transferred_by: str = "") -> CallRecord:
    def outside(i: ChannelInfo) -> bool:
        return i.kind in ("trunk", "line")
    return CallRecord(
        call_id=cdr_text(src.call_id or linkedid), src=cdr_text(src.number, "anonymous"),
        dst=cdr_text(dst.number, "(none)"), start=start, answer=answer, end=max(end, answer or start),
        disposition=disposition, legs=legs, cause=cdr_text(cause, ""),
        linkedid=cdr_text(linkedid), seq=seq, src_kind=src.kind, dst_kind=dst.kind,
        src_trunk=cdr_text(src.trunk if outside(src) else "", ""),
        dst_trunk=cdr_text(dst.trunk if outside(dst) else "", ""),
        external_number=cdr_text(dst.external if outside(dst) else "", ""),
        forwarded_from=cdr_text(dst.forwarded_from, ""),
        transfer=transfer if transfer in TRANSFER_KINDS else "", transferred_by=cdr_text(transferred_by, ""))
