"""Setup web UI and REST API: first-boot wizard, admin and user pages, JSON API over the config store.

`create_app` is imported on first use (PEP 562): the call service imports small parts of this
package (webui.scheme) and must not load Flask, Jinja and Werkzeug with them (about 6 MB).
"""

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from webui.app import create_app
        return create_app
    raise AttributeError(f"module 'webui' has no attribute {name!r}")
