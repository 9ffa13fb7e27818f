"""Outgoing e-mail (voicemail to e-mail, test messages, alerts): a queue on disk and its sender.

Any process queues a message with `outbox.enqueue(DATA, to=..., subject=..., text=...)`; it is on
disk (DATA/mail/) before enqueue returns. The sender (a thread of `pbx run`'s call-service
process, services/mailer/sender.py) sends it through the SMTP server of the Settings page within
a second or two, retries with back-off while the server is down or says "try later", and records
per message: queued, retrying (and why), sent, failed (and why). Why a disk queue and the numbers:
docs/decisions/011-mail-outbox.md.
"""
