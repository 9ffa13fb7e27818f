"""Phonebook: company contacts (admin), "My contacts" (each user), CSV/vCard import and export,
the REST API (/api/v1/contacts) and the directory files desk phones download."""
from webui.phonebook.views import bp

__all__ = ["bp"]
