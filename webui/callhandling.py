"""An extension's own call handling in the web UI and API: DND, the three forwards, and (for
administrators) the external caller ID. The same fields the feature codes *78/*79, *72/*73,
*90/*91 and *52/*53 change; the model (firmware/config/model.py) checks them.

One more check than the model's: a forward to an outside number must be one the extension's
owner may dial (the routing plan's own rule, firmware/dialplan/outbound.py), as *72NUM refuses
it with 403. Otherwise the forward would be saved and then silently ignored on every call.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from firmware.config.destination import destination_errors
from firmware.config.model import FORWARDS
from webui import destinations

FORWARD_LABELS = {"forward_always": "Forward every call", "forward_busy": "Forward when busy",
                  "forward_no_answer": "Forward when not answered"}
FORWARD_HINTS = {"forward_always": "the phone does not ring at all",
                 "forward_busy": "also while do-not-disturb is on",
                 "forward_no_answer": "also when the phone is off or not registered"}
USER_FIELDS = ("dnd", *FORWARDS)
ADMIN_FIELDS = (*USER_FIELDS, "external_caller_id", "department")


def form_changes(form, admin: bool) -> tuple[dict, dict[str, str]]:
    """The posted call-handling fields as update_extension() arguments, and form-only errors."""
    changes: dict = {"dnd": form.get("dnd") == "on"}
    errors: dict[str, str] = {}
    for name in FORWARDS:
        value, problem = destinations.form_value(name, form)
        changes[name] = value
        if problem:
            errors[name] = problem
    if admin:
        changes["external_caller_id"] = "".join(form.get("external_caller_id", "").split())
        if "department" in form:
            changes["department"] = form.get("department", "").strip()
    return changes, errors


def reach_errors(store, number: str, changes: dict) -> dict[str, str]:
    """Forwards to outside numbers that `number` may not dial (no route, a route it may not use,
    an emergency number), as {field: reason}. Only forwards being changed are checked, so an old
    forward never stops an unrelated save."""
    wanted = {f: v for f, v in changes.items() if f in FORWARDS and isinstance(v, str) and v.startswith("external:")}
    current = store.get_extension(number)
    wanted = {f: v for f, v in wanted.items() if current is None or getattr(current, f) != v}
    if not wanted:
        return {}
    from firmware.dialplan.context import Context
    from firmware.dialplan.outbound import dial_out
    from firmware.dialplan.plan import Dial
    from firmware.dialplan.views import Caller, RuntimeView, config_view
    ctx = Context(Caller("extension", number), config_view(store), RuntimeView(), datetime.now(timezone.utc),
                  dial_as=number)
    errors = {}
    for field, value in wanted.items():
        if destination_errors(field, value, forward=True):
            continue             # the model names what is wrong with it
        target = value.partition(":")[2]
        plan = dial_out(target, ctx)
        if not isinstance(plan, Dial):
            errors[field] = f"extension {number} cannot dial {target} ({plan.reason}), so calls cannot be " \
                            "forwarded there: add or allow an outbound route first"
        elif plan.emergency:
            errors[field] = f"calls cannot be forwarded to the emergency number {target}"
    return errors


def check(store, ext, changes: dict, errors: dict[str, str]) -> dict[str, str]:
    """Every problem with `changes` to `ext` at once: the form's own (`errors`), the reach of
    outside forwards, and, once anything is wrong, the model's reasons for the other fields
    (so a second save does not bring up the next error)."""
    errors = dict(errors)
    for k, v in reach_errors(store, ext.number, changes).items():
        errors.setdefault(k, v)
    if errors:
        from firmware.config import ValidationError
        from webui.pbx import validation_errors
        try:
            dataclasses.replace(ext, **{k: v for k, v in changes.items() if v is not None}).validate()
        except ValidationError as e:
            for k, v in validation_errors(e).items():
                errors.setdefault(k, v)
    return errors


def template_args(store, ext, values: dict | None = None, form=None) -> dict:
    """What templates/_call_handling.html needs: a DestinationField per forward (the posted
    ones after a failed save), the kinds an extension may forward to and the extensions to pick."""
    fields = {}
    for name in FORWARDS:
        if form is not None:
            fields[name] = destinations.DestinationField.from_form(name, form)
        else:
            fields[name] = destinations.DestinationField.of(name, getattr(ext, name) if ext else "")
    dnd = (form.get("dnd") == "on") if form is not None else bool(ext and ext.dnd)
    caller_id = (form.get("external_caller_id", "") if form is not None
                 else (ext.external_caller_id if ext else ""))
    department = (form.get("department", "") if form is not None else (ext.department if ext else ""))
    return {"forwards": fields, "forward_labels": FORWARD_LABELS, "forward_hints": FORWARD_HINTS,
            "forward_kinds": destinations.kinds(forward=True), "dnd": dnd, "external_caller_id": caller_id,
            "department": department,
            "dest_choices": destinations.choices(store, exclude=ext.number if ext else "")}
