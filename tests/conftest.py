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
