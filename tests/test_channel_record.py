"""The record primitive (voicemail, greetings and call recording build on it), with real sockets:
a channel's RTP leg on loopback and a socket playing the phone."""

import asyncio
import socket

import numpy as np
import uvloop

from firmware.dsp import g711
from firmware.dsp.rfc4733 import pack_event
from services.callsvc.channel import Channel
from services.callsvc.media import MediaEngine
from services.media.wavfile import read_wav
from tests.pbxproc import free_rtp_range
from tests.phones.raw import rtp_packet


class _Session:
    n = 1

    def event(self, *args, **kw):
        pass


def _record(tmp_path, send_digit: bool):
    async def run():
        loop = asyncio.get_running_loop()
        media = MediaEngine("127.0.0.1", free_rtp_range(10))

        class Svc:
            pass

        svc = Svc()
        svc.loop, svc.media = loop, media
        ch = Channel(svc, _Session(), "rec-1", inbound=True)
        ch.rtp = await media.open_leg()
        phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        phone.bind(("127.0.0.1", 0))
        ch.rtp.set_remote(phone.getsockname())
        ch._set_codec("PCMU", 101)

        async def speak():
            for seq in range(30):  # 0.6 s of a 440 Hz "voice", then quiet
                t = np.arange(seq * 160, seq * 160 + 160) / 8000
                pcm = (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()
                phone.sendto(rtp_packet(g711.ulaw_encode(pcm), seq), ("127.0.0.1", ch.rtp.port))
                await asyncio.sleep(0.02)
            if send_digit:
                for i in range(3):
                    phone.sendto(rtp_packet(pack_event("#", True, duration=800), 40 + i, pt=101, ts=77777),
                                 ("127.0.0.1", ch.rtp.port))

        speaker = asyncio.ensure_future(speak())
        started = loop.time()
        digit = await ch.record(tmp_path / "take.wav", max_s=5, silence_s=None if send_digit else 0.5)
        took = loop.time() - started
        await speaker
        media.close_leg(ch.rtp)
        media.close()
        phone.close()
        return digit, took

    return uvloop.run(run())


def test_record_stops_after_the_caller_falls_silent_and_keeps_what_was_said(tmp_path):
    digit, took = _record(tmp_path, send_digit=False)
    assert digit is None and 0.9 <= took < 2.5, took
    samples = read_wav(tmp_path / "take.wav")
    assert len(samples) >= 2 * 8000 * 0.5      # about 0.6 s of speech kept (pcm16le)


def test_record_stops_on_the_hash_key_and_says_so(tmp_path):
    digit, took = _record(tmp_path, send_digit=True)
    assert digit == "#" and took < 2.0
