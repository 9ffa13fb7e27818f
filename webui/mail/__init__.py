"""The Mail page: the outbox (every message sent, retrying or failed, and why) and a test e-mail."""
from webui.mail.views import bp

__all__ = ["bp"]
