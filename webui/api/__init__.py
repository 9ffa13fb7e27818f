"""JSON REST API (token auth) with its OpenAPI description at /api/docs."""
from webui.api.views import bp

__all__ = ["bp"]
