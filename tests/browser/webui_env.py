"""Helpers shared by the web UI tests: an app on a temporary data directory, a client that
sends the CSRF token like the pages do, the real control socket answering "status", and the
real web process (`python -m webui`) on a free loopback port."""
from __future__ import annotations

import asyncio
import html as html_mod
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from services.control import ControlServer
from tests.pbxproc import ROOT, free_port
from webui import create_app
from webui.wizard import setup_code

ADMIN_PASSWORD = "Correct-Horse-42"
USER_PASSWORD = "phone-user-pass-7"


def make_app(data_dir: Path, **config):
    app = create_app(data_dir, {"TESTING": True, **config})
    return app


def csrf(client) -> str:
    for page in ("/login", "/setup"):   # before first-boot setup only the wizard renders a form
        with client.session_transaction() as s:
            if "csrf" in s:
                return s["csrf"]
        client.get(page)
    with client.session_transaction() as s:
        return s.get("csrf", "")


def post(client, url: str, data: dict | None = None, **kw):
    data = dict(data or {})
    data.setdefault("csrf_token", csrf(client))
    return client.post(url, data=data, **kw)


def api(client, method: str, url: str, token: str | None = None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    else:
        headers["X-CSRF-Token"] = csrf(client)
    return client.open(url, method=method, headers=headers, **kw)


def complete_setup(client, data_dir: Path, password: str = ADMIN_PASSWORD):
    client.get("/setup")
    r = post(client, "/setup", {"setup_code": setup_code.read(data_dir), "password": password,
                                "password2": password})
    assert r.status_code == 302 and r.location.endswith("/setup/site"), r.text
    return r


def login(client, username: str, password: str):
    client.get("/login")
    return post(client, "/login", {"username": username, "password": password})


def admin_client(app, data_dir: Path):
    client = app.test_client()
    complete_setup(client, data_dir)
    return client


def user_client(app, number: str, password: str = USER_PASSWORD):
    accounts = app.extensions["pbx.accounts"]
    if accounts.get(number) is None:
        accounts.create(number, password, "user", extension=number)
    client = app.test_client()
    r = login(client, number, password)
    assert r.status_code == 302, r.text
    return client


def form_error(html: str, field: str) -> str | None:
    m = re.search(rf'<span class="error" id="e-{re.escape(field)}">([^<]*)</span>', html)
    return html_mod.unescape(m.group(1)) if m else None


@contextmanager
def control_socket(data_dir: Path, status: dict):
    """The PBX's real control socket (services.control.ControlServer) answering `status`
    with the dict given; the test changes the dict to change what the PBX reports."""
    loop = asyncio.new_event_loop()

    async def handle(_args):
        return json.loads(json.dumps(status))

    server = ControlServer(data_dir, {"status": handle})
    ready = threading.Event()

    def run():
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(5), "control server did not start"
    try:
        yield status
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


class WebProcess:
    """`python -m webui` as `pbx run` starts it, on a free loopback port."""

    def __init__(self, data_dir: Path):
        self.data = Path(data_dir)
        self.data.mkdir(parents=True, exist_ok=True)
        self.port = free_port(both=False, kind=__import__("socket").SOCK_STREAM)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.data / "webui.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> "WebProcess":
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webui", "--data", str(self.data), "--host", "127.0.0.1",
             "--port", str(self.port)], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"web UI exited: {self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"web UI did not answer in {timeout} s: {self.log_path.read_text()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc:
            self._log.close()


# ----- walking every route (the access-rule and attack sweeps) ----------------------------------------
# Endpoints reachable without a login; each checks its caller itself where it serves anything private.
PUBLIC_ENDPOINTS = {
    "auth.login", "auth.login_post", "auth.logout", "auth.health", "static", "wizard.admin",
    "provisioning.fetch",          # phones: their own token and credentials, checked by the view
    "phonebook.directory_file",    # phones: the extension's SIP credentials or the phonebook token
    "voicemail.listen",            # a message's signed, expiring link from its e-mail
}
# A realistic value for a route argument by name; any other argument gets a plain one by its type.
SAMPLE_ARGS = {"number": "201", "name": "carrier", "did": "5550100", "ident": "x", "token_id": 1,
               "filename": "style.css", "token": "Zm9vYmFyYmF6cXV4cXV1eA", "mac": "001565abcdef",
               "version": 1, "scope": "site", "contact_id": "c0ffee01", "vendor": "yealink", "fmt": "csv"}


def route_args(rule) -> dict:
    from werkzeug.routing import IntegerConverter
    return {a: SAMPLE_ARGS.get(a, 1 if isinstance(rule._converters.get(a), IntegerConverter) else "x1")
            for a in rule.arguments}


def every_route(app):
    """(endpoint, method, url) for every rule in the app, with sample values for its arguments."""
    for rule in app.url_map.iter_rules():
        url = rule.build(route_args(rule), append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url
