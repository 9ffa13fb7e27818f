"""Call queues: the queues, their statistics (charts, CSV), the wallboard and the agent's page."""
from webui.queues.views import bp

__all__ = ["bp"]
