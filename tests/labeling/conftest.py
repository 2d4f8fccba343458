"""The `argilla_server` fixture: one real embedded Argilla (server, rq worker, Redis) for the whole test session.

It runs in a temporary home on a free port and is stopped at the end. The argilla-server venv is the shared one
(`WORKBENCH_ARGILLA_VENV` or ~/.cache/workbench/venvs/argilla-server-2.8.0): the first run on a machine creates it
(about a minute). Contract used by other test modules: `api_url`, `api_key` (the owner's), `home`, and
`create_user(username, password, role="annotator", workspace=None) -> (user_id, api_key)`.
"""

from __future__ import annotations

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


def start_embedded(home: Path, log=print) -> EmbeddedArgilla:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (Debian: apt-get install -y redis-server)")
    argilla_home = ArgillaHome.at(home)
    url = serve(argilla_home, host="127.0.0.1", port=free_local_port(), log=log)
    return EmbeddedArgilla(api_url=url, api_key=argilla_home.read_credentials()["api_key"], home=argilla_home.root)


@pytest.fixture(scope="session")
def argilla_server(tmp_path_factory):
    server = start_embedded(tmp_path_factory.mktemp("argilla"))
    try:
        yield server
    finally:
        stop(ArgillaHome.at(server.home))


@pytest.fixture(scope="session")
def start_argilla():
    """`start_argilla(home, log=print) -> EmbeddedArgilla`, for tests that need a server of their own to stop."""
    return start_embedded
