"""Inbound routes (DID -> extension) and outbound routes (dial pattern -> trunk, fallback trunk)."""
from webui.routing.views import bp

__all__ = ["bp"]
