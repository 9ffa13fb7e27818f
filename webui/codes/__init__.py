"""Feature codes: every code the box knows, switched off or given another code."""
from webui.codes.views import bp

__all__ = ["bp"]
