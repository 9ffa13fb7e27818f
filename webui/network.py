"""The "Network" part of the wizard's site form and of the System page (firmware/netconf.py).

Both only write DATA/network/network.json. On the appliance pbx-network.path applies it (root,
networkd drop-in, reload); elsewhere (`make run`, tests) nothing else changes, and the form says so.
"""
from __future__ import annotations

from flask import render_template, request

from firmware import netconf
from firmware.netconf import NetworkError, NetworkSettings
from webui.pbx import data_dir

FIELDS = ("mode", "address", "gateway", "dns")


def current() -> tuple[NetworkSettings, dict[str, str]]:
    """The saved settings; a damaged file shows as an error on the form and reads as DHCP."""
    try:
        return netconf.load(data_dir()), {}
    except NetworkError as e:
        return NetworkSettings(), {f"net_{k}": v for k, v in e.errors.items()}


def values(settings: NetworkSettings) -> dict[str, str]:
    return {"net_mode": settings.mode, "net_address": settings.address, "net_gateway": settings.gateway,
            "net_dns": " ".join(settings.dns)}


def from_form() -> tuple[dict[str, str], NetworkSettings | None, dict[str, str]]:
    """(form values, checked settings or None, errors keyed by form field) from request.form."""
    form = {f"net_{k}": request.form.get(f"net_{k}", "").strip() for k in FIELDS}
    try:
        settings = netconf.parse(form["net_mode"], form["net_address"], form["net_gateway"], form["net_dns"])
    except NetworkError as e:
        return form, None, {f"net_{k}": v for k, v in e.errors.items()}
    return form, settings, {}


def describe(settings: NetworkSettings) -> str:
    if settings.mode == "dhcp":
        return "DHCP"
    return " ".join(filter(None, (f"static {settings.address}", settings.gateway and f"gateway {settings.gateway}",
                                  settings.dns and "DNS " + ",".join(settings.dns))))


def save(settings: NetworkSettings) -> bool:
    """Save if different from what is saved (no file = DHCP); True when it changed."""
    old, damaged = current()
    if settings == old and not damaged:
        return False
    netconf.save(data_dir(), settings)
    return True


def moved_to(settings: NetworkSettings) -> str | None:
    """The box's new address when the browser is about to lose the one it uses (appliance only)."""
    if settings.mode != "static" or not netconf.on_appliance():
        return None
    new = settings.address.split("/")[0]
    host = (request.host or "").rsplit(":", 1)[0].strip("[]")
    return None if host == new else new


def moved_page(address: str, next_path: str):
    return render_template("network_moved.html", address=address, next_path=next_path)
