"""SIP trunk pages: provider host, credentials, registration state."""
from webui.trunks.views import bp

__all__ = ["bp"]
