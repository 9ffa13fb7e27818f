"""Paging groups page: each group's number and members; a form to create or edit one; deletion
after a confirmation. Intercom to one extension needs no setup: `*80` then its number."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from firmware.features import paging as model
from webui.pbx import config_store
from webui.record_pages import record_pages

bp = Blueprint("pagegroups", __name__, template_folder="templates", url_prefix="/paging")


@bp.get("")
def index():
    store = config_store()
    return render_template("pagegroups/index.html", groups=store.records(model.TABLE),
                           names={e.number: e.name for e in store.extensions()}, code=model.INTERCOM_CODE)


def _from_form(number: str) -> model.PagingGroup:
    f = request.form
    text = f.get("ring_time", "").strip()
    try:
        ring = int(text) if text else 10
    except ValueError:
        ring = text
    return model.PagingGroup(number=number, name=f.get("name", "").strip(),
                             members=tuple(dict.fromkeys(f.get("members", "").replace(",", " ").split())),
                             ring_time=ring)


def _form(group, errors, new):
    return render_template("pagegroups/form.html", group=group, errors=errors, new=new,
                           ring=model.RING_S), 400 if errors else 200


record_pages(bp, table=model.TABLE, noun="paging group", event="paging_group",
             blank=lambda: model.PagingGroup("", ""), from_form=_from_form, form=_form,
             created="dial {number} to page it.",
             deleted=lambda group: f"dialling {group.number} no longer pages {len(group.members)} phone(s)")
