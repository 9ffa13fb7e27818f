"""HTTPS: the box's certificate (generated at first start or uploaded) and the page that shows and replaces it."""
from webui.https.views import bp

__all__ = ["bp"]
