"""Voicemail pages: mailboxes (admin), a mailbox's messages and greetings (owner), e-mail links."""
from webui.voicemail.views import bp

__all__ = ["bp"]
