"""Reports pages: /reports (charts and tables), /reports.csv, /reports/print.

The numbers come from webui/reports/data.py (the CDR) through firmware/rating/reports.py; the same
report is GET /api/v1/reports in the REST API. Charts are drawn in the browser by Chart.js
(webui/static/vendor, decision 011) from the report's JSON in a data block of the page.
"""
from __future__ import annotations

import time
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, render_template, request

from webui.pbx import config_store, data_dir
from webui.reports import data

bp = Blueprint("reports", __name__, template_folder="templates")

TITLES = {"day": "per day", "week": "per week", "month": "per month"}


def current_report(args):
    store = config_store()
    tz = ZoneInfo(store.settings().timezone)
    since, until, group, errors = data.parse_range(args, tz)
    extensions = store.extensions()
    names = {e.number: e.name for e in extensions}
    departments = {e.number: e.department for e in extensions if e.department}
    started = time.perf_counter()
    report = data.build(data_dir(), since, until, tz, group, names=names, departments=departments)
    report["built_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return report, errors


@bp.get("/reports")
def index():
    report, errors = current_report(request.args)
    return render_template("reports/index.html", report=report, errors=errors, titles=TITLES,
                           args={k: v for k, v in request.args.items() if k in ("since", "until", "group")})


@bp.get("/reports/print")
def printable():
    report, errors = current_report(request.args)
    return render_template("reports/print.html", report=report, errors=errors, titles=TITLES)


@bp.get("/reports.csv")
def csv_export():
    report, errors = current_report(request.args)
    name = f"calls-{report['since']}-{report['until']}-{report['group']}.csv"
    return Response(data.to_csv(report), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
