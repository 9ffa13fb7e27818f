"""System prompts: every announcement the PBX plays, listened to in the page, replaced by an upload
or reverted to the box's own."""
from webui.prompts.views import bp

__all__ = ["bp"]
