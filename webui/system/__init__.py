"""System page: version, uptime, disk, backup and restore, admin password, API tokens, audit log."""
from webui.system.views import bp

__all__ = ["bp"]
