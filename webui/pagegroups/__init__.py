"""Paging groups: list, create, edit, delete (number, name, member extensions, ring time).
(The package is not called `paging`: webui/paging.py is the list pager.)"""
from webui.pagegroups.views import bp

__all__ = ["bp"]
