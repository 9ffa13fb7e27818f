"""Shared fixtures: the real PBX started on free loopback ports in a temporary data directory."""

import pytest

from tests.pbxproc import PbxProcess

EXTENSIONS = [str(n) for n in range(1000, 1040)]


@pytest.fixture(scope="module")
def pbx(tmp_path_factory):
    """A running PBX (Kamailio edge + call service) with extensions 1000-1039, shared by a module."""
    proc = PbxProcess(tmp_path_factory.mktemp("pbx"), extensions=EXTENSIONS,
                      settings={"busy_tone_seconds": 2, "no_answer_timeout": 30})
    proc.start()
    yield proc
    proc.stop()


# The web UI's specs: an app on a temporary data directory, and an admin who finished the
# first-boot wizard (tests/browser/webui_env.py). A spec that needs other settings defines its own.
@pytest.fixture
def data(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def app(data):
    from tests.browser.webui_env import make_app
    return make_app(data)


@pytest.fixture
def admin(app, data):
    from tests.browser.webui_env import admin_client
    return admin_client(app, data)
