"""Call parking: the lot's settings and its slots with who is parked there, live."""
from webui.parking.views import bp

__all__ = ["bp"]
