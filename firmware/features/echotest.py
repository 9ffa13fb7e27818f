"""The echo test: dial *43 and hear yourself.

What a user dials to check a phone's audio path (headset, microphone, network, NAT) without
bothering a colleague, as on Asterisk/FreePBX (*43) and 3CX. The call is answered, a short prompt
says what happens, then everything the phone sends comes straight back until the phone hangs up
or presses #, for at most `max_s` seconds. It is also the call the box places to test itself
after an update (services/selftest.py): answered by the call service behind the edge, so a
passing echo proves the edge, the call service and the media path all work.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from firmware.dialplan.context import Context
from firmware.dialplan.feature_codes import CodeDef, register_code
from firmware.dialplan.plan import NOTHING_NEXT, Next

ECHO_CODE = "*43"
MAX_S = 300


@dataclass(frozen=True)
class EchoTest:
    """Answer, say "echo test", then send the caller's audio back to it until # or hang-up."""
    max_s: int = MAX_S
    on: Next = field(default=NOTHING_NEXT, kw_only=True)

    def describe(self) -> str:
        return f"echo test (at most {self.max_s} s)"


def plan_echo(parsed, ctx: Context) -> EchoTest:
    return EchoTest()


register_code(CodeDef(ECHO_CODE, "echo", "Echo test: hear yourself (checks the phone's audio path)",
                      plan=plan_echo, group="Call handling"))
