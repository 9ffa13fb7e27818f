"""Site settings after the wizard: name, time zone, tones, phone address, ring timeout,
call recording and its retention, outgoing mail (SMTP)."""
from webui.settings.views import bp

__all__ = ["bp"]
