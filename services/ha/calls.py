"""Answered calls surviving a takeover (issue 14, item 2): the active box's answered two-party
calls, as small records the standby can rebuild them from, and the rebuilding.

On the active box, `snapshot(svc)` lists every answered call of two bridged parties: per leg the
SIP dialog (Call-ID, our and their From/To with tags, their Contact, the route set, our CSeq)
and the media (our RTP port on the VIP, the phone's RTP address, codec, DTMF payload type).
The replicator sends the list whenever it changes (a call answered or ended, a CSeq moved): a
few hundred bytes per call.

On the box that takes over, `adopt(svc, calls)` rebuilds each call in its call service: both
channels with the same dialogs, an RTP leg bound to the same port on the VIP (the kernel lets
the standby bind it: ip_nonlocal_bind), the two legs bridged. The phones' RTP reaches the new
active box as soon as the VIP has moved, and an in-dialog request (a BYE) finds its dialog: 200,
not 481; the other party gets a BYE and the call record is written here.

Not carried over: calls not answered yet (ringing calls are lost), calls of three or more
parties (conference rooms, pages), a call hearing a prompt or music (no flow to resume), and an
RTP leg's sequence numbers and timestamps (the relayed packets keep the phones' own).

A box that stops being the active one (the primary coming back takes the VIP and the calls;
this box failed its health check; it is stopped) ends its copies silently with `release(svc)`.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger(__name__)


def _leg(ch) -> dict:
    return {"call_id": ch.call_id, "inbound": ch.inbound, "local": ch.local, "remote": ch.remote,
            "target": ch.target, "routes": list(ch.routes), "local_cseq": ch.local_cseq,
            "local_tag": ch.local_tag, "codec": ch.codec, "dtmf_pt": ch.dtmf_pt, "port": ch.rtp.port,
            "remote_rtp": list(ch.rtp.remote) if ch.rtp.remote else None, "sources": sorted(ch.sources),
            "number": ch.number, "name": ch.name, "answered_at": ch.answered_at, "trunk": ch.trunk,
            "cel": {k: v for k, v in ch.cel.items() if isinstance(v, (str, int, float, bool))}}


def snapshot(svc) -> list[dict]:
    """The answered two-party calls of this call service (the active box's)."""
    out = []
    for session in list(svc.calls.values()):
        caller = session.caller
        if session.state != "answered" or caller is None or caller.bridge is None:
            continue
        members = caller.bridge.members
        if len(members) != 2 or caller.bridge.conference:
            continue
        if not all(ch.state == "up" and ch.confirmed and ch.rtp is not None and ch.rtp.port for ch in members):
            continue
        out.append({"linkedid": session.linkedid, "src": session.src, "dst": session.dst,
                    "start": session.start, "answer": session.answer,
                    "legs": [_leg(ch) for ch in members]})
    return out


async def _open_leg_on(media, port: int):
    """An RTP leg on this exact port (the one the phone sends to), taken out of the free pool."""
    from services.callsvc.media import RtpLeg
    if port in media.pool.free:
        media.pool.free.remove(port)
    _, leg = await media.loop.create_datagram_endpoint(lambda: RtpLeg(media, port), local_addr=(media.address, port))
    media.legs += 1
    media.open_ports.add(port)
    return leg


async def adopt(svc, calls: list[dict]) -> int:
    """Rebuild the active box's answered calls here; how many were."""
    n = 0
    for call in calls:
        try:
            await _adopt_one(svc, call)
            n += 1
        except Exception:
            log.exception("ha: call %s (%s -> %s) not taken over", call.get("linkedid"), call.get("src"),
                          call.get("dst"))
    return n


async def _adopt_one(svc, call: dict) -> None:
    from services.callsvc.bridge import Bridge
    from services.callsvc.channel import Channel
    from services.callsvc.session import Session
    if call["linkedid"] in svc.calls or any(leg["call_id"] in svc.channels for leg in call["legs"]):
        return                                  # already here (a second takeover notice)
    session = Session(svc, call["linkedid"], call["src"], call["dst"])
    session.start = call["start"]
    channels = []
    for leg in call["legs"]:
        ch = Channel(svc, session, leg["call_id"], inbound=leg["inbound"])
        ch.local, ch.remote, ch.target = leg["local"], leg["remote"], leg["target"]
        ch.routes, ch.local_cseq, ch.local_tag = list(leg["routes"]), int(leg["local_cseq"]), leg["local_tag"]
        ch.number, ch.name, ch.trunk = leg["number"], leg["name"], leg.get("trunk", "")
        ch.sources = frozenset(leg["sources"])
        ch.state, ch.confirmed, ch.answered_at = "up", True, leg["answered_at"]
        ch.rtp = await _open_leg_on(svc.media, int(leg["port"]))
        remote = tuple(leg["remote_rtp"]) if leg["remote_rtp"] else None
        ch.rtp.set_remote(remote, ch.sources)
        ch._set_codec(leg["codec"], leg["dtmf_pt"])
        session.start_channel(ch, **leg["cel"])
        svc.register_channel(ch)
        channels.append(ch)
    session.caller = next((ch for ch in channels if ch.inbound), channels[0])
    svc.calls[session.linkedid] = session
    for ch in channels:
        ch.log("answer")
    bridge = Bridge(svc, "call")
    for ch in channels:
        bridge.add(ch)
    session.state, session.answer = "answered", call["answer"]
    # the call record tells when the call really started and was answered, not when it moved
    answered = {ch.n: ch.answered_at for ch in channels}
    session.events = [(session.start if what == "chan_start" else
                       (answered.get(n) or call["answer"]) if what in ("answer", "bridge_enter") else t,
                       what, n, data) for t, what, n, data in session.events]
    log.info("ha: call %s -> %s taken over (answered %.0f s ago; RTP ports %s)", call["src"], call["dst"],
             time.time() - (call["answer"] or time.time()), ", ".join(str(leg["port"]) for leg in call["legs"]))

    async def until_ended():
        await session.done()
        await svc.hangup_session(session, session.hangup_by)
    svc.spawn(until_ended())


def release(svc) -> int:
    """This box stops being the active one: its answered two-party calls now go on at the peer
    (it was told of them, and rebuilds them as it takes the VIP), so here they end silently: no
    BYE (it would end the call the peer carries: this box still may send from the VIP), no call
    record (the peer writes it when the call ends). The RTP ports are closed."""
    n = 0
    now = time.time()
    for session in list(svc.calls.values()):
        caller = session.caller
        bridge = caller.bridge if caller is not None else None
        if session.state != "answered" or bridge is None or bridge.conference or len(bridge.members) != 2:
            continue
        session.end, session.state = now, "ended"       # hangup_session: nothing more to do
        bridge.on_leave = None                          # no hang-up of the other party
        channels = list(session.channels)
        for ch in channels:
            ch.confirmed = False                        # no BYE owed
            ch.hangup_by = "takeover"
        for ch in channels:
            ch._end("moved to the peer")
        svc.calls.pop(session.linkedid, None)
        n += 1
        log.info("ha: call %s -> %s handed to the peer (ended here without BYE)", session.src, session.dst)
    return n


def signature(calls: list[dict]) -> str:
    import json
    return json.dumps(calls, sort_keys=True)
