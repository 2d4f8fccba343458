"""The embedded Argilla launcher: lifecycle, restart survival, loopback-only, private key file, team isolation.

Tests marked `argilla` run the real server (its venv, redis-server); the others check the launcher's own parts.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import argilla as rg
import httpx
import pytest
import yaml

from labeling import cli
from labeling.connection import connect
from labeling.server.home import ArgillaHome, mask_secret
from labeling.server.launcher import free_local_port as free_port
from labeling.server.launcher import serve, status, stop
from labeling.server.processes import ManagedProcess
from workbench.errors import UserError


def _rest(server, api_key: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.api_url}{path}", headers={"X-Argilla-Api-Key": api_key}, **kwargs)


def _make_dataset(server, workspace: str, name: str, n_records: int = 2) -> rg.Dataset:
    client = server.client()
    from labeling.users import ensure_workspace

    ensure_workspace(client, workspace)
    dataset = rg.Dataset(
        name=name,
        workspace=workspace,
        settings=rg.Settings(
            fields=[rg.TextField(name="prompt", client=client)],
            questions=[rg.RankingQuestion(name="rank", values=["a", "b", "c"], client=client)],
        ),
        client=client,
    )
    dataset.create()
    dataset.records.log([{"prompt": f"question {i}"} for i in range(n_records)])
    return dataset


def _records_with_responses(server, dataset_id) -> list[dict]:
    response = _rest(server, server.api_key, "GET", f"/api/v1/datasets/{dataset_id}/records?include=responses")
    response.raise_for_status()
    return response.json()["items"]


def _submit_ranking(server, api_key: str, record_id: str, order: list[str]) -> httpx.Response:
    value = [{"value": option, "rank": position} for position, option in enumerate(order, start=1)]
    body = {"values": {"rank": {"value": value}}, "status": "submitted"}
    return _rest(server, api_key, "POST", f"/api/v1/records/{record_id}/responses", json=body)


# --- launcher parts, no server -------------------------------------------------------------------------------------


def test_managed_process_start_stop_and_pid_reuse(tmp_path):
    process = ManagedProcess("sleeper", tmp_path / "run" / "sleeper.pid", tmp_path / "logs" / "sleeper.log")
    pid = process.start([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"], {}, tmp_path)
    assert process.read_pid() == pid
    recorded = json.loads(process.pid_file.read_text())
    # The same pid with another start time is some other process that reuses the number: not ours.
    process.pid_file.write_text(json.dumps({**recorded, "start_time": "1"}))
    assert not process.is_alive()
    process.pid_file.write_text(json.dumps(recorded))
    assert process.stop(timeout=5)
    assert not process.is_alive() and not process.pid_file.exists()
    assert "starting sleeper" in process.log_file.read_text()


def test_killed_process_is_not_alive(tmp_path):
    process = ManagedProcess("sleeper", tmp_path / "sleeper.pid", tmp_path / "sleeper.log")
    pid = process.start([sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while process.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process.is_alive()


def test_credentials_file_is_private_and_stable(tmp_path):
    home = ArgillaHome.at(tmp_path / "home")
    home.create_dirs()
    first = home.ensure_credentials()
    assert stat.S_IMODE(home.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(home.root.stat().st_mode) == 0o700
    assert home.ensure_credentials() == first
    assert len(first["api_key"]) > 40 and len(first["password"]) >= 16
    assert mask_secret(first["api_key"]) == "…" + first["api_key"][-4:]


def test_too_deep_home_is_refused(tmp_path):
    deep = tmp_path / ("d" * 100)
    with pytest.raises(UserError, match="too deep"):
        serve(ArgillaHome.at(deep), port=free_port())


def test_connect_without_server_names_the_problem(tmp_path, monkeypatch):
    monkeypatch.delenv("ARGILLA_API_URL", raising=False)
    monkeypatch.delenv("ARGILLA_API_KEY", raising=False)
    with pytest.raises(UserError, match="workbench label serve"):
        connect(home=tmp_path / "never-served")
    monkeypatch.setenv("ARGILLA_API_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(UserError, match="ARGILLA_API_KEY is not set"):
        connect()
    monkeypatch.setenv("ARGILLA_API_KEY", "some-key-0123456789")
    with pytest.raises(UserError, match="cannot reach Argilla"):
        connect()


def test_production_compose_pins_images_and_keeps_backends_private():
    compose = yaml.safe_load((Path(__file__).parents[2] / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"argilla", "worker", "elasticsearch", "postgres", "redis"}
    for name, service in services.items():
        image = service["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith((":latest", ":main")), (name, image)
    assert services["argilla"]["image"] == services["worker"]["image"] == "argilla/argilla-server:v2.8.0"
    assert [port.split(":")[0] for port in services["argilla"]["ports"]] == ["127.0.0.1"]
    assert all("ports" not in services[name] for name in ("worker", "elasticsearch", "postgres", "redis"))
    assert "ARGILLA_AUTH_SECRET_KEY" in compose["x-argilla-environment"]


def test_cli_table_rejects_unknown_subcommand(capsys):
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out


# --- against the session's embedded server ---------------------------------------------------------------------------


@pytest.mark.argilla
def test_key_file_is_0600(argilla_server):
    credentials_file = ArgillaHome.at(argilla_server.home).credentials_file
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert json.loads(credentials_file.read_text())["api_key"] == argilla_server.api_key


@pytest.mark.argilla
def test_connect_uses_env_and_rejects_a_wrong_key(argilla_server, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    assert connect().me.role == "owner"
    monkeypatch.setenv("ARGILLA_API_KEY", "wrong-key-" + uuid.uuid4().hex)
    with pytest.raises(UserError, match="rejected the API key"):
        connect()
    monkeypatch.delenv("ARGILLA_API_URL")
    monkeypatch.delenv("ARGILLA_API_KEY")
    assert connect(home=argilla_server.home).me.username == "owner"


def _non_loopback_addresses() -> list[str]:
    output = subprocess.run(["hostname", "-I"], capture_output=True, text=True).stdout
    return [address for address in output.split() if not address.startswith("127.") and address != "::1"]


@pytest.mark.argilla
def test_not_reachable_on_non_loopback_address(argilla_server):
    port = int(argilla_server.api_url.rsplit(":", 1)[1])
    assert httpx.get(f"{argilla_server.api_url}/api/v1/version").status_code == 200
    addresses = _non_loopback_addresses()
    if not addresses:
        pytest.skip("this machine has no non-loopback address to try")
    for address in addresses:
        host = f"[{address}]" if ":" in address else address
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://{host}:{port}/api/v1/version", timeout=3)
    # Redis has no TCP port at all: only a unix socket inside the home.
    redis_config = (ArgillaHome.at(argilla_server.home).redis_dir / "redis.conf").read_text()
    assert "\nport 0\n" in redis_config


@pytest.mark.argilla
def test_annotator_sees_and_answers_only_their_workspace(argilla_server):
    suffix = uuid.uuid4().hex[:6]
    ours = _make_dataset(argilla_server, f"team-a-{suffix}", f"ours-{suffix}")
    theirs = _make_dataset(argilla_server, f"team-b-{suffix}", f"theirs-{suffix}")
    _, key = argilla_server.create_user(f"ann-{suffix}", "annotator-pass", workspace=f"team-a-{suffix}")

    annotator = rg.Argilla(api_url=argilla_server.api_url, api_key=key)
    assert annotator.me.role == "annotator"
    visible = {dataset.name for dataset in annotator.datasets}
    assert f"ours-{suffix}" in visible and f"theirs-{suffix}" not in visible
    assert [workspace.name for workspace in annotator.workspaces] == [f"team-a-{suffix}"]

    assert _rest(argilla_server, key, "GET", f"/api/v1/datasets/{theirs.id}").status_code == 403
    their_record = _records_with_responses(argilla_server, theirs.id)[0]
    assert _submit_ranking(argilla_server, key, their_record["id"], ["a", "b", "c"]).status_code == 403
    our_record = _records_with_responses(argilla_server, ours.id)[0]
    assert _submit_ranking(argilla_server, key, our_record["id"], ["c", "a", "b"]).status_code == 201


@pytest.mark.argilla
def test_users_cli_adds_and_lists(argilla_server, monkeypatch, capsys):
    monkeypatch.setenv("WORKBENCH_NEW_USER_PASSWORD", "cli-pass-123")
    name = f"cli-{uuid.uuid4().hex[:6]}"
    home = ["--home", str(argilla_server.home)]
    assert cli.main(["users", *home, "add", name, "--workspace", f"ws-{name}"]) == 0
    assert cli.main(["users", *home, "list"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(name))
    assert row.split() == [name, "annotator", f"ws-{name}"]
    login = httpx.post(
        f"{argilla_server.api_url}/api/v1/token", data={"username": name, "password": "cli-pass-123"}, timeout=10
    )
    assert login.status_code == 201 and "access_token" in login.json()


@pytest.mark.argilla
def test_a_new_users_password_comes_from_stdin_never_from_the_command_line(argilla_server):
    name = f"stdin-{uuid.uuid4().hex[:6]}"
    command = [sys.executable, "-m", "workbench.cli", "label", "users", "--home", str(argilla_server.home), "add"]
    env = {k: v for k, v in os.environ.items() if k != "WORKBENCH_NEW_USER_PASSWORD"}
    refused = subprocess.run([*command, name, "--password", "on-argv-123"], env=env, capture_output=True, text=True)
    assert refused.returncode == 2 and "--password-stdin" in refused.stderr and "on-argv-123" not in refused.stderr
    assert "Traceback" not in refused.stderr
    added = subprocess.run(
        [*command, name, "--password-stdin"], input="from-stdin-123\n", env=env, capture_output=True, text=True
    )
    assert added.returncode == 0, added.stderr
    login = {"username": name, "password": "from-stdin-123"}
    assert httpx.post(f"{argilla_server.api_url}/api/v1/token", data=login, timeout=10).status_code == 201
    empty = subprocess.run(
        [*command, f"{name}x", "--password-stdin"], input="", env=env, capture_output=True, text=True
    )
    assert empty.returncode == 2 and "expected the password on the first line of stdin" in empty.stderr


# --- a server of its own: stop, kill -9, restart ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_server(tmp_path_factory, start_argilla):
    lines: list[str] = []
    server = start_argilla(tmp_path_factory.mktemp("argilla-own"), log=lines.append)
    server.startup_output = "\n".join(lines)
    try:
        yield server
    finally:
        stop(ArgillaHome.at(server.home))


@pytest.mark.argilla
def test_serve_prints_login_but_never_the_secrets(own_server):
    credentials = ArgillaHome.at(own_server.home).read_credentials()
    assert own_server.api_url in own_server.startup_output and "credentials.json" in own_server.startup_output
    for secret in (credentials["api_key"], credentials["password"], credentials["auth_secret_key"]):
        assert secret not in own_server.startup_output
        for log_file in (own_server.home / "logs").iterdir():
            assert secret not in log_file.read_text(errors="replace"), log_file


@pytest.mark.argilla
def test_serve_again_is_idempotent(own_server, capsys):
    home = ArgillaHome.at(own_server.home)
    before = status(home)
    lines: list[str] = []
    assert serve(home, port=free_port(), log=lines.append) == own_server.api_url
    assert "already running" in lines[0]
    after = status(home)
    assert after == before and after["responding"] and all(after[name] for name in ("redis", "worker", "server"))
    assert cli.main(["status", "--home", str(home.root)]) == 0
    assert f"serving at {own_server.api_url}" in capsys.readouterr().out


@pytest.mark.argilla
def test_data_survives_kill_9_and_full_restart(own_server):
    suffix = uuid.uuid4().hex[:6]
    dataset = _make_dataset(own_server, f"team-{suffix}", f"keep-{suffix}", n_records=3)
    _, key = own_server.create_user(f"keeper-{suffix}", "keeper-pass", workspace=f"team-{suffix}")
    record_id = _records_with_responses(own_server, dataset.id)[0]["id"]
    assert _submit_ranking(own_server, key, record_id, ["b", "c", "a"]).status_code == 201

    def snapshot():
        return {
            record["id"]: (record["fields"], [(r["status"], r["values"]) for r in record.get("responses", [])])
            for record in _records_with_responses(own_server, dataset.id)
        }

    before = snapshot()
    assert len(before) == 3 and before[record_id][1][0][0] == "submitted"

    home = ArgillaHome.at(own_server.home)
    os.kill(status(home)["server"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while status(home)["server"] is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status(home)["server"] is None and not status(home)["responding"]
    lines: list[str] = []
    assert serve(home, port=int(own_server.api_url.rsplit(":", 1)[1]), log=lines.append) == own_server.api_url
    assert any("started the Argilla server" in line for line in lines)
    assert snapshot() == before

    assert stop(home, log=lines.append)
    assert serve(home, port=int(own_server.api_url.rsplit(":", 1)[1]), log=lines.append) == own_server.api_url
    assert snapshot() == before
    # The annotator's API key and the owner's still work after the restarts.
    assert _rest(own_server, key, "GET", "/api/v1/me").json()["username"] == f"keeper-{suffix}"


@pytest.mark.argilla
def test_stop_stops_all_three(own_server, capsys):
    home = ArgillaHome.at(own_server.home)
    pids = [status(home)[name] for name in ("redis", "worker", "server")]
    assert all(pids)
    assert stop(home, log=lambda line: None)
    report = status(home)
    assert [report[name] for name in ("redis", "worker", "server")] == [None, None, None]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split(")")[1][:3]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{own_server.api_url}/api/v1/version", timeout=3)
    assert cli.main(["status", "--home", str(home.root)]) == 1
    assert "not serving" in capsys.readouterr().out
    assert not stop(home, log=lambda line: None)
