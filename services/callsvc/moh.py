"""Music on hold in the call service: one stream per class, shared by every listener.

A class's stream (MohStream) makes one 20 ms frame per media tick, whoever asks first in that tick;
every listener's leg sends that same frame, encoded once per codec (media.SharedFrame). The cost
of a held caller is one RTP header and one sendto, not a decoder, a file position and an encoder
each: 100 listeners of one class cost about what one does plus the sends (`make bench`). A stream
nobody listens to is not advanced; it goes on where it stopped when someone is held again.

The API for every feature that makes a caller wait (hold, attended transfer, parking, queues):

    svc.moh.listen(channel, "sales")      # or class_name=None: the class for this channel
    svc.moh.listen(channel, holder=other) # the class of the holder's extension / the call's route
    svc.moh.unlisten(channel)             # stop the music (no-op when it is not playing)
    svc.moh.listening(channel)

`moh.service(svc)` returns the same object for a service that has no `moh` attribute yet.
Which class a channel hears is firmware.features.moh.class_for (route, then extension, then
"default"); the files are services/media/moh.py's.
"""
from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING

from firmware.dialplan.inbound import match_inbound_route
from firmware.dsp.tones import hold_music
from firmware.features import moh as model
from services.media import moh as files

from . import hooks
from .media import FRAME, Player, SharedFrame

if TYPE_CHECKING:
    from .channel import Channel

log = logging.getLogger(__name__)

SILENCE = bytes(2 * FRAME)


class MohStream:
    """One class's audio as a stream of shared 20 ms frames."""

    def __init__(self, engine, cls: model.MohClass, data_dir, rng: random.Random | None = None):
        self.engine = engine
        self.data_dir = data_dir
        self.rng = rng or random.Random()
        self.cls = cls
        self.queue: list[str] = []
        self.track = ""
        self.pcm = b""
        self.pos = 0
        self.at = -1                  # the media tick the current frame belongs to
        self.frame = SharedFrame(SILENCE)
        self.listeners = 0
        self.frames_made = 0          # for tests and the bench: frames made, not frames sent

    def reload(self, cls: model.MohClass) -> None:
        """The class changed (files added, removed, reordered): start its new playlist."""
        if cls != self.cls:
            self.cls, self.queue, self.pcm, self.pos = cls, [], b"", 0

    def current(self) -> SharedFrame:
        """This tick's frame: made by the first listener asking in a tick, reused by the rest."""
        tick = self.engine.ticks
        if tick != self.at:
            self.at = tick
            self.frame = SharedFrame(self._next_pcm())
            self.frames_made += 1
        return self.frame

    def _next_pcm(self) -> bytes:
        if self.pos >= len(self.pcm):
            self._next_track()
            if not self.pcm:
                return SILENCE
        chunk = self.pcm[self.pos:self.pos + 2 * FRAME]
        self.pos += 2 * FRAME
        return chunk if len(chunk) == 2 * FRAME else chunk + bytes(2 * FRAME - len(chunk))

    def _next_track(self) -> None:
        self.pos = 0
        for _ in range(len(self.cls.files) + 1 if self.data_dir is not None else 0):
            if not self.queue:
                self.queue = model.playlist(self.cls, self.rng)
            if not self.queue:
                break
            name = self.queue.pop(0)
            pcm = files.class_audio(self.data_dir, model.MohClass(self.cls.name, files=(name,))).get(name)
            if pcm:
                self.track, self.pcm = name, pcm
                log.info("music on hold class %s: playing %s", self.cls.name, name)
                return
        # no files (or none readable): the box's own tune
        self.track, self.pcm = "", hold_music()


class SharedPlayer(Player):
    """What a listener's leg plays: the class stream's frame of the current tick."""

    __slots__ = ("stream",)

    def __init__(self, stream: MohStream):
        super().__init__(pcm=b"", loop=True)
        self.stream = stream

    def next_frame(self) -> bytes:
        return self.stream.current()


class MohService:
    def __init__(self, svc):
        self.svc = svc
        self.streams: dict[str, MohStream] = {}

    @property
    def data_dir(self):
        store = getattr(self.svc, "store", None)
        return getattr(store, "data_dir", None)

    def _table(self) -> dict:
        refresh = getattr(self.svc, "refresh_config", None)
        if refresh is not None:
            refresh()  # a class changed on the web page applies to the next listener
        view = getattr(self.svc, "view", None)
        return dict(view.table(model.TABLE)) if view is not None else {}

    def class_for(self, channel: "Channel", holder: "Channel | None" = None) -> str:
        """The class `channel` hears: its call's inbound route's, else the holder's extension's."""
        session = channel.session
        who = getattr(session, "who", None)
        route = ""
        if who is not None and who.kind == "trunk" and session.caller is channel:
            # the inbound route as configured (its DID may be written in another national form)
            view = getattr(self.svc, "view", None)
            matched = match_inbound_route(session.dst, view.inbound_routes, view.settings.country) \
                if view is not None else None
            route = matched.did if matched is not None else session.dst
        extension = holder.number if holder is not None else ""
        return model.class_for(self._table(), route=route, extension=extension)

    def stream(self, class_name: str) -> MohStream:
        table = self._table()
        cls = table.get(class_name)
        if cls is None:
            if class_name != model.DEFAULT:
                log.warning("music on hold class %r does not exist: playing the default class", class_name)
            class_name, cls = model.DEFAULT, table.get(model.DEFAULT) or model.default_class()
        stream = self.streams.get(class_name)
        if stream is None:
            stream = self.streams[class_name] = MohStream(self.svc.media, cls, self.data_dir)
        else:
            stream.reload(cls)
        return stream

    def listen(self, channel: "Channel", class_name: str | None = None, *,
               holder: "Channel | None" = None) -> str:
        """Play the class's shared stream to channel (until unlisten, another play, or hang-up)."""
        if channel.rtp is None or channel.is_gone:
            return ""
        name = class_name or self.class_for(channel, holder)
        stream = self.stream(name)
        player = channel.rtp.player
        if isinstance(player, SharedPlayer) and player.stream is stream:
            return stream.cls.name
        self.svc.media.play(channel.rtp, SharedPlayer(stream))
        stream.listeners += 1
        player = channel.rtp.player
        player.done.add_done_callback(lambda _f, s=stream: self._left(s))
        log.info("call %s: %s hears music on hold class %s", channel.session.n, channel.number,
                 stream.cls.name)
        return stream.cls.name

    @staticmethod
    def _left(stream: MohStream) -> None:
        stream.listeners -= 1

    def listening(self, channel: "Channel") -> bool:
        return channel.rtp is not None and isinstance(channel.rtp.player, SharedPlayer)

    def unlisten(self, channel: "Channel") -> None:
        if self.listening(channel):
            self.svc.media.stop(channel.rtp)

    def status(self) -> dict:
        return {name: {"listeners": s.listeners, "track": s.track} for name, s in self.streams.items()}


def service(svc) -> MohService:
    """svc.moh, made on first use (a service built without one, e.g. in a unit test)."""
    found = getattr(svc, "moh", None)
    if found is None:
        found = MohService(svc)
        try:
            svc.moh = found
        except AttributeError:
            pass
    return found


def _status(svc) -> dict:
    return service(svc).status()


hooks.ON_STATUS["moh"] = _status   # listeners per class, in `pbx status --json`
