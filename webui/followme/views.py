"""Follow Me pages: the admin's list of extensions and a form per extension; the user's own form
(/followme/me, the extension taken from the login, never from the URL)."""
from __future__ import annotations

from flask import Blueprint, current_app, flash, g, redirect, render_template, request, url_for

from firmware.config import ValidationError
from firmware.features.followme import TABLE, FollowMe, parse_leg
from webui.auth import guard
from webui.pbx import config_store, validation_errors

bp = Blueprint("followme", __name__, template_folder="templates", url_prefix="/followme")


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _values(fm: FollowMe | None, number: str) -> dict:
    fm = fm or FollowMe(number, destinations=(f"extension:{number} 15",))
    return {"enabled": fm.enabled, "together": fm.together, "confirm": fm.confirm, "announce": fm.announce,
            "destinations": "\n".join(f"{leg.number} {leg.timeout}" + (f" {leg.delay}" if leg.delay else "")
                                      for leg in fm.destinations)}


def _form(number: str, back: str, action: str):
    store = config_store()
    ext = store.get_extension(number)
    if ext is None:
        return guard.refuse(404, f"no extension {number}")
    existing = store.record(TABLE, number)
    values, errors = _values(existing, number), {}
    if request.method == "POST":
        values = {"enabled": request.form.get("enabled") == "on", "together": request.form.get("mode") == "together",
                  "confirm": request.form.get("confirm") == "on", "announce": request.form.get("announce", "callerid"),
                  "destinations": request.form.get("destinations", "")}
        legs = []
        for line in values["destinations"].splitlines():
            if line.strip():
                try:
                    legs.append(parse_leg(line.strip()))
                except ValueError as e:
                    errors.setdefault("destinations", str(e))
        if not errors:
            problem = _unreachable(store, number, legs)
            if problem:
                errors["destinations"] = problem
        if not errors:
            record = FollowMe(number, values["enabled"], tuple(legs), values["together"], values["confirm"],
                              values["announce"])
            try:
                if existing is None:
                    store.add_record(TABLE, record)
                else:
                    store.replace_record(TABLE, record)
            except ValidationError as e:
                errors = validation_errors(e)
        if not errors:
            _audit("follow_me_changed", f"extension {number}: {'on' if values['enabled'] else 'off'}")
            flash(f"Follow Me {'on' if values['enabled'] else 'off'} for {number}: it applies to the next call.", "ok")
            return redirect(back)
    return render_template("followme/form.html", ext=ext, values=values, errors=errors, action=action,
                           back=back), 400 if errors else 200


def _unreachable(store, number: str, legs) -> str:
    """Why an outside number of the list cannot be rung with the extension's own permissions ("")."""
    from datetime import datetime, timezone

    from firmware.dialplan.context import Context
    from firmware.dialplan.outbound import dial_out
    from firmware.dialplan.plan import Dial
    from firmware.dialplan.views import Caller, RuntimeView, config_view
    ctx = Context(Caller("extension", number), config_view(store), RuntimeView(), datetime.now(timezone.utc),
                  dial_as=number)
    for leg in legs:
        if not leg.external:
            continue
        plan = dial_out(leg.number, ctx)
        if not isinstance(plan, Dial):
            return f"extension {number} cannot dial {leg.number} ({plan.reason}): add or allow an outbound route first"
        if plan.emergency:
            return f"Follow Me cannot ring the emergency number {leg.number}"
    return ""


@bp.get("")
def index():
    store = config_store()
    settings = {fm.extension: fm for fm in store.records(TABLE)}
    return render_template("followme/index.html", extensions=store.extensions(), settings=settings)


@bp.route("/<number>", methods=["GET", "POST"])
def edit(number: str):
    return _form(number, url_for("followme.index"), url_for("followme.edit", number=number))


@bp.route("/me", methods=["GET", "POST"])
@guard.user_allowed
def mine():
    if not g.user.extension:
        return guard.refuse(404, "this account has no extension")
    return _form(g.user.extension, url_for("followme.mine"), url_for("followme.mine"))
