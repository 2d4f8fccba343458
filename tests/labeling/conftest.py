"""The `argilla_server` fixture: one real embedded Argilla (server, rq worker, Redis) for the whole test session.

It runs in a temporary home on a free port and is stopped at the end. `argilla_server_postgresql` is a second one
whose data lives in a real PostgreSQL server (Debian's `postgresql`, started here in a temporary folder, password
authentication on 127.0.0.1); `backend_server` runs a test module once on each (the search backend's conformance).
The argilla-server venv is the shared one (`WORKBENCH_ARGILLA_VENV` or
~/.cache/workbench/venvs/argilla-server-2.8.0): the first run on a machine creates it (about a minute). Contract
used by other test modules: `api_url`, `api_key` (the owner's), `home`, and
`create_user(username, password, role="annotator", workspace=None) -> (user_id, api_key)`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from labeling.server.home import ArgillaHome
from labeling.server.launcher import free_local_port, serve, stop


@dataclass
class EmbeddedArgilla:
    api_url: str
    api_key: str
    home: Path

    def client(self):
        import argilla as rg

        return rg.Argilla(api_url=self.api_url, api_key=self.api_key)

    def create_user(
        self, username: str, password: str, role: str = "annotator", workspace: str | None = None
    ) -> tuple[str, str]:
        from labeling.users import add_user

        user, api_key = add_user(self.client(), username, password, role, [workspace] if workspace else [])
        return str(user.id), api_key


def start_embedded(home: Path, log=print, database: str | None = None) -> EmbeddedArgilla:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install -y redis-server)")
    argilla_home = ArgillaHome.at(home)
    url = serve(argilla_home, host="127.0.0.1", port=free_local_port(), log=log, database=database)
    return EmbeddedArgilla(api_url=url, api_key=argilla_home.read_credentials()["api_key"], home=argilla_home.root)


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory):
    server = start_embedded(tmp_path_factory.mktemp("argilla"))
    try:
        yield server
    finally:
        stop(ArgillaHome.at(server.home))


@pytest.fixture(scope="session")
def postgresql():
    """A real PostgreSQL server for this test session: `PostgresServer` (url without the password, password)."""
    from postgres_server import start_postgres

    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def argilla_server_postgresql(tmp_path_factory, postgresql):
    from labeling.server.database import normalize_postgres_url

    url = normalize_postgres_url(postgresql.url_with_password, "test", password_allowed=True)
    server = start_embedded(tmp_path_factory.mktemp("argilla-pg"), database=url)
    try:
        yield server
    finally:
        stop(ArgillaHome.at(server.home))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend_server(request):
    """The module's tests once against the SQLite-backed server, once against the PostgreSQL-backed one."""
    return request.getfixturevalue("argilla_server" if request.param == "sqlite" else "argilla_server_postgresql")


@pytest.fixture(scope="session")
def start_argilla():
    """`start_argilla(home, log=print) -> EmbeddedArgilla`, for tests that need a server of their own to stop."""
    return start_embedded


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextlib.contextmanager
def signed_in_page(api_url: str, tmp_path: Path, username: str, password: str):
    """Debian's Chromium (never a downloaded browser) on the real Argilla UI, signed in as `username`."""
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), "Debian's chromium is needed: apt-get install -y chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(f"{api_url}/sign-in")
            page.get_by_label("Username").fill(username)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Sign in").click()
            yield page
        finally:
            browser.close()
