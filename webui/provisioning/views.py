"""Provisioning pages (admin) and the phone-facing file server.

Phones fetch https://<box>/prov/<token>/<file> with HTTP basic credentials that belong to that
phone alone (firmware/features/provisioning.py). Anything that is not exactly an enrolled,
approved phone's token and one of its files is 404, whatever the MAC in the name; wrong
credentials are 401; an address that keeps failing is refused (429) for a while; every fetch
is one audit line in the log. Plain HTTP is served only to phones flagged http_allowed.
"""
from __future__ import annotations

import csv
import hmac
import io
import logging
import threading
import time
from dataclasses import replace

from flask import Blueprint, Response, abort, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features import provisioning as prov
from webui.auth import guard
from webui.pbx import config_store, pbx_status, validation_errors

log = logging.getLogger(__name__)
bp = Blueprint("provisioning", __name__, template_folder="templates")

SETTING_LABELS = {"transport": "SIP transport (udp, tcp, tls)", "language": "Language (e.g. en-GB)",
                  "ntp_server": "Time server", "blf_colleagues": "BLF key for each colleague (yes/no)",
                  "blf_extra": "Extra BLF keys (e.g. *33, 701)", "voicemail_number": "Voicemail number",
                  "phonebook": "Company phone book (yes/no)", "http_allowed": "Plain HTTP allowed (yes/no)"}
FAIL_LIMIT = 10             # failed fetches per address ...
FAIL_WINDOW_S = 600.0       # ... in this window, then 429 until it has passed
FETCH_LIMIT = 120           # and at most this many fetches per address in the window
_lock = threading.Lock()
_seen: dict[str, list[tuple[float, bool]]] = {}     # address -> [(time, failed)]


def _limited(addr: str) -> bool:
    now = time.monotonic()
    with _lock:
        events = [e for e in _seen.get(addr, []) if now - e[0] < FAIL_WINDOW_S]
        _seen[addr] = events
        return sum(1 for _, failed in events if failed) >= FAIL_LIMIT or len(events) >= FETCH_LIMIT


def _note(addr: str, failed: bool) -> None:
    with _lock:
        _seen.setdefault(addr, []).append((time.monotonic(), failed))


def _audit_fetch(phone, filename: str, status: int, why: str = "") -> None:
    log.info("provisioning: fetch %s from %s (%s) -> %d%s", filename, guard.client_address(),
             f"phone {phone.mac} ext {phone.extension}" if phone else "no phone",
             status, f" {why}" if why else "")


def base_url() -> str:
    """https://<host the phone used>[:port]: files point back to the box the phone reached."""
    return request.host_url.rstrip("/")


@bp.get("/prov/<token>/<path:filename>")
@guard.public
def fetch(token: str, filename: str):
    addr = guard.client_address()
    if _limited(addr):
        _audit_fetch(None, filename, 429, "rate limited")
        return Response("too many requests\n", 429, {"Retry-After": str(int(FAIL_WINDOW_S))})
    store = config_store()
    phone = next((p for p in store.records(prov.TABLE) if hmac.compare_digest(p.token, token)), None)
    if phone is None or not phone.approved or not prov.wants_file(phone, filename):
        _note(addr, True)
        _audit_fetch(phone, filename, 404)
        abort(404)
    auth = request.authorization
    if (auth is None or auth.type != "basic" or not hmac.compare_digest(auth.username or "", phone.username)
            or not hmac.compare_digest(auth.password or "", phone.password)):
        _note(addr, auth is not None)
        _audit_fetch(phone, filename, 401, "no credentials" if auth is None else "wrong credentials")
        return Response("credentials needed\n", 401, {"WWW-Authenticate": 'Basic realm="phone provisioning"'})
    settings = prov.effective_settings(phone, {p.scope: p for p in store.records(prov.PROFILES)})
    if not request.is_secure and "pbx.tls" in current_app.extensions and settings["http_allowed"] != "yes":
        _note(addr, False)          # the right phone on the wrong transport: not a guess
        _audit_fetch(phone, filename, 403, "plain HTTP not allowed for this phone")
        return Response("use HTTPS\n", 403)
    _note(addr, False)
    ext = store.get_extension(phone.extension)
    if ext is None:
        _audit_fetch(phone, filename, 404, "its extension no longer exists")
        abort(404)
    s = store.settings()
    colleagues = [(e.number, e.name) for e in store.extensions() if e.enabled]
    box = _box_facts(s)
    try:
        content_type, text = prov.render(phone, filename, prov.Account(ext.number, ext.name, ext.secret), box,
                                         settings, colleagues)
    except ValueError as exc:      # a value that would inject settings into a key=value file
        log.error("provisioning: %s for phone %s not made: %s", filename, phone.mac, exc)
        abort(500)
    _audit_fetch(phone, filename, 200)
    return Response(text, 200, {"Content-Type": f"{content_type}; charset=utf-8"})


def _box_facts(settings) -> prov.BoxFacts:
    """Where the phone registers: the SIP domain if one is set, else the address it reached us
    on; the SIP port the running PBX listens on (5060 when it cannot be asked)."""
    status = pbx_status()
    sip_host = settings.sip_domain or request.host.rsplit(":", 1)[0].strip("[]")
    port = int(status.get("sip_port") or 5060)
    return prov.BoxFacts(sip_host, port, port + 1, base_url(), settings.timezone or "UTC",
                         backup_host=_remote_standby())


def _remote_standby() -> str:
    """The remote standby's address (`pbx ha set --remote`): the phones' second registrar."""
    from services.ha import settings as ha_settings
    from webui.pbx import data_dir
    ha = ha_settings.load(data_dir())
    return ha.remote_addr if ha.enabled and ha.site == "main" else ""


# ----- admin pages -----------------------------------------------------------------------------------
def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _page(errors=None, form=None, import_report=None, status=200):
    store = config_store()
    phones = store.records(prov.TABLE)
    profiles = {p.scope: p for p in store.records(prov.PROFILES)}
    return render_template("provisioning/index.html", phones=phones, vendors=prov.VENDORS,
                           extension_options=[(e.number, f"{e.number} {e.name}") for e in store.extensions()],
                           labels=SETTING_LABELS, errors=errors or {}, form=form or {},
                           import_report=import_report or [], profiles=profiles, defaults=prov.DEFAULTS,
                           base=base_url(), url_of=lambda p: prov.provisioning_url(p, base_url())), status


@bp.get("/provisioning")
def index():
    return _page()


@bp.post("/provisioning")
def enroll():
    form = request.form
    try:
        mac = prov.normalize_mac(form.get("mac", ""))
    except ValueError as e:
        return _page({"mac": str(e)}, form, status=400)
    phone = prov.Phone(mac=mac, vendor=form.get("vendor", ""), extension=form.get("extension", ""),
                       model=form.get("model", "").strip(), label=form.get("label", "").strip())
    try:
        config_store().add_record(prov.TABLE, phone)
    except ValidationError as e:
        return _page(validation_errors(e), form, status=400)
    _audit("phone_enrolled", f"{mac} {phone.vendor} ext {phone.extension}")
    flash(f"Phone {mac} enrolled for extension {phone.extension}.", "ok")
    return redirect(url_for("provisioning.index") + f"#phone-{mac}")


@bp.post("/provisioning/import")
def import_csv():
    """CSV with a header: mac,vendor,extension[,model,label]. Each line is enrolled or refused
    with its reason; good lines are kept even when others are refused."""
    upload = request.files.get("csv_file")
    if upload is None or not upload.filename:
        return _page({"csv_file": "choose a CSV file (mac,vendor,extension,model,label)"}, status=400)
    raw = upload.read(256 * 1024 + 1)
    if len(raw) > 256 * 1024:
        return _page({"csv_file": "the file is larger than 256 kB"}, status=400)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return _page({"csv_file": "the file is not UTF-8 text"}, status=400)
    rows = list(csv.DictReader(io.StringIO(text)))
    report, added = [], 0
    for i, row in enumerate(rows, start=2):
        try:
            phone = prov.Phone(mac=prov.normalize_mac(row.get("mac", "")), vendor=(row.get("vendor") or "").strip().lower(),
                               extension=(row.get("extension") or "").strip(), model=(row.get("model") or "").strip(),
                               label=(row.get("label") or "").strip())
            config_store().add_record(prov.TABLE, phone)
            added += 1
        except ValueError as e:
            report.append(f"line {i}: {e}")
        except ValidationError as e:
            report.append(f"line {i}: " + "; ".join(f"{k}: {v}" for k, v in validation_errors(e).items()))
    _audit("phones_imported", f"{added} added, {len(report)} refused")
    if report:
        return _page(import_report=[f"{added} phone(s) enrolled; refused:"] + report, status=200 if added else 400)
    flash(f"{added} phone(s) enrolled.", "ok")
    return redirect(url_for("provisioning.index"))


def _phone_or_404(mac: str):
    phone = config_store().record(prov.TABLE, mac)
    if phone is None:
        abort(404)
    return phone


@bp.post("/provisioning/<mac>/approve")
def approve(mac: str):
    _phone_or_404(mac)
    config_store().update_record(prov.TABLE, mac, approved=True)
    _audit("phone_approved", mac)
    flash(f"Phone {mac} approved: it gets its configuration on its next request.", "ok")
    return redirect(url_for("provisioning.index"))


@bp.post("/provisioning/<mac>/reprovision")
def reprovision(mac: str):
    """New URL, new fetch credentials, new admin password for the phone's web page, and a new SIP
    secret for its extension: whatever a stolen config file held is worthless afterwards."""
    store = config_store()
    phone = _phone_or_404(mac)
    store.replace_record(prov.TABLE, phone.rotated())
    store.regenerate_secret(phone.extension)
    _audit("phone_reprovisioned", f"{mac} ext {phone.extension}")
    flash(f"Phone {mac}: new provisioning URL and credentials, new SIP password for extension "
          f"{phone.extension}. Give the phone its new URL (below).", "ok")
    return redirect(url_for("provisioning.index") + f"#phone-{mac}")


@bp.post("/provisioning/<mac>/http")
def allow_http(mac: str):
    """Let this phone fetch over plain HTTP (old firmware that refuses self-signed certificates,
    or a factory Poly). Its credentials then cross the LAN in clear: flagged on the page."""
    store = config_store()
    phone = _phone_or_404(mac)
    allow = request.form.get("allow") == "yes"
    settings = dict(phone.settings)
    if allow:
        settings["http_allowed"] = "yes"
    else:
        settings.pop("http_allowed", None)
    store.update_record(prov.TABLE, mac, settings=settings)
    _audit("phone_http", f"{mac} {'allowed' if allow else 'refused'}")
    flash(f"Phone {mac} {'may now fetch over plain HTTP' if allow else 'must use HTTPS'}.", "ok")
    return redirect(url_for("provisioning.index") + f"#phone-{mac}")


@bp.post("/provisioning/<mac>/delete")
def delete(mac: str):
    _phone_or_404(mac)
    config_store().remove_record(prov.TABLE, mac)
    _audit("phone_removed", mac)
    flash(f"Phone {mac} removed; its URL now answers 404.", "ok")
    return redirect(url_for("provisioning.index"))


@bp.post("/provisioning/profile")
def profile():
    scope = request.form.get("scope", "global")
    settings = {k: request.form.get(k, "").strip() for k in prov.DEFAULTS
                if request.form.get(k, "").strip() not in ("", None)}
    store = config_store()
    record = prov.Profile(scope, settings)
    try:
        if store.record(prov.PROFILES, scope) is None:
            store.add_record(prov.PROFILES, record)
        else:
            store.replace_record(prov.PROFILES, record)
    except ValidationError as e:
        return _page(validation_errors(e), status=400)
    _audit("provisioning_profile", scope)
    flash(f"Settings for {'every phone' if scope == 'global' else prov.VENDORS.get(scope, scope)} saved.", "ok")
    return redirect(url_for("provisioning.index") + "#profiles")
