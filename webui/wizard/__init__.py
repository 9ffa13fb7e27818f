"""First-boot wizard: setup code + admin password, site settings, first extensions."""
from webui.wizard import setup_code
from webui.wizard.views import bp

__all__ = ["bp", "setup_code"]
