"""Call queue pages: the queues (list, form), their statistics with charts and CSV export, the
wallboard for a TV (live over SSE), the agent's own page (log in / out, pause), and the REST API
under /api/v1/queues.

Statistics are firmware.features.queues_stats over the queue log (DATA/queue_log.sqlite, beside
the CDRs); the live part (callers waiting, agents' states) is the call service's status
("queues"), read through the control socket as the dashboard does.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import time
from datetime import date, datetime

from flask import (Blueprint, Response, current_app, flash, g, jsonify, redirect, render_template, request,
                   url_for)

from firmware.config import ValidationError
from firmware.features import queues as model
from firmware.features.queues import AgentLogin, Queue, parse_member
from firmware.features.queues_stats import agent_stats, daily, day_bounds, hourly, queue_stats
from firmware.queue_log import QueueLog
from webui import destinations
from webui.auth import guard
from webui.pbx import config_store, data_dir, pbx_status, validation_errors

logger = logging.getLogger(__name__)

bp = Blueprint("queues", __name__, template_folder="templates")
DESTS = ("max_wait_destination", "max_callers_destination", "empty_destination", "exit_destination")
NUMBERS = ("agent_timeout", "retry", "wrap_up", "max_no_answer", "max_wait", "max_callers", "announce_every",
           "periodic_every", "service_level")
FLAGS = ("join_empty", "leave_when_empty", "announce_position", "announce_wait", "announce_to_agent")
TEXTS = ("number", "name", "strategy", "music_class", "periodic_announcement", "exit_key", "caller_id_prefix")
MAX_RANGE_DAYS = 366
STATE_LABELS = {"available": "available", "ringing": "ringing", "on_call": "on call", "wrap_up": "wrap-up",
                "paused": "paused", "logged_out": "logged out", "busy": "on another call"}


def _audit(event: str, detail: str) -> None:
    current_app.extensions["pbx.accounts"].audit(event, g.user.username, guard.client_address(), detail)


def _zone():
    from webui.cdr.views import site_zone
    return site_zone()


def _live() -> dict[str, dict]:
    """The call service's queue state by number ({} when the PBX is not running)."""
    return {q["number"]: q for q in pbx_status().get("queues") or [] if isinstance(q, dict)}


def _events(since: float, until: float):
    with QueueLog(data_dir()) as log:
        return log.events(since, until)


# --- the range of a statistics page --------------------------------------------------------------
class RangeError(ValueError):
    pass


def _parse_range(args) -> tuple[date, date]:
    today = datetime.now(_zone()).date()

    def day(name: str, default: date) -> date:
        text = (args.get(name) or "").strip()
        if not text:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise RangeError(f"{name}: {text!r} is not a date; write it as YYYY-MM-DD, e.g. {today.isoformat()}") \
                from None
    first, last = day("from", today), day("to", today)
    if last < first:
        raise RangeError(f"to: {last} is before from {first}: swap them")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise RangeError(f"from/to: at most {MAX_RANGE_DAYS} days at once; pick a shorter range")
    return first, last


def report(first: date, last: date, queue: str | None = None) -> dict:
    """Everything the statistics page, the CSV and the API show for a range of days."""
    zone = _zone()
    since = day_bounds(first, zone)[0]
    until = min(day_bounds(last, zone)[1], time.time() + 1)
    until = max(until, since)
    events = _events(since, until)
    if queue:
        events = [e for e in events if e.queue in (queue, "")]
    queues = {q.number: q for q in config_store().records(model.TABLE)}
    stats = queue_stats(events, {n: q.service_level for n, q in queues.items()})
    for number in queues:
        if queue in (None, number):
            stats.setdefault(number, _empty(number, queues[number].service_level))
    static = {n: [m.extension for m in q.members] for n, q in queues.items()}
    agents = agent_stats(events, since, until, static, queue=queue)
    names = {e.number: e.name for e in config_store().extensions()}
    return {
        "from": first.isoformat(), "to": last.isoformat(), "queue": queue or "",
        "queues": [dict(stats[n].as_dict(), name=queues[n].name if n in queues else "(deleted)")
                   for n in sorted(stats, key=lambda n: (len(n), n)) if n],
        "agents": [dict(a.as_dict(), name=names.get(a.agent, "")) for a in
                   sorted(agents.values(), key=lambda a: (len(a.agent), a.agent))],
        "days": daily(events, zone, first, last),
        "hours": hourly(events, zone),
    }


def _empty(number: str, sl: int):
    from firmware.features.queues_stats import QueueStats
    return QueueStats(number, service_level_s=sl)


# --- the queues ----------------------------------------------------------------------------------
@bp.get("/queues")
def index():
    store = config_store()
    today = datetime.now(_zone()).date()
    rep = report(today, today)
    by_number = {q["queue"]: q for q in rep["queues"]}
    return render_template("queues/index.html", queues=store.records(model.TABLE), stats=by_number, live=_live(),
                           labels=model.STRATEGY_LABELS, states=STATE_LABELS)


def _values(q: Queue | None) -> dict:
    q = q or Queue("", "")
    values = {k: getattr(q, k) for k in TEXTS + NUMBERS + FLAGS + DESTS}
    values["members"] = "\n".join(f"{m.extension} {m.penalty}" if m.penalty else m.extension for m in q.members)
    return values


def _posted() -> tuple[dict, dict]:
    form = request.form
    values = {k: form.get(k, "").strip() for k in TEXTS}
    values["members"] = form.get("members", "")
    errors: dict[str, str] = {}
    for k in NUMBERS:
        text = form.get(k, "").strip()
        values[k] = text
        if not text.isdigit():
            errors[k] = f"{text!r} is not a whole number of seconds (0 or more)" if text else "required"
        else:
            values[k] = int(text)
    for k in FLAGS:
        values[k] = form.get(k) in ("on", "true", "1")
    for k in DESTS:
        values[k], problem = destinations.form_value(k, form)
        if problem:
            errors[k] = problem
    return values, errors


def _record(values: dict, errors: dict) -> Queue | None:
    members = []
    for line in values["members"].replace(";", "\n").splitlines():
        if line.strip():
            try:
                members.append(parse_member(line))
            except ValueError as e:
                errors.setdefault("members", str(e))
    if errors:
        return None
    record = Queue(**{k: values[k] for k in TEXTS + NUMBERS + FLAGS + DESTS}, members=tuple(members))
    try:
        record.validate()
    except ValidationError as e:
        errors.update({k: v for k, v in validation_errors(e).items() if k not in errors})
        return None
    return record


def _render(values, errors, q, form=None):
    store = config_store()
    dests = {n: (destinations.DestinationField.from_form(n, form) if form is not None
                 else destinations.DestinationField.of(n, values[n])) for n in DESTS}
    return render_template("queues/form.html", values=values, errors=errors, q=q, dests=dests,
                           kinds=destinations.kinds(), choices=destinations.choices(store),
                           strategies=[(s, model.STRATEGY_LABELS[s]) for s in model.STRATEGIES]), \
        400 if errors else 200


def _save(existing: Queue | None):
    values, errors = _posted()
    if existing is not None:
        values["number"] = existing.number
    record = _record(values, errors)
    if record is not None:
        try:
            (config_store().add_record if existing is None else config_store().replace_record)(model.TABLE, record)
        except ValidationError as e:
            errors.update(validation_errors(e))
            record = None
    return values, errors, record


@bp.route("/queues/new", methods=["GET", "POST"])
def new():
    if request.method == "POST":
        values, errors, record = _save(None)
        if record is not None:
            _audit("queue_added", f"{record.number} {record.name}")
            flash(f"Queue {record.number} added: dial {record.number} or use the destination 'Queue "
                  f"{record.number}'.", "ok")
            return redirect(url_for("queues.edit", number=record.number))
        return _render(values, errors, None, request.form)
    return _render(_values(None), {}, None)


@bp.route("/queues/<number>", methods=["GET", "POST"])
def edit(number: str):
    q = config_store().record(model.TABLE, number)
    if q is None:
        return guard.refuse(404, f"no queue {number}")
    if request.method == "POST":
        values, errors, record = _save(q)
        if record is not None:
            _audit("queue_changed", number)
            flash(f"Queue {number} saved.", "ok")
            return redirect(url_for("queues.edit", number=number))
        return _render(values, errors, q, request.form)
    return _render(_values(q), {}, q)


@bp.get("/queues/<number>/delete")
def delete_confirm(number: str):
    q = config_store().record(model.TABLE, number)
    if q is None:
        return guard.refuse(404, f"no queue {number}")
    return render_template("confirm.html", title=f"Delete queue {number}", what=f"queue {number} ({q.name})",
                           blockers=[], consequences=["callers can no longer be sent to it",
                                                      "its statistics stay in the queue log"],
                           action=url_for("queues.delete", number=number),
                           back=url_for("queues.edit", number=number))


@bp.post("/queues/<number>/delete")
def delete(number: str):
    try:
        config_store().remove_record(model.TABLE, number)
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("queues.edit", number=number))
    _audit("queue_removed", number)
    flash(f"Queue {number} deleted.", "ok")
    return redirect(url_for("queues.index"))


# --- statistics -----------------------------------------------------------------------------------
@bp.get("/queues/stats")
def stats():
    queue = request.args.get("queue", "").strip() or None
    try:
        first, last = _parse_range(request.args)
    except RangeError as e:
        today = datetime.now(_zone()).date()
        return render_template("queues/stats.html", report=report(today, today), error=str(e),
                               args=request.args, queues=config_store().records(model.TABLE)), 400
    return render_template("queues/stats.html", report=report(first, last, queue), error="", args=request.args,
                           queues=config_store().records(model.TABLE))


def _csv(rows: list[dict], columns: list[str], name: str) -> Response:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])
    return Response(out.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f"attachment; filename={name}"})


QUEUE_COLUMNS = ["queue", "name", "offered", "answered", "abandoned", "timed_out", "exited_with_key", "exited_empty",
                 "refused", "within_service_level", "service_level_s", "service_level", "average_wait",
                 "longest_wait", "average_talk"]
AGENT_COLUMNS = ["agent", "name", "answered", "not_answered", "talk", "average_talk", "logged_in", "paused",
                 "occupancy"]


@bp.get("/queues/stats.csv")
def stats_csv():
    try:
        first, last = _parse_range(request.args)
    except RangeError as e:
        return guard.refuse(400, str(e))
    rep = report(first, last, request.args.get("queue", "").strip() or None)
    what = request.args.get("what", "queues")
    if what == "agents":
        return _csv(rep["agents"], AGENT_COLUMNS, f"queue-agents-{rep['from']}-{rep['to']}.csv")
    if what != "queues":
        return guard.refuse(400, f"what: {what!r} is not a report; use queues or agents")
    return _csv(rep["queues"], QUEUE_COLUMNS, f"queues-{rep['from']}-{rep['to']}.csv")


# --- the wallboard --------------------------------------------------------------------------------
def wallboard_state() -> dict:
    status = pbx_status()
    today = datetime.now(_zone()).date()
    rep = {q["queue"]: q for q in report(today, today)["queues"]}
    live = {q["number"]: q for q in status.get("queues") or [] if isinstance(q, dict)}
    queues = []
    for q in config_store().records(model.TABLE):
        now_q = live.get(q.number, {})
        st = rep.get(q.number, {})
        queues.append({"number": q.number, "name": q.name, "waiting": now_q.get("waiting", 0),
                       "longest_wait": now_q.get("longest_wait", 0),
                       "service_level": st.get("service_level"), "service_level_s": q.service_level,
                       "answered": st.get("answered", 0), "abandoned": st.get("abandoned", 0),
                       "offered": st.get("offered", 0),
                       "agents": [dict(a, label=STATE_LABELS.get(a.get("state"), a.get("state")))
                                  for a in now_q.get("agents", [])]})
    return {"running": status["running"], "reason": status.get("reason", ""), "queues": queues,
            "at": time.time()}


@bp.get("/queues/wallboard")
@guard.user_allowed
def wallboard():
    return render_template("queues/wallboard.html", state=wallboard_state())


@bp.get("/queues/wallboard/stream")
@guard.user_allowed
def wallboard_stream():
    poll = float(current_app.config["STATUS_POLL_SECONDS"])
    lifetime = float(current_app.config["STREAM_MAX_SECONDS"])
    app = current_app._get_current_object()

    def events():
        deadline = time.monotonic() + lifetime
        last_key, last_sent = None, time.monotonic()
        yield "retry: 2000\n\n"
        while time.monotonic() < deadline:
            with app.app_context():
                try:
                    state = wallboard_state()
                except Exception as e:   # a bad config file: say so on the board, keep the stream alive
                    logger.warning("wallboard state failed: %s", e)
                    state = {"running": False, "reason": f"cannot read state: {e}", "queues": []}
            key = json.dumps({k: v for k, v in state.items() if k != "at"}, sort_keys=True)
            if key != last_key:
                last_key, last_sent = key, time.monotonic()
                yield f"event: queues\ndata: {json.dumps(state)}\n\n"
            elif time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": keepalive\n\n"
            time.sleep(poll)

    return Response(events(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


# --- the agent's own page -------------------------------------------------------------------------
def _agent_change(extension: str, action: str, queue: str = "", reason: str = "") -> str:
    """Log in / out of a queue, pause / unpause: the config (the call service follows it) and the
    queue log, as *45/*46/*47 do from the phone."""
    store = config_store()
    current = store.record(model.AGENTS_TABLE, extension)
    if action in ("login", "logout"):
        q = store.record(model.TABLE, queue)
        if q is None:
            raise ValidationError("queue", f"no queue {queue}: pick one from the list")
        if extension in {m.extension for m in q.members}:
            return f"You are a permanent member of queue {queue} ({q.name})."
        record = (model.login if action == "login" else model.logout)(current, extension, queue)
        event = "AGENTLOGIN" if action == "login" else "AGENTLOGOFF"
        changed = (queue in (current.queues if current else ())) != (queue in record.queues)
        words = f"{'Logged in to' if action == 'login' else 'Logged out of'} queue {queue} ({q.name})."
    else:
        paused = action == "pause"
        reason = (reason or "paused") if paused else ""
        record = AgentLogin(extension, current.queues if current else (), paused, reason)
        event = "PAUSE" if paused else "UNPAUSE"
        changed = bool(current and current.paused) != paused or (paused and current and current.reason != reason)
        queue = ""
        words = f"Paused ({reason})." if paused else "Unpaused: queue calls come to you again."
    (store.add_record if current is None else store.replace_record)(model.AGENTS_TABLE, record)
    if changed:
        with QueueLog(data_dir()) as log:
            log.write(queue, event, agent=extension, data=(reason,) if event == "PAUSE" else ())
    return words


@bp.get("/queues/agent")
@guard.user_allowed
def agent():
    number = g.user.extension
    store = config_store()
    login = store.record(model.AGENTS_TABLE, number) if number else None
    live = {}
    for q in _live().values():
        for a in q.get("agents", []):
            if a.get("extension") == number:
                live = a
    rows = [(q, number in {m.extension for m in q.members}, bool(login and q.number in login.queues))
            for q in store.records(model.TABLE)]
    return render_template("queues/agent.html", number=number, rows=rows, login=login, live=live,
                           reasons=[(v, v) for k, v in model.PAUSE_REASONS.items() if k not in ("", "9")],
                           states=STATE_LABELS)


@bp.post("/queues/agent")
@guard.user_allowed
def agent_post():
    number = g.user.extension
    if not number:
        return guard.refuse(404, "this account has no extension: an agent logs in with their own extension's account")
    action = request.form.get("action", "")
    if action not in ("login", "logout", "pause", "unpause"):
        return guard.refuse(400, f"action: {action!r}; use login, logout, pause or unpause")
    try:
        words = _agent_change(number, action, request.form.get("queue", "").strip(),
                              request.form.get("reason", "").strip()[:40])
    except ValidationError as e:
        flash(e.message, "error")
        return redirect(url_for("queues.agent"))
    _audit(f"queue_agent_{action}", f"extension {number} {request.form.get('queue', '')}".strip())
    flash(words, "ok")
    return redirect(url_for("queues.agent"))


# --- REST API -------------------------------------------------------------------------------------
def _api_range():
    try:
        return _parse_range(request.args), None
    except RangeError as e:
        return None, guard.api_error(400, str(e), [{"field": "from/to", "message": str(e)}])


@bp.get("/api/v1/queues")
def api_queues():
    live = _live()
    out = []
    for q in config_store().records(model.TABLE):
        d = {k: getattr(q, k) for k in TEXTS + NUMBERS + FLAGS + DESTS}
        d["members"] = [{"extension": m.extension, "penalty": m.penalty} for m in q.members]
        d["live"] = live.get(q.number)
        out.append(d)
    return jsonify(queues=out)


@bp.get("/api/v1/queues/stats")
def api_stats():
    rng, error = _api_range()
    if error is not None:
        return error
    return jsonify(report(*rng, request.args.get("queue", "").strip() or None))


@bp.get("/api/v1/queues/log")
def api_log():
    rng, error = _api_range()
    if error is not None:
        return error
    zone = _zone()
    since, until = day_bounds(rng[0], zone)[0], day_bounds(rng[1], zone)[1]
    return jsonify(events=[e.as_dict() for e in _events(since, until)])


@bp.get("/api/v1/queues/wallboard")
@guard.user_allowed
def api_wallboard():
    return jsonify(wallboard_state())

