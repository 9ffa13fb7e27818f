"""The Failover page: this box's failover settings (as `pbx ha set`) and the pair's live state."""
from webui.ha.views import bp

__all__ = ["bp"]
