"""Provisioning: enrolled desk phones (admin pages) and the files each phone fetches with its own credentials."""
from webui.provisioning.views import bp

__all__ = ["bp"]
