"""What an idle web UI holds: numpy (about 15 MB) and cryptography (about 14 MB) are imported only
when a page needs them (an audio upload or playback, a certificate made or uploaded), not by the
pages an admin opens every day (issue 16: idle memory). Each check runs in a fresh interpreter."""
from __future__ import annotations

import subprocess
import sys

from tests.pbxproc import ROOT

PROBE = """
import sys, tempfile
from pathlib import Path
from tests.browser.webui_env import admin_client, make_app
data = Path(tempfile.mkdtemp())
app = make_app(data)
client = admin_client(app, data)
for page in {pages!r}:
    r = client.get(page)
    assert r.status_code == 200, (page, r.status_code)
print(sorted(m for m in ("numpy", "cryptography") if m in sys.modules))
"""


def _loaded_after(pages: list[str]) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(pages=pages)], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return eval(out.stdout.strip().splitlines()[-1])


def test_everyday_pages_import_neither_numpy_nor_cryptography():
    assert _loaded_after(["/dashboard", "/extensions", "/cdr", "/moh", "/prompts", "/voicemail"]) == []


def test_the_probe_sees_an_import_when_a_page_makes_one():
    # the HTTPS page shows the certificate, which cryptography reads: the probe must see that
    assert _loaded_after(["/https"]) == ["cryptography"]
