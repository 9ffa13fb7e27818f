"""Analog line ports (FXS phones, FXO exchange lines): list with live state, add, edit, delete."""
from webui.lines.views import bp

__all__ = ["bp"]
