"""Day/night toggles: switch them, name them, say where their calls go by day and by night."""
from webui.daynight.views import bp

__all__ = ["bp"]
