"""`workbench label serve --database postgresql://…`: an Argilla home whose data lives in a team's PostgreSQL.

The URL checks run without a server; the lifecycle test runs the real CLI against a real PostgreSQL (see
postgres_server.py): the data lands in PostgreSQL, the home remembers its database across a restart, and the
database password shows in no process command line, log or status output.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid

import argilla as rg
import pytest

from labeling.server.database import (
    DATABASE_URL_ENV,
    bind_database,
    mask_url,
    normalize_postgres_url,
    requested_database,
    stored_database,
)
from labeling.server.home import ArgillaHome
from labeling.server.launcher import free_local_port, status
from workbench.errors import UserError

ASYNC = "postgresql+asyncpg"


def test_urls_are_normalized_for_argilla_and_masked_for_people():
    url = normalize_postgres_url("postgres://team@db.example:5433/labels", "--database", password_allowed=False)
    assert url == f"{ASYNC}://team@db.example:5433/labels"
    socket_url = "postgresql://team@/labels?host=/var/run/postgresql"
    assert normalize_postgres_url(socket_url, "x", False) == f"{ASYNC}://team@/labels?host=/var/run/postgresql"
    assert mask_url(f"{ASYNC}://team:s3cret-pw@db:5432/labels") == f"{ASYNC}://team:***@db:5432/labels"
    assert mask_url(url) == url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("mysql://team@db/labels", "expected a PostgreSQL URL postgresql://USER@HOST[:PORT]/DBNAME, found mysql://"),
        ("postgresql://team@db", "expected a database name"),
        ("postgresql://team@/labels", "expected a host"),
        ("postgresql://team@db:port/labels", "expected a port number"),
        ("db.example/labels", "expected a PostgreSQL URL"),
    ],
)
def test_a_bad_database_url_names_the_option_and_what_was_expected(given, expected):
    with pytest.raises(UserError, match="^--database: ") as caught:
        requested_database(given, {})
    assert expected in str(caught.value)


def test_a_password_on_the_command_line_is_refused_without_echoing_it():
    with pytest.raises(UserError) as caught:
        requested_database("postgresql://team:hunter2-secret@db/labels", {})
    message = str(caught.value)
    assert "hunter2-secret" not in message and "~/.pgpass" in message and DATABASE_URL_ENV in message
    # the same URL in the environment is how a password is given
    env_url = "postgresql://team:hunter2-secret@db/labels"
    assert requested_database(None, {DATABASE_URL_ENV: env_url}) == f"{ASYNC}://team:hunter2-secret@db/labels"
    assert requested_database("postgresql://team@db/labels", {DATABASE_URL_ENV: env_url}).endswith("secret@db/labels")
    with pytest.raises(UserError, match="name different databases"):
        requested_database("postgresql://team@db/other", {DATABASE_URL_ENV: env_url})
    assert requested_database(None, {}) is None


def test_a_home_keeps_the_database_it_was_first_served_with(tmp_path):
    home = ArgillaHome.at(tmp_path / "home")
    first = f"{ASYNC}://team:pw-one@db/labels"
    bind_database(home, first)
    assert stored_database(home) == first
    assert stat.S_IMODE(home.database_file.stat().st_mode) == 0o600
    bind_database(home, None)  # a later serve without --database keeps it
    bind_database(home, f"{ASYNC}://team@db/labels")  # the same database without the password: kept as is
    assert stored_database(home) == first
    bind_database(home, f"{ASYNC}://team:pw-two@db/labels")  # a new password for the same database
    assert stored_database(home) == f"{ASYNC}://team:pw-two@db/labels"
    with pytest.raises(UserError, match="keeps its data in postgresql\\+asyncpg://team:\\*\\*\\*@db/labels") as caught:
        bind_database(home, f"{ASYNC}://team@db/other")
    assert "pw-two" not in str(caught.value)

    sqlite_home = ArgillaHome.at(tmp_path / "sqlite-home")
    sqlite_home.create_dirs()
    (sqlite_home.data_dir / "argilla.db").write_bytes(b"")
    with pytest.raises(UserError, match="already keeps its data in SQLite"):
        bind_database(sqlite_home, first)

    home.database_file.write_text("not json")
    with pytest.raises(UserError, match="database.json: expected a JSON object"):
        stored_database(home)


def _workbench_label(*args: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench.cli", "label", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.argilla
def test_a_home_on_postgresql_serves_restarts_and_never_shows_the_password(tmp_path_factory, postgresql):
    home = ArgillaHome.at(tmp_path_factory.mktemp("pg-home"))
    port = str(free_local_port())
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != DATABASE_URL_ENV}
    with_url = {**plain_env, DATABASE_URL_ENV: postgresql.url_with_password}
    try:
        first = _workbench_label("serve", "--home", str(home.root), "--port", port, env=with_url)
        assert first.returncode == 0, first.stderr[-3000:]
        assert f"database:   {ASYNC}://workbench:***@127.0.0.1:{postgresql.port}/argilla" in first.stdout
        assert stat.S_IMODE(home.database_file.stat().st_mode) == 0o600
        assert not (home.data_dir / "argilla.db").exists()

        report = status(home)
        credentials = home.read_credentials()
        client = rg.Argilla(api_url=report["url"], api_key=credentials["api_key"])
        workspace = client.workspaces.add(rg.Workspace(name=f"team-{uuid.uuid4().hex[:6]}"))
        settings = rg.Settings(fields=[rg.TextField(name="prompt")], questions=[rg.LabelQuestion("ok", ["y", "n"])])
        dataset = rg.Dataset(name="kept", workspace=workspace.name, settings=settings, client=client)
        dataset.create()
        dataset.records.log([{"prompt": f"question {i}"} for i in range(3)])
        assert postgresql.sql(f"SELECT count(*) FROM records WHERE dataset_id = '{dataset.id}'") == "3"

        secrets = [postgresql.password, credentials["password"], credentials["api_key"]]
        for name in ("redis", "worker", "server"):
            cmdline = open(f"/proc/{report[name]}/cmdline", "rb").read().decode(errors="replace")
            assert not any(secret in cmdline for secret in secrets), name
        for log_file in home.logs_dir.iterdir():
            assert postgresql.password not in log_file.read_text(errors="replace"), log_file

        # a restart without the URL in the environment: the home remembers its database, and the data is there
        assert _workbench_label("stop", "--home", str(home.root), env=plain_env).returncode == 0
        again = _workbench_label("serve", "--home", str(home.root), "--port", port, env=plain_env)
        assert again.returncode == 0, again.stderr[-3000:]
        shown = _workbench_label("status", "--home", str(home.root), env=plain_env)
        assert f"database {ASYNC}://workbench:***@127.0.0.1:{postgresql.port}/argilla" in shown.stdout
        assert postgresql.password not in again.stdout + again.stderr + shown.stdout + shown.stderr
        client = rg.Argilla(api_url=report["url"], api_key=credentials["api_key"])
        assert len(list(client.datasets(name="kept", workspace=workspace.name).records)) == 3

        other = f"postgresql://workbench@127.0.0.1:{postgresql.port}/elsewhere"
        refused = _workbench_label("serve", "--home", str(home.root), "--database", other, env=plain_env)
        assert refused.returncode == 2 and "serve the other database from another --home" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        _workbench_label("stop", "--home", str(home.root), env=plain_env)
