"""Login, logout and the health probe; accounts, tokens and the audit log live in accounts.py."""
from webui.auth.views import bp

__all__ = ["bp"]
