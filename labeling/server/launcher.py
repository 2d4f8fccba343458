"""Start, stop and inspect the embedded Argilla: Redis, the rq worker and the HTTP server, under one home.

Each part is started only when it is not already running, so `serve` is idempotent and also repairs a home whose
server was killed. Redis listens on a unix socket inside the home (no TCP port at all); the HTTP server binds
127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import labeling
from workbench.errors import UserError

from .database import argilla_database_url, bind_database, describe_database
from .home import ArgillaHome, mask_secret, url_for
from .processes import ManagedProcess
from .venv import ensure_venv

SEARCH_ENGINE_NAME = "workbench-sql"
STARTUP_TIMEOUT_S = 120.0
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_UNIX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Components:
    redis: ManagedProcess
    worker: ManagedProcess
    server: ManagedProcess

    @classmethod
    def of(cls, home: ArgillaHome) -> Components:
        def managed(name: str) -> ManagedProcess:
            return ManagedProcess(name, home.run_dir / f"{name}.pid", home.logs_dir / f"{name}.log")

        return cls(redis=managed("redis"), worker=managed("worker"), server=managed("server"))

    def all(self) -> list[ManagedProcess]:
        return [self.redis, self.worker, self.server]


def redis_server_executable() -> str:
    executable = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if executable is None:
        raise UserError("redis-server is not installed; on Debian/Ubuntu: `apt-get install -y redis-server`")
    return executable


def _write_redis_config(home: ArgillaHome) -> Path:
    if len(str(home.redis_socket)) > MAX_UNIX_SOCKET_PATH:
        raise UserError(
            f"--home {home.root} is too deep for Redis's unix socket ({len(str(home.redis_socket))} characters, "
            f"at most {MAX_UNIX_SOCKET_PATH}); choose a shorter home directory"
        )
    config = home.redis_dir / "redis.conf"
    config.write_text(
        "# Written by `workbench label serve`: unix socket only, data under the Argilla home.\n"
        "port 0\n"
        f'unixsocket "{home.redis_socket}"\n'
        "unixsocketperm 700\n"
        f'dir "{home.redis_dir}"\n'
        "daemonize no\n"
        'logfile ""\n'
        "save 60 1\n"
        "appendonly no\n"
    )
    return config


def server_environment(home: ArgillaHome, credentials: dict) -> dict[str, str]:
    """The environment of the server-side processes: the parent's, minus its Python setup, plus Argilla's."""
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP") and not key.startswith("ARGILLA_")
    }
    environment.update(
        {
            "PYTHONPATH": str(home.pythonpath_dir),
            "ARGILLA_HOME_PATH": str(home.data_dir),
            "ARGILLA_DATABASE_URL": argilla_database_url(home),
            "ARGILLA_SEARCH_ENGINE": SEARCH_ENGINE_NAME,
            "ARGILLA_REDIS_URL": f"unix://{home.redis_socket}",
            # A fixed secret keeps UI logins valid across restarts; a random default would sign everyone out.
            "ARGILLA_AUTH_SECRET_KEY": credentials["auth_secret_key"],
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_OFFLINE": "1",
            "TMPDIR": str(home.tmp_dir),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return environment


def _link_labeling_package(home: ArgillaHome) -> None:
    # Only the `labeling` package goes on the server venv's path, never the workbench environment's site-packages.
    home.pythonpath_dir.mkdir(exist_ok=True)
    link = home.pythonpath_dir / "labeling"
    target = Path(labeling.__file__).parent.absolute()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    temporary = home.pythonpath_dir / ".labeling.tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(target, target_is_directory=True)
    os.replace(temporary, link)


def _wait_for_redis(home: ArgillaHome, redis: ManagedProcess) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not redis.is_alive():
            raise UserError(f"redis-server exited at startup; its log ({redis.log_file}):\n{redis.log_tail()}")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(2)
                connection.connect(str(home.redis_socket))
                connection.sendall(b"PING\r\n")
                if connection.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise UserError(f"redis-server did not answer on {home.redis_socket} within 30 s; see {redis.log_file}")


def free_local_port() -> int:
    """A TCP port free on 127.0.0.1 now, outside the kernel's ephemeral range (for tests and side-by-side servers).

    A port from the ephemeral range can be handed to some outgoing connection while its server is down, which
    would then block the restart; ports below that range are only ever taken by an explicit bind.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UserError("found no free TCP port on 127.0.0.1 below the ephemeral range")


def _check_port_free(host: str, port: int, patience_s: float = 5.0) -> None:
    # A server killed a moment ago may leave its port briefly unusable; wait a little before giving up.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + patience_s
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
                return
            except OSError as error:
                if time.monotonic() > deadline:
                    raise UserError(
                        f"cannot listen on {host}:{port} ({error.strerror}); another program uses it: pass --port"
                    ) from error
        time.sleep(0.25)


def _wait_for_http(url: str, server: ManagedProcess, api_key: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    request = urllib.request.Request(f"{url}/api/v1/me", headers={"X-Argilla-Api-Key": api_key})
    while time.monotonic() < deadline:
        if not server.is_alive():
            raise UserError(f"the Argilla server exited at startup; its log ({server.log_file}):\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError as error:
            raise UserError(f"the Argilla server at {url} refused the owner's API key (HTTP {error.code})") from error
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise UserError(
        f"the Argilla server did not answer at {url} within {STARTUP_TIMEOUT_S:.0f} s; see {server.log_file}"
    )


@contextlib.contextmanager
def _home_lock(home: ArgillaHome):
    # Two `serve` (or a `serve` and a `stop`) on one home at once would start everything twice.
    home.create_dirs()
    with open(home.run_dir / "launcher.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        yield


def _scratch_environment(home: ArgillaHome, environment: dict[str, str], name: str) -> dict[str, str]:
    # argilla_server copies its web UI (~27 MB) into TMPDIR whenever it is imported: one fresh dir per process.
    scratch = home.tmp_dir / name
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    return {**environment, "TMPDIR": str(scratch)}


def serve(
    home: ArgillaHome,
    host: str = "127.0.0.1",
    port: int = 6900,
    venv_dir: Path | None = None,
    log=print,
    database: str | None = None,
) -> str:
    """Start whatever part of the embedded Argilla is not running; return its URL.

    `database`: a normalized PostgreSQL URL (labeling/server/database.py) that the home is, or becomes, bound to;
    None keeps the home's database (SQLite in the home unless it was bound before).
    """
    with _home_lock(home):
        bind_database(home, database)
        return _serve_locked(home, host, port, venv_dir, log)


def _serve_locked(home: ArgillaHome, host: str, port: int, venv_dir: Path | None, log) -> str:
    parts = Components.of(home)
    state = home.read_state()
    if parts.server.is_alive() and state is not None:
        log(f"Argilla is already running at {state['url']} (home {home.root}).")
        if (state["host"], state["port"]) != (host, port):
            log("It keeps its address; run `workbench label stop` first to move it.")
        _ensure_running(home, parts, state["host"], state["port"], venv_dir, log)
        return state["url"]
    if parts.server.is_alive():
        parts.server.stop()
    _check_port_free(host, port)
    url = url_for(host, port)
    _ensure_running(home, parts, host, port, venv_dir, log)
    return url


def _ensure_running(home: ArgillaHome, parts: Components, host: str, port: int, venv_dir, log) -> None:
    credentials = home.ensure_credentials()
    environment = server_environment(home, credentials)
    python = str(ensure_venv(venv_dir, log=log))
    _link_labeling_package(home)
    run_module = [python, "-m", "labeling.server.run"]

    if not parts.redis.is_alive():
        parts.redis.start([redis_server_executable(), str(_write_redis_config(home))], environment, home.redis_dir)
        _wait_for_redis(home, parts.redis)
        log(f"started redis-server (unix socket {home.redis_socket})")

    server_needed = not parts.server.is_alive()
    if server_needed:
        # Migrations and the owner user come before any process that serves or works on the database.
        prepare_log = home.logs_dir / "prepare.log"
        with open(prepare_log, "ab") as output:
            command = [*run_module, "prepare", "--credentials", str(home.credentials_file)]
            prepare_environment = _scratch_environment(home, environment, "prepare")
            result = subprocess.run(
                command, env=prepare_environment, cwd=home.root, stdout=output, stderr=subprocess.STDOUT
            )
            shutil.rmtree(prepare_environment["TMPDIR"], ignore_errors=True)
        if result.returncode != 0:
            tail = "\n".join(prepare_log.read_text(errors="replace").splitlines()[-30:])
            raise UserError(f"preparing the Argilla database failed; see {prepare_log}:\n{tail}")

    if not parts.worker.is_alive():
        parts.worker.start([*run_module, "worker"], _scratch_environment(home, environment, "worker"), home.root)
        log("started the rq worker")

    url = url_for(host, port)
    if server_needed:
        command = [*run_module, "server", "--host", host, "--port", str(port)]
        parts.server.start(command, _scratch_environment(home, environment, "server"), home.root)
        home.write_state(host, port)
        _wait_for_http(url, parts.server, credentials["api_key"])
        log(f"started the Argilla server at {url}")
    print_login(home, url, credentials, log)


def print_login(home: ArgillaHome, url: str, credentials: dict, log=print) -> None:
    log(
        f"\nArgilla UI and API: {url}\n"
        f"  database:   {describe_database(home)}\n"
        f"  log in as:  {credentials['username']}  (password and API key {mask_secret(credentials['api_key'])} "
        f"are in {home.credentials_file}, mode 0600)\n"
        f"  for tools:  export ARGILLA_API_URL={url}  ARGILLA_API_KEY=<api_key from that file>\n"
        f"  add labelers: workbench label users add NAME --workspace TEAM\n"
        f"  logs: {home.logs_dir}    stop: workbench label stop --home {home.root}"
    )


def stop(home: ArgillaHome, log=print) -> bool:
    """Stop the server, then the worker, then Redis (which saves its data); True when anything was running."""
    if not home.root.is_dir():
        log(f"nothing was running under {home.root} (no such directory)")
        return False
    parts = Components.of(home)
    stopped_any = False
    with _home_lock(home):
        for part in (parts.server, parts.worker, parts.redis):
            if part.stop():
                log(f"stopped {part.name}")
                stopped_any = True
    if not stopped_any:
        log(f"nothing was running under {home.root}")
    return stopped_any


def status(home: ArgillaHome) -> dict:
    """Each part's pid (None when not running), the URL, and whether the server answers it."""
    parts = Components.of(home)
    state = home.read_state()
    report = {"home": str(home.root), "url": state["url"] if state else None, "database": describe_database(home)}
    for part in parts.all():
        report[part.name] = part.read_pid()
    report["responding"] = False
    if state and report["server"] is not None:
        try:
            with urllib.request.urlopen(f"{state['url']}/api/v1/version", timeout=5) as response:
                report["responding"] = response.status == 200
        except (urllib.error.URLError, OSError):
            pass
    return report
