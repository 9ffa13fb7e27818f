"""The lamps on the phones: the call service publishes state, the edge tells the watchers.

Message-waiting lamps (RFC 3842, Event: message-summary) and BLF keys (RFC 4235, Event: dialog)
are the Kamailio edge's presence module's business: phones SUBSCRIBE there and it sends the
NOTIFYs (initial, on change, on refresh). The call service knows the state (a mailbox's counts,
an extension ringing, the *33 toggle, a park slot) and PUBLISHes it (RFC 3903) to the edge.

    svc.presence.publish_mwi("1000", new=1, old=0)
    svc.presence.publish_dialog("1001", "early")        # "early" ringing, "confirmed" busy / lit,
                                                        # "terminated" idle / off

Each (event, resource) is one publication: its entity tag is kept and sent back in SIP-If-Match
so the edge replaces the state instead of adding another; a 412 (the edge restarted and forgot
it) publishes afresh. Publications are refreshed before they expire, so a restarted edge has
every state again within REFRESH_S. Publishing never blocks a call flow: the newest state per
resource is sent by one task, older unsent states are dropped.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from aiosipua import SipRequest
from aiosipua.headers import CaseInsensitiveDict

from .sip import new_branch, new_tag

log = logging.getLogger(__name__)

EXPIRES_S = 600
REFRESH_S = 300          # re-publish every state this often (and after a 412)
DIALOG_STATES = ("terminated", "early", "confirmed")
REMOVE_AFTER_S = 1.0     # an ended dialog publication is removed this long after the one replacing it


@dataclass
class _Publication:
    event: str
    resource: str
    content_type: str
    body: str
    etag: str = ""
    sent: str | None = None        # the body the edge has (None: not yet / must re-send)
    version: int = 0
    state: tuple = ()              # dialog: (state, direction, remote, remote_target) of the body
    ended_etag: str = ""           # dialog: the terminated presentity the next publication replaces
    ended_body: str = ""           # ... and the body it holds


class Presence:
    def __init__(self, svc):
        self.svc = svc
        self._pubs: dict[tuple[str, str], _Publication] = {}
        # the publications to send, in the order they changed: the sender looks at these only, not
        # at every extension's two (walking all 3,200 of a 1,600-extension box on each change was
        # 5 % of the call service at 300 setups/s, issue 16)
        self._pending: dict[tuple[str, str], _Publication] = {}
        self._dirty: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._refresh: asyncio.TimerHandle | None = None
        self._cseq = 0
        self.sent = 0              # PUBLISHes answered 2xx (status, tests)

    # --- what features call ------------------------------------------------------------------
    def publish_mwi(self, mailbox: str, new: int, old: int, urgent_new: int = 0, urgent_old: int = 0) -> None:
        """The message-waiting lamp of `mailbox` (its extension's phones that subscribed)."""
        body = (f"Messages-Waiting: {'yes' if new else 'no'}\r\n"
                f"Message-Account: sip:{mailbox}@{self.svc.edge[0]}\r\n"
                f"Voice-Message: {new}/{old} ({urgent_new}/{urgent_old})\r\n")
        self._set("message-summary", mailbox, "application/simple-message-summary", body)

    def publish_dialog(self, resource: str, state: str, *, direction: str = "recipient",
                       remote: str = "", remote_target: str = "") -> None:
        """The BLF lamp of `resource` (an extension, "*33", a park slot "701"): "terminated"
        (idle / off), "early" (ringing: flashing) or "confirmed" (busy / on). `remote` names the
        other party; `remote_target` (default: `remote`) is what a phone dials when its BLF key is
        pressed, e.g. the pickup code "sip:**1001@host" while ringing (as Asterisk's chan_sip)."""
        if state not in DIALOG_STATES:
            raise ValueError(f"dialog state {state!r}: use one of {', '.join(DIALOG_STATES)}")
        self._set("dialog", resource, "application/dialog-info+xml", (state, direction, remote, remote_target))

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._dirty = asyncio.Event()
        self._task = self.svc.loop.create_task(self._sender())
        self._refresh = self.svc.loop.call_later(REFRESH_S, self._refresh_all)

    def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
        if self._task is not None:
            self._task.cancel()

    def _set(self, event: str, resource: str, content_type: str, body) -> None:
        key = (event, resource)
        pub = self._pubs.get(key)
        if pub is None:
            pub = self._pubs[key] = _Publication(event, resource, content_type, "")
        if event == "dialog":
            if body == pub.state and pub.body:
                return                      # no change: nothing to tell the watchers
            pub.state = body
            pub.version += 1
            body = _dialog_info(resource, self.svc.edge[0], *body, version=pub.version)
        if body == pub.body:
            return
        pub.body = body
        self._pending[key] = pub
        if self._dirty is not None:
            self._dirty.set()

    def _refresh_all(self) -> None:
        for key, pub in self._pubs.items():
            pub.sent = None
            self._pending[key] = pub
        if self._dirty is not None:
            self._dirty.set()
        self._refresh = self.svc.loop.call_later(REFRESH_S, self._refresh_all)

    async def _sender(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            refused = []
            while self._pending:
                key = next(iter(self._pending))
                pub = self._pending.pop(key)
                if pub.sent != pub.body:
                    try:
                        await self._publish(pub)
                    except asyncio.CancelledError:
                        raise
                    except Exception:   # one bad publication must not stop the lamps
                        log.exception("presence: publishing %s of %s failed", pub.event, pub.resource)
                    if pub.sent != pub.body and key not in self._pending:
                        refused.append((key, pub))      # tried again at the next change (or refresh)
            self._pending.update(refused)

    async def _publish(self, pub: _Publication) -> None:
        body = pub.body
        for _ in range(2):
            resp = await self.svc.endpoint.request(self._request(pub, body)).final
            if resp.status_code == 412 and pub.etag:    # the edge forgot it (restart): publish afresh
                pub.etag = ""
                continue
            break
        if 200 <= resp.status_code < 300:
            pub.etag = resp.headers.get_first("sip-etag") or pub.etag
            if pub.ended_etag and pub.ended_etag != pub.etag:
                # the terminated presentity this publication replaces: removed shortly, not left in
                # the edge's shared memory for its whole Expires (one per call and extension: the
                # soak's Kamailio growth). The removal's NOTIFY repeats the new state; it comes
                # REMOVE_AFTER_S later, not on the heels of the new state's own NOTIFY. A refresh
                # of the same idle state carries the same dialog id, and the edge drops the old
                # presentity itself: removing it again would only log "No E_Tag match" there.
                ended, pub.ended_etag = pub.ended_etag, ""
                if body != pub.ended_body:
                    self.svc.loop.call_later(REMOVE_AFTER_S, self._spawn_remove, pub, ended)
            if pub.event == "dialog" and ("<state>terminated</state>" in body
                                          or (pub.state and pub.state[0] == "terminated")):
                # Kamailio's presence skips (with 200) any update of a presentity whose dialog is
                # terminated ("Trying to update an already terminated state"): the next state
                # is published afresh, without SIP-If-Match, and then this one is removed
                pub.ended_etag, pub.ended_body, pub.etag = pub.etag, body, ""
            pub.sent = body
            self.sent += 1
            # the change itself was logged where it happened (BLF, voicemail...): one line per event
            log.debug("presence: %s %s published", pub.event, pub.resource)
        else:
            log.warning("presence: %s %s refused by the edge: %d %s", pub.event, pub.resource,
                        resp.status_code, resp.reason_phrase)

    def _spawn_remove(self, pub: _Publication, etag: str) -> None:
        if self._task is not None and not self._task.done():      # not after stop()
            self.svc.loop.create_task(self._remove(pub, etag))

    async def _remove(self, pub: _Publication, etag: str) -> None:
        """End one publication (RFC 3903 section 4.5: Expires 0 with its entity tag, no body)."""
        resp = await self.svc.endpoint.request(self._request(pub, "", etag=etag, expires=0)).final
        if not 200 <= resp.status_code < 300:      # 412: expired or forgotten already
            log.debug("presence: removing %s %s (%s): %d", pub.event, pub.resource, etag, resp.status_code)

    def _request(self, pub: _Publication, body: str, *, etag: str | None = None,
                 expires: int = EXPIRES_S) -> SipRequest:
        svc = self.svc
        etag = pub.etag if etag is None else etag
        self._cseq += 1
        uri = f"sip:{pub.resource}@{svc.edge[0]}:{svc.edge[1]}"
        h = CaseInsensitiveDict()
        h.append("Via", svc.via())
        h.append("Max-Forwards", "70")
        h.append("From", f"<sip:pbx@{svc.edge[0]}>;tag={new_tag()}")
        h.append("To", f"<sip:{pub.resource}@{svc.edge[0]}>")
        h.append("Call-ID", f"{new_branch()[7:]}@pbx")
        h.append("CSeq", f"{self._cseq} PUBLISH")
        h.append("Event", pub.event)
        h.append("Expires", str(expires))
        if etag:
            h.append("SIP-If-Match", etag)
        if body:
            h.append("Content-Type", pub.content_type)
        return SipRequest(headers=h, body=body.encode(), method="PUBLISH", uri=uri)


def _dialog_info(resource: str, host: str, state: str, direction: str, remote: str, remote_target: str = "", *,
                 version: int) -> str:
    """An RFC 4235 dialog-info document for one resource in one state."""
    entity = f"sip:{resource}@{host}"
    remote_xml = (f"<remote><identity>{escape(remote)}</identity><target uri={quoteattr(remote_target or remote)}/>"
                  "</remote>"
                  if remote and state != "terminated" else "")
    # idle is sent as a terminated dialog, not an empty document: some phones (Yealink) keep
    # the lamp lit on an empty one
    # a fresh dialog id per state: the edge's dialoginfo aggregation ignores a terminated
    # dialog id coming back to life
    dialog = (f'<dialog id={quoteattr(f"pbx-{version}")} direction={quoteattr(direction)}>'
              f"<state>{state}</state>{remote_xml}</dialog>")
    return ('<?xml version="1.0"?>\n'
            f'<dialog-info xmlns="urn:ietf:params:xml:ns:dialog-info" version="{version}" state="full" '
            f"entity={quoteattr(entity)}>{dialog}</dialog-info>\n")
