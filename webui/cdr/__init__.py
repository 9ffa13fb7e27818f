"""Call detail records: filtered list and CSV export."""
from webui.cdr.views import bp

__all__ = ["bp"]
