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
