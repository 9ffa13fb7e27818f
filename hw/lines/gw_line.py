"""What FXS and FXO ports share in the gateway: the port's config and account, its media, SDP.

A line object lives on the gateway's asyncio loop: board events are posted to that loop, SIP
callbacks run on it, and board commands (which wait for the board's ACK) go to an executor so a
slow board never stalls signalling.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from firmware.config.lines import LinePortConfig
from hw.lines.gw_media import PortMedia
from hw.lines.gw_sip import Account, SipCall
from services.callsvc import sdp

if TYPE_CHECKING:
    from hw.lines.gateway import LineGateway

logger = logging.getLogger(__name__)

# A-law is the European G.711, mu-law the North American one: offer the country's first.
CODEC_ORDER = {"uk": ["PCMA", "PCMU"], "us": ["PCMU", "PCMA"]}
# RFC 4733 telephone-event in our offers (the payload type most phones use); in an answer, the
# offerer's type.
DTMF_PT = 101


class AnalogLine:
    kind = ""

    def __init__(self, gateway: "LineGateway", cfg: LinePortConfig, account: Account) -> None:
        self.gw = gateway
        self.cfg = cfg
        self.account = account
        self.state = "idle"
        self.call: SipCall | None = None
        self.media: PortMedia | None = None
        self.calls = 0
        self._offered_dtmf: int | None = None
        self._sdp_id = secrets.randbits(31)
        self._sdp_version = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cfg.number} as {self.account.user} {self.state}>"

    @property
    def number(self) -> int:
        return self.cfg.number

    @property
    def port(self):
        """The board's port for this line (board numbering starts at 0), or None."""
        port = self.gw.board.ports.get(self.cfg.number - 1)
        return port if port is not None and port.kind == self.kind else None

    def describe(self) -> dict:
        return {"port": self.cfg.number, "kind": self.kind, "extension": self.account.user,
                "destination": self.cfg.destination or None, "state": self.state,
                "registered": self.gw.ua.registered(self.account.user), "calls": self.calls}

    # --- media ---------------------------------------------------------------------------------
    def start_media(self) -> PortMedia | None:
        if self.media is None:
            port = self.port
            if port is None:
                logger.error("line %d: the board has no %s port %d; check the line port config",
                             self.number, self.kind.upper(), self.number)
                return None
            try:
                self.media = PortMedia(port, self.gw.sip_addr, self.gw.country).start()
            except Exception as exc:  # ALSA device missing or socket trouble: this port cannot talk
                logger.error("line %d: cannot start call audio: %s", self.number, exc)
                self.media = None
        return self.media

    def stop_media(self) -> None:
        media, self.media = self.media, None
        if media is not None:
            self.gw.loop.run_in_executor(None, media.stop)

    def offer(self, direction: str = "sendrecv") -> bytes:
        return self._sdp(CODEC_ORDER.get(self.gw.country, ["PCMU", "PCMA"]), DTMF_PT, direction)

    def answer_body(self, codec: str) -> bytes:
        return self._sdp([codec], self._offered_dtmf, "sendrecv")

    def _sdp(self, codecs: list[str], dtmf_pt: int | None, direction: str) -> bytes:
        # one session id per port, its version counting up with every SDP (RFC 3264 section 8)
        self._sdp_version += 1
        return sdp.build(self.media.address, self.media.local_port, codecs, dtmf_pt, direction,
                         self._sdp_id, self._sdp_version)

    def apply_sdp(self, body: bytes) -> str | None:
        """Point RTP at the far end's SDP (offer or answer); returns the codec, None if unusable."""
        try:
            remote = sdp.parse(body)
        except sdp.SdpError as exc:
            logger.warning("line %d: unusable SDP from the PBX: %s", self.number, exc)
            return None
        if not remote.codecs:
            logger.warning("line %d: the PBX offered no G.711 codec", self.number)
            return None
        codec = remote.codecs[0][0]
        self._offered_dtmf = remote.dtmf_pt
        self.media.set_remote(remote.address if remote.direction in ("sendrecv", "recvonly") else None, codec,
                              remote.dtmf_pt)
        return codec

    def board(self, func, *args) -> None:
        """Run a board command off the loop; a refusal is logged (the line stays as it is)."""
        def run():
            try:
                func(*args)
            except Exception as exc:
                logger.warning("line %d: board command %s failed: %s", self.number, func.__name__, exc)
        self.gw.loop.run_in_executor(None, run)

    def end_call(self) -> None:
        call, self.call = self.call, None
        if call is not None:
            asyncio.ensure_future(call.hangup())

    # --- events (overridden per kind) ------------------------------------------------------------
    def on_event(self, name: str, *args) -> None:
        handler = getattr(self, f"handle_{name}", None)
        if handler is not None:
            handler(*args)

    def incoming(self, call: SipCall) -> None:
        call.reject(403, f"Forbidden (line port {self.number} takes no calls)")

    def close(self) -> None:
        self.end_call()
        self.stop_media()
        self.state = "idle"
