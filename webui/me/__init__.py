"""Pages for a phone's user: their own extension, nothing else."""
from webui.me.views import bp

__all__ = ["bp"]
