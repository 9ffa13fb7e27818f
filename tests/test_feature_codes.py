"""The feature code list: every registered code, switched off or moved by the administrator, as
the router sees it; the README's table lists every registered code."""
from datetime import datetime
from pathlib import Path

import pytest

from firmware.config import ConfigStore, ValidationError
from firmware.config.model import Extension
from firmware.dialplan import Caller, ConfigView, FeatureCode, Reject, route_call
from firmware.dialplan.feature_codes import FEATURE_CODES
from firmware.features.codes import (README_END, README_START, TABLE, CodeOverride, effective_codes, rows,
                                     set_override)
from firmware.features.daynight import ToggleDayNight, code_of

NOW = datetime(2026, 12, 1, 10, 0)
ME = Caller("extension", "1000", "1000", "Alice")
README = Path(__file__).resolve().parents[1] / "README.md"


def view(*overrides):
    return ConfigView.of([Extension("1000", "Alice", "long-enough-secret"), Extension("1001", "Bob", "long-enough-secret")],
                         records={TABLE: overrides})


def test_without_overrides_the_registry_is_the_table():
    assert effective_codes(view()) is FEATURE_CODES
    assert isinstance(route_call("*78", ME, view(), NOW), FeatureCode)


def test_a_switched_off_code_is_not_a_feature_code_any_more():
    plan = route_call("*78", ME, view(CodeOverride("*78", enabled=False)), NOW)
    assert isinstance(plan, Reject) and plan.code == 404 and "not a feature code" in plan.reason


def test_a_moved_code_is_dialled_by_its_new_code_only_arguments_included():
    config = view(CodeOverride("*33", "*34"), CodeOverride("*72", "*172"))
    assert route_call("*34", ME, config, NOW) == ToggleDayNight("1", "1000")
    assert isinstance(route_call("*33", ME, config, NOW), Reject)
    plan = route_call("*1721001", ME, config, NOW)
    assert isinstance(plan, FeatureCode) and (plan.action, plan.argument) == ("forward_always", "extension:1001")
    assert code_of("2", config) == "*342"


def test_rows_show_every_registered_code_with_its_setting():
    table = {r.default: r for r in rows({"*33": CodeOverride("*33", "*34", enabled=True),
                                         "*8": CodeOverride("*8", enabled=False)})}
    assert set(table) == set(FEATURE_CODES)
    assert (table["*33"].code, table["*33"].dialled, table["*33"].enabled) == ("*34", "*34[NUM]", True)
    assert table["*8"].enabled is False and table["*72"].dialled == "*72NUM"


def test_set_override_refuses_clashes_and_bad_codes_and_forgets_the_default(tmp_path):
    store = ConfigStore(tmp_path)
    set_override(store, "*33", code="*34")
    assert store.record(TABLE, "*33") == CodeOverride("*33", "*34")
    with pytest.raises(ValidationError, match="already the code for 'Do not disturb on'"):
        set_override(store, "*33", code="*78")
    with pytest.raises(ValidationError, match="is not a feature code: '\\*' then"):
        set_override(store, "*33", code="34")
    with pytest.raises(ValidationError, match="'\\*99x' is not a feature code; known"):
        set_override(store, "*99x", enabled=False)
    set_override(store, "*34", enabled=False)              # named by what is dialled now
    assert store.record(TABLE, "*33") == CodeOverride("*33", "*34", enabled=False)
    set_override(store, "*78", code="*34")                 # *34 is free while *33 is off
    set_override(store, "*33", code="*33", enabled=True)   # back to the default: no record
    assert store.record(TABLE, "*33") is None


def test_the_readme_lists_every_registered_feature_code():
    text = README.read_text()
    assert README_START in text and README_END in text, "README.md lost its feature code markers"
    section = text[text.index(README_START):text.index(README_END)]
    missing = [r.dialled for r in rows({}) if f"`{r.dialled}`" not in section]
    assert not missing, (f"README.md's feature code table misses {missing}: "
                         "run `python -m services.codes_cli readme`")


def test_pbx_codes_lists_sets_and_refuses_with_one_error_line(tmp_path, capsys):
    from services.cli import main
    store = ConfigStore(tmp_path)
    store.add_extension("1000", "Alice")
    assert main(["codes", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(code in out for code in ("*78", "*72NUM", "*33[NUM]", "*32"))
    assert main(["codes", "set", "*33", "--code", "*34", "--data", str(tmp_path)]) == 0
    assert "*33: dialled as *34, on" in capsys.readouterr().out
    assert main(["codes", "set", "*32", "--off", "--data", str(tmp_path)]) == 0
    assert store.record(TABLE, "*32") == CodeOverride("*32", enabled=False)
    assert main(["codes", "set", "*79", "--code", "*34", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "already the code for" in err and err.count("\n") == 1
    assert main(["codes", "list", "--json", "--data", str(tmp_path)]) == 0
    import json
    listed = {r["default"]: r for r in json.loads(capsys.readouterr().out)}
    assert listed["*33"]["code"] == "*34" and listed["*32"]["enabled"] is False


def test_feature_code_page_lists_every_code_and_changes_one(tmp_path):
    from tests.browser.webui_env import admin_client, make_app, post
    data = tmp_path / "data"
    admin = admin_client(make_app(data), data)
    page = admin.get("/codes").text
    assert all(f'data-code="{code}"' in page for code in FEATURE_CODES)
    r = post(admin, "/codes", {"default": "*33", "code": "*34", "enabled": "on"})
    assert r.status_code == 302
    r = post(admin, "/codes", {"default": "*79", "code": "*34", "enabled": "on"})
    assert r.status_code == 400 and "already the code for" in r.text
    post(admin, "/codes", {"default": "*32", "code": "*32"})            # unchecked: off
    store = ConfigStore(data)
    assert store.record(TABLE, "*33") == CodeOverride("*33", "*34")
    assert store.record(TABLE, "*32") == CodeOverride("*32", enabled=False)
    assert "(default *33)" in admin.get("/codes").text
