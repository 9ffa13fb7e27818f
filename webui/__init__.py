"""Setup web UI and REST API: first-boot wizard, admin and user pages, JSON API over the config store."""
from webui.app import create_app

__all__ = ["create_app"]
