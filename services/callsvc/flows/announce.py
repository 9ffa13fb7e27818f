"""What a caller hears when a call cannot go through: a tone or a spoken prompt, then the answer.

The caller gets 183 with our SDP (early media, so nothing is charged), hears the country's busy or
congestion tone or a prompt ("the number you have dialled does not exist"), then the final error
(486, 404, 480...). With the busy-tone time set to 0 the final answer comes at once.
"""

from __future__ import annotations

from firmware.cdr import Disposition
from firmware.dsp.tones import ToneGenerator, tone

from ..channel import Channel
from ..media import Player


async def fail(svc, caller: Channel, code: int, disposition: Disposition, cause: str, *,
               prompt: str | None = None, tone_name: str | None = None, reason: str = "") -> None:
    session = caller.session
    session.fail(disposition, cause)
    seconds = svc.settings.busy_tone_seconds
    if seconds > 0 and caller.rtp is not None and caller.rtp.remote is not None and caller.state != "up":
        session.state = "announcing"
        caller.progress()
        if prompt and svc.prompts is not None:
            pcm = svc.prompts(prompt)
            player = Player(pcm=pcm, seconds=max(seconds, len(pcm) / 16000))
        else:
            player = Player(tone=ToneGenerator(tone(svc.settings.country, tone_name or "congestion")),
                            seconds=seconds)
        await caller.play(player)
    if not caller.is_gone:
        caller.reject(code, reason)
