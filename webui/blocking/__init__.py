"""Call blocking: the block list, barred outbound prefixes and the calls that were blocked."""
from webui.blocking.views import bp

__all__ = ["bp"]
