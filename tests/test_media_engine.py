"""The media engine on its own, with real sockets on loopback and uvloop (as the call service runs)."""

import asyncio
import socket

import uvloop

from firmware.dsp.tones import ToneGenerator, tone
from services.callsvc.media import MediaEngine, Player
from tests.pbxproc import free_rtp_range


def test_one_leg_that_cannot_send_does_not_stop_the_prompts_of_every_other_call():
    async def run():
        engine = MediaEngine("127.0.0.1", free_rtp_range(20))
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        broken, good = await engine.open_leg(), await engine.open_leg()
        # what an SDP naming an IPv6 host once left behind: sendto on an IPv4 socket raises
        broken.remote = ("::1", 4000)
        good.set_remote(listener.getsockname())
        for leg in (broken, good):
            engine.play(leg, Player(tone=ToneGenerator(tone("uk", "busy")), seconds=2))
        await asyncio.sleep(0.6)
        got = 0
        while True:
            try:
                listener.recv(2048)
                got += 1
            except BlockingIOError:
                break
        playing = set(engine.playing)
        for leg in (broken, good):
            engine.close_leg(leg)
        engine.close()
        listener.close()
        return got, playing, broken, good

    got, playing, broken, good = uvloop.run(run())
    assert got >= 20, f"only {got} frames in 0.6 s: the tick stopped"
    assert broken not in playing and good in playing


def test_three_legs_in_a_mix_each_hear_the_other_two_and_not_themselves():
    import numpy as np

    from firmware.dsp import g711
    from tests.phones.raw import rtp_packet

    tones = (500, 900, 1400)

    async def run():
        engine = MediaEngine("127.0.0.1", free_rtp_range(20))
        phones = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in tones]
        legs = []
        for sock in phones:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            leg = await engine.open_leg()
            leg.set_remote(sock.getsockname())
            legs.append(leg)
        mixer = engine.mix(legs)
        heard = [[] for _ in phones]
        for seq in range(40):
            for sock, leg, hz in zip(phones, legs, tones):
                t = np.arange(seq * 160, seq * 160 + 160) / 8000
                pcm = (np.sin(2 * np.pi * hz * t) * 6000).astype("<i2").tobytes()
                sock.sendto(rtp_packet(g711.ulaw_encode(pcm), seq), ("127.0.0.1", leg.port))
            await asyncio.sleep(0.02)
            for i, sock in enumerate(phones):
                while True:
                    try:
                        heard[i].append(sock.recv(2048)[12:])
                    except BlockingIOError:
                        break
        engine.unmix(mixer)
        for leg in legs:
            engine.close_leg(leg)
        engine.close()
        for sock in phones:
            sock.close()
        return [b"".join(g711.ulaw_decode(p) for p in packets[-15:]) for packets in heard]

    def share(pcm: bytes, hz: float) -> float:
        """Fraction of the signal's energy within 25 Hz of hz."""
        x = np.frombuffer(pcm, dtype="<i2").astype(float)
        spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / 8000)
        return float(spectrum[np.abs(freqs - hz) < 25].sum() / spectrum.sum())

    received = uvloop.run(run())
    for i, pcm in enumerate(received):
        for j, hz in enumerate(tones):
            if j == i:
                assert share(pcm, hz) < 0.02, f"leg {i} hears itself"
            else:
                assert share(pcm, hz) > 0.3, f"leg {i} does not hear leg {j}"


class _FakeSession:
    def __init__(self):
        self.channels = []

    def event(self, *args, **kw):
        pass


class _FakeChannel:
    """What a Bridge needs of a channel: its RTP leg, a call to log to, hold and gone state."""

    def __init__(self, rtp, session):
        self.rtp, self.session, self.held, self.is_gone = rtp, session, False, False
        self.n = id(self)
        self.sessions = [session]
        session.channels.append(self)
        self.bridge = self.on_hold_change = None

    def log(self, what, /, **data):
        pass


def test_a_bridge_mixes_from_three_members_and_goes_back_to_the_relay_at_two():
    from services.callsvc.bridge import Bridge

    async def run():
        engine = MediaEngine("127.0.0.1", free_rtp_range(20))

        class Svc:
            media = engine

        session = _FakeSession()
        channels = [_FakeChannel(await engine.open_leg(), session) for _ in range(3)]
        bridge = Bridge(Svc(), "test")
        bridge.add(channels[0])
        bridge.add(channels[1])
        two = (channels[0].rtp.peer is channels[1].rtp, len(engine.mixers))
        bridge.add(channels[2])
        three = (len(engine.mixers), {c.rtp.mixer is bridge.mixer for c in channels}, channels[0].rtp.peer)
        bridge.remove(channels[2])
        back = (len(engine.mixers), channels[0].rtp.peer is channels[1].rtp, channels[2].rtp.mixer)
        for c in channels:
            engine.close_leg(c.rtp)
        engine.close()
        return two, three, back

    two, three, back = uvloop.run(run())
    assert two == (True, 0)
    assert three == (1, {True}, None)
    assert back == (0, True, None)


def test_merging_two_bridges_makes_one_mixed_call_of_all_their_members():
    from services.callsvc.bridge import Bridge

    async def run():
        engine = MediaEngine("127.0.0.1", free_rtp_range(20))

        class Svc:
            media = engine

        session = _FakeSession()
        a, b, c, d = [_FakeChannel(await engine.open_leg(), session) for _ in range(4)]
        first, second = Bridge(Svc(), "one"), Bridge(Svc(), "two")
        for bridge, pair in ((first, (a, b)), (second, (c, d))):
            for ch in pair:
                bridge.add(ch)
        first.merge(second)
        result = (len(first.members), second.members, {ch.bridge is first for ch in (a, b, c, d)},
                  len(first.mixer.inbox), len(engine.mixers))
        for ch in (a, b, c, d):
            engine.close_leg(ch.rtp)
        engine.close()
        return result

    assert uvloop.run(run()) == (4, [], {True}, 4, 1)
