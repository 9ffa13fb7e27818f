"""Call recordings: list with their calls, play and download (behind login), delete, retention."""
from webui.recordings.views import bp

__all__ = ["bp"]
