"""CDR list with filters, paging and sortable columns, and the same filters as CSV."""
from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template, request

from webui.cdr import filters, query
from webui.paging import make_page, page_number
from webui.pbx import cdr_store, config_store, data_dir

bp = Blueprint("cdr", __name__, template_folder="templates", url_prefix="/cdr")

# column header -> ?sort= name (query.SORTS) and the direction a first click sorts in
COLUMNS = (("Start", "start", "desc"), ("From", "src", "asc"), ("To", "dst", "asc"),
           ("Result", "disposition", "asc"), ("Talk time", "billsec", "desc"),
           ("Duration", "duration", "desc"), ("Cause", "cause", "asc"), ("Cost", "cost", "desc"))


def site_zone() -> ZoneInfo:
    return ZoneInfo(config_store().settings().timezone)


@bp.get("")
def index():
    tz = site_zone()
    where, errors = filters.parse(request.args, tz)
    where.pop("limit", None)          # the page shows every call, a page at a time
    sort = request.args.get("sort", "start")
    if sort not in query.SORTS:
        sort = "start"
    descending = request.args.get("order", "desc") != "asc"
    total = 0 if errors else query.count(data_dir(), where)
    page = make_page(page_number(request.args.get("page")), total)
    records = [] if errors else query.page(data_dir(), where, sort, descending, page.size, page.offset)
    keep = {k: v for k, v in request.args.to_dict().items() if k not in ("page", "sort", "order", "limit")}
    rows = [filters.record_dict(r, tz) for r in records]
    counts = query.parts(data_dir(), [r["linkedid"] for r in rows]) if rows else {}
    for row in rows:
        row["parts"] = counts.get(row["linkedid"], 1)
    return render_template("cdr/index.html", records=rows,
                           args=request.args, keep=keep, errors=errors, page=page, sort=sort,
                           descending=descending, columns=COLUMNS,
                           dispositions=[("", "any")] + [(d, d.lower()) for d in filters.DISPOSITIONS]), \
        400 if errors else 200


@bp.get("/export.csv")
def export():
    tz = site_zone()
    where, errors = filters.parse(request.args, tz, default_limit=100_000)
    if errors:
        return Response("\n".join(f"{k}: {v}" for k, v in errors.items()) + "\n", status=400,
                        mimetype="text/plain")
    body = filters.to_csv(cdr_store().query(**where), tz)
    name = time.strftime("calls-%Y%m%d-%H%M%S.csv")
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
