"""Outgoing mail decisions, without I/O: who may receive, when to try again, when to give up.

The outbox (services/mailer/outbox.py) keeps messages on disk; the sender (services/mailer/sender.py)
tries them and asks `after_attempt` what the message's state becomes. Why these numbers:
docs/decisions/011-mail-outbox.md.
"""
from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass

STATES = ("queued", "retrying", "sent", "failed")
PENDING = ("queued", "retrying")          # still in the queue: the sender tries them
MAX_RECIPIENTS = 20

# An address as an SMTP server takes it in RCPT TO: local@domain, ASCII, no spaces or brackets.
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                      r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+")


def parse_recipients(to: str | list[str] | tuple[str, ...]) -> list[str]:
    """The addresses in `to` (one string, comma separated, or a list; "Name <a@b>" allowed),
    each checked; ValueError naming the bad one and what an address looks like."""
    items = [to] if isinstance(to, str) else list(to)
    if not all(isinstance(i, str) for i in items):
        raise ValueError(f"mail recipients must be text, got {to!r}")
    addresses: list[str] = []
    for item in items:
        for name, addr in email.utils.getaddresses([item]):
            if not addr and not name:
                continue
            if not _ADDRESS.fullmatch(addr or ""):
                shown = (addr or name) if "," in item else item.strip()    # what the user typed
                raise ValueError(f"{shown[:80]!r} is not an e-mail address such as someone@example.com")
            if addr.lower() not in (a.lower() for a in addresses):
                addresses.append(addr)
    if not addresses:
        raise ValueError("the mail has no recipient: give an address such as someone@example.com")
    if len(addresses) > MAX_RECIPIENTS:
        raise ValueError(f"{len(addresses)} recipients: at most {MAX_RECIPIENTS} per message")
    return addresses


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off: `first` seconds after the first failure, doubling, at most `cap`;
    after `give_up` seconds since the message was queued it fails with the last reason."""
    first: float = 30.0
    cap: float = 3600.0
    give_up: float = 24 * 3600.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (1 = the first)."""
        return min(self.first * 2 ** min(max(0, attempts - 1), 32), self.cap)

    @classmethod
    def parse(cls, text: str) -> "RetryPolicy":
        """"FIRST,CAP,GIVE_UP" in seconds (PBX_MAIL_BACKOFF, e.g. "1,4,120" for tests)."""
        try:
            first, cap, give_up = (float(x) for x in text.split(","))
        except ValueError:
            raise ValueError(f"mail back-off {text!r}: give FIRST,CAP,GIVE_UP in seconds, e.g. 30,3600,86400") \
                from None
        if not 0 < first <= cap <= give_up:
            raise ValueError(f"mail back-off {text!r}: need 0 < FIRST <= CAP <= GIVE_UP")
        return cls(first, cap, give_up)


# Outcome kinds of one attempt
SENT, TEMPORARY, PERMANENT = "sent", "temporary", "permanent"


def classify(stage: str, code: int | None) -> str:
    """Whether an SMTP refusal ends the message (PERMANENT) or is tried again (TEMPORARY).

    stage: "connect", "login", "sender" (MAIL FROM), "recipient" (RCPT TO), "data".
    A 5xx to a recipient or to the message itself will not change on a retry: it fails at once.
    A 5xx at connect, login or MAIL FROM is the box's settings being wrong (password, sender
    address): every message would fail the same way, so they wait and retry, and are sent once the
    admin fixes the settings (a settings change retries at once). No code (a connection that
    failed, a timeout, TLS) is temporary.
    """
    if code is not None and 500 <= code <= 599 and stage in ("recipient", "data"):
        return PERMANENT
    return TEMPORARY


def after_attempt(message: dict, outcome: str, reason: str, now: float, policy: RetryPolicy) -> dict:
    """The fields of `message` that change after one attempt ended with `outcome`."""
    attempts = int(message.get("attempts", 0)) + 1
    if outcome == SENT:
        return {"state": "sent", "attempts": attempts, "sent_at": now, "next_try": None,
                "last_error": reason, "updated": now}
    if outcome == PERMANENT:
        return {"state": "failed", "attempts": attempts, "next_try": None, "last_error": reason,
                "updated": now}
    since = next((float(message[k]) for k in ("retry_from", "created") if message.get(k) is not None), now)
    wait = policy.delay(attempts - int(message.get("retry_base") or 0))   # a hand retry starts at `first`
    if now + wait - since > policy.give_up:
        hours = policy.give_up / 3600
        span = f"{hours:g} h" if hours >= 1 else f"{policy.give_up:g} s"
        return {"state": "failed", "attempts": attempts, "next_try": None, "updated": now,
                "last_error": f"gave up after {attempts} attempts in {span}: {reason}"}
    return {"state": "retrying", "attempts": attempts, "next_try": now + wait, "last_error": reason,
            "updated": now}


def summary(messages: list[dict], now: float, recent: float = 7 * 86400) -> dict:
    """What the dashboard says about mail: messages waiting, retrying, failed in the last week."""
    out = {"queued": 0, "retrying": 0, "failed": 0, "last_error": ""}
    for m in messages:
        state = m.get("state")
        if state == "failed" and now - float(m.get("updated") or m.get("created") or 0) > recent:
            continue
        if state in out:
            out[state] += 1
            if state in ("retrying", "failed") and not out["last_error"]:
                out["last_error"] = m.get("last_error") or ""
    return out
