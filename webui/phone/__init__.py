"""The browser phone: a page that makes and takes calls as the user's extension (SIP over WebSocket)."""
from webui.phone.views import bp

__all__ = ["bp"]
