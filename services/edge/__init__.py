"""SIP edge: Kamailio (Debian package) in front of the call service, started and managed from Python."""
from .config import EdgeConfig, EdgeError
from .process import Edge

__all__ = ["Edge", "EdgeConfig", "EdgeError"]
