"""IVR menus: a form per menu (keys to destinations, prompt by TTS, upload or phone), and its tree."""
from webui.ivr.views import bp

__all__ = ["bp"]
