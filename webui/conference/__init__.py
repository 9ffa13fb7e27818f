"""Conference rooms: list, create, edit, delete (number, name, PINs, listeners, limits)."""
from webui.conference.views import bp

__all__ = ["bp"]
