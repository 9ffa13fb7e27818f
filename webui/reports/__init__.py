"""Call reports: calls and cost per period, extension, destination type and trunk; top destinations,
busiest hours; charts (Chart.js, served from the box), tables, CSV and a printable view."""
from webui.reports.views import bp

__all__ = ["bp"]
