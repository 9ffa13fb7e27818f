"""Music on hold: classes, uploads (converted to 8 kHz mono), listening in the browser, deletion."""
from webui.moh.views import bp

__all__ = ["bp"]
