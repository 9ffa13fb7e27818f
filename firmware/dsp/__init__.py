"""Telephony signal processing: G.711, call-progress tones, tone and DTMF detection, RFC 4733 events."""
