"""Time conditions: office hours, holidays and closures, with a 14-day preview of where calls go."""
from webui.timeconditions.views import bp

__all__ = ["bp"]
