"""CDR list with filters and the same filters as CSV."""
from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template, request

from webui.cdr import filters
from webui.pbx import cdr_store, config_store

bp = Blueprint("cdr", __name__, template_folder="templates", url_prefix="/cdr")


def site_zone() -> ZoneInfo:
    return ZoneInfo(config_store().settings().timezone)


@bp.get("")
def index():
    tz = site_zone()
    query, errors = filters.parse(request.args, tz)
    records = [] if errors else cdr_store().query(**query)
    return render_template("cdr/index.html", records=[filters.record_dict(r, tz) for r in records],
                           args=request.args, errors=errors, dispositions=[("", "any")] + [(d, d.lower()) for d in filters.DISPOSITIONS],
                           limit=query["limit"]), 400 if errors else 200


@bp.get("/export.csv")
def export():
    tz = site_zone()
    query, errors = filters.parse(request.args, tz, default_limit=100_000)
    if errors:
        return Response("\n".join(f"{k}: {v}" for k, v in errors.items()) + "\n", status=400,
                        mimetype="text/plain")
    body = filters.to_csv(cdr_store().query(**query), tz)
    name = time.strftime("calls-%Y%m%d-%H%M%S.csv")
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
