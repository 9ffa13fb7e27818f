"""Ring groups: the list, and a form per group (members, strategy, timeouts, no-answer destination)."""
from webui.ringgroups.views import bp

__all__ = ["bp"]
