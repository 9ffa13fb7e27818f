"""Follow Me: each extension's list of phones to ring; the user edits their own, the admin any."""
from webui.followme.views import bp

__all__ = ["bp"]
