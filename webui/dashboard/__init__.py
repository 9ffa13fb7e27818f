"""Live dashboard: registered phones, active calls and trunk state, pushed by server-sent events."""
from webui.dashboard.views import bp

__all__ = ["bp"]
