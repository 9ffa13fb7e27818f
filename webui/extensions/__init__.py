"""Extension administration pages."""
from webui.extensions.views import bp

__all__ = ["bp"]
