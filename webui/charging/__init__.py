"""Call charging page: rate sheets (import, versions), which sheet each trunk uses, spend limits, alerts."""
from webui.charging.views import bp

__all__ = ["bp"]
