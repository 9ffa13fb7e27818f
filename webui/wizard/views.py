"""Wizard steps. Each step writes the store at once: there is no "apply config" at the end."""
from __future__ import annotations

import ipaddress
import socket
import zoneinfo
from functools import lru_cache

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for

from firmware import netconf
from firmware.config import ValidationError, ValidationErrors
from webui import network
from webui.auth import guard
from webui.auth.accounts import AccountError
from webui.pbx import config_store, data_dir, pbx_status, validation_errors
from webui.wizard import setup_code

bp = Blueprint("wizard", __name__, template_folder="templates", url_prefix="/setup")

ADMIN_USER = "admin"
EXTENSION_ROWS = 4
COUNTRIES = (("uk", "United Kingdom (UK tones)"), ("us", "United States (US tones)"))


@lru_cache(maxsize=1)
def timezones() -> tuple[str, ...]:
    return tuple(sorted(z for z in zoneinfo.available_timezones() if "/" in z or z == "UTC"))


def guess_sip_address() -> str:
    """The address this browser used to reach the box is the one phones on its LAN can use too."""
    host = request.host.rsplit(":", 1)[0].strip("[]") if request.host else ""
    try:
        if host and not ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        if host and host != "localhost":
            return host
    try:
        addr = socket.gethostbyname(socket.gethostname())
        return "" if addr.startswith("127.") else addr
    except OSError:
        return ""


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


@bp.route("", methods=["GET", "POST"])
@guard.public
def admin():
    accounts = current_app.extensions["pbx.accounts"]
    if accounts.has_admin():
        return redirect(url_for("wizard.site") if g.user else url_for("auth.login"))
    errors: dict[str, str] = {}
    if request.method == "POST":
        address = guard.client_address()
        key = f"setup:{address}"
        wait = accounts.locked_for(key)
        if wait > 0:
            errors["form"] = f"too many wrong setup codes: try again in {int(wait // 60) + 1} minute(s)"
            accounts.audit("setup_blocked", ADMIN_USER, address, "setup code locked out")
            return render_template("wizard/admin.html", errors=errors), 429
        password = request.form.get("password", "")
        if not setup_code.matches(data_dir(), request.form.get("setup_code", "")):
            errors["setup_code"] = ("wrong setup code: use the code printed by `pbx run` "
                                    "(also in DATA/webui/setup-code on the box)")
            if accounts.record_failure(key):
                accounts.audit("lockout", ADMIN_USER, address, "setup code: too many wrong codes")
            accounts.audit("setup_code_wrong", ADMIN_USER, address)
        elif password != request.form.get("password2", ""):
            errors["password2"] = "the two passwords differ: type the same password twice"
        else:
            try:
                account = accounts.create(ADMIN_USER, password, "admin")
            except AccountError as e:
                errors[e.field] = e.message
            else:
                setup_code.consume(data_dir())
                guard.login(account)
                accounts.audit("setup_admin", ADMIN_USER, address, "admin password set")
                return redirect(url_for("wizard.site"))
        return render_template("wizard/admin.html", errors=errors), 400
    return render_template("wizard/admin.html", errors=errors)


@bp.route("/site", methods=["GET", "POST"])
def site():
    store = config_store()
    settings = store.settings()
    values = {"site_name": settings.site_name, "timezone": settings.timezone,
              "country": settings.country, "sip_domain": settings.sip_domain or guess_sip_address()}
    errors: dict[str, str] = {}
    net_settings, net_errors = network.current()
    net_values = network.values(net_settings)
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in values}
        new_net = None
        if "net_mode" in request.form:        # the Network part (a form without it keeps the network)
            net_values, new_net, net_errors = network.from_form()
            if new_net and new_net.mode == "static" and values["sip_domain"] in ("", guess_sip_address()):
                values["sip_domain"] = new_net.address.split("/")[0]   # the phones follow the new address
        else:
            net_errors = {}
        if not net_errors:
            try:
                store.update_settings(**values)
            except ValidationError as e:
                errors = validation_errors(e)
            else:
                _audit("settings_changed", "wizard: " + ", ".join(
                    f"{k}={v}" for k, v in values.items() if getattr(settings, k) != v))
                if new_net is not None and network.save(new_net):
                    _audit("network_changed", "wizard: " + network.describe(new_net))
                    moved = network.moved_to(new_net)
                    if moved:
                        return network.moved_page(moved, url_for("wizard.extensions"))
                return redirect(url_for("wizard.extensions"))
        errors.update(net_errors)
    return render_template("wizard/site.html", values=values, errors=errors, countries=COUNTRIES,
                           timezones=timezones(), net=net_values,
                           on_appliance=netconf.on_appliance()), 400 if errors else 200


@bp.route("/extensions", methods=["GET", "POST"])
def extensions():
    store = config_store()
    existing = store.extensions()
    rows = [{"number": "", "name": ""} for _ in range(EXTENSION_ROWS)]
    if not existing:
        rows[0], rows[1] = {"number": "201", "name": "Reception"}, {"number": "202", "name": "Office"}
    errors: dict[int, dict[str, str]] = {}
    if request.method == "POST":
        rows = [{"number": request.form.get(f"number_{i}", "").strip(),
                 "name": request.form.get(f"name_{i}", "").strip()} for i in range(EXTENSION_ROWS)]
        errors = add_extensions(store, rows)
        if not errors:
            for row in rows:
                if row["number"]:
                    _audit("extension_added", f"extension {row['number']} (wizard)")
            current_app.extensions["pbx.accounts"].set_meta("wizard_done", "1")
            return redirect(url_for("wizard.done"))
    return render_template("wizard/extensions.html", rows=rows, errors=errors,
                           existing=existing), 400 if errors else 200


def add_extensions(store, rows: list[dict]) -> dict[int, dict[str, str]]:
    """Add every filled row or none: rows are checked together before the first write."""
    from firmware.config import Extension
    from firmware.config.model import generate_secret
    errors: dict[int, dict[str, str]] = {}
    seen: dict[str, int] = {}
    wanted = []
    for i, row in enumerate(rows):
        if not row["number"] and not row["name"]:
            continue
        try:
            Extension(row["number"], row["name"], generate_secret()).validate()
        except ValidationErrors as e:
            errors[i] = validation_errors(e)
            continue
        if store.get_extension(row["number"]) is not None:
            errors[i] = {"number": f"extension {row['number']} already exists: pick another number"}
        elif row["number"] in seen:
            errors[i] = {"number": f"{row['number']} is also in row {seen[row['number']] + 1}"}
        else:
            seen[row["number"]] = i
            wanted.append((i, row))
    if errors:
        return errors
    added = []
    for i, row in wanted:
        try:
            added.append(store.add_extension(row["number"], row["name"]).number)
        except ValidationError as e:
            # Lost a race with another writer (CLI): take back this form's rows, report the clash.
            for number in added:
                store.remove_extension(number)
            return {i: validation_errors(e)}
    return {}


@bp.get("/done")
def done():
    store = config_store()
    status = pbx_status()
    server = store.settings().sip_domain or status.get("sip_addr") or guess_sip_address()
    if server and status.get("sip_port") and status["sip_port"] != 5060:
        server = f"{server}:{status['sip_port']}"
    return render_template("wizard/done.html", extensions=store.extensions(), sip_domain=server)
