"""A real PostgreSQL server for tests: Debian's `postgresql` binaries, a throwaway cluster in a temporary folder.

The cluster listens on 127.0.0.1 (a free port) and on a unix socket in its own folder, asks for a password
(scram-sha-256) like a team's server would, and holds one database, `argilla`, owned by the role `workbench`.
PostgreSQL refuses to run as root, so under root (CI, containers) the cluster belongs to the `postgres` user that
Debian's package creates. fsync is off: a test cluster needs no durability.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from labeling.server.launcher import free_local_port

ROLE, DATABASE = "workbench", "argilla"


def postgres_bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install -y postgresql; `make install` does it)")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    folder: Path
    port: int
    password: str
    bin_dir: Path
    run_as: str | None

    @property
    def url(self) -> str:
        """The database's URL without the password (what goes on a command line)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def url_with_password(self) -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def run(self, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", self.run_as, "--"] if self.run_as else []
        return subprocess.run(
            [*prefix, *command], env=env, cwd=self.folder, capture_output=True, text=True, check=True, timeout=120
        )

    def sql(self, statement: str) -> str:
        """Run one statement in the `argilla` database as the role (password from the environment, never argv)."""
        environment = {**os.environ, "PGPASSWORD": self.password}
        psql = str(self.bin_dir / "psql")
        command = [psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", ROLE, "-d", DATABASE, "-tAc", statement]
        return subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout.strip()

    def stop(self) -> None:
        try:
            self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_postgres() -> PostgresServer:
    bin_dir = postgres_bin_dir()
    run_as = "postgres" if os.geteuid() == 0 else None
    folder = Path(tempfile.mkdtemp(prefix="wb-pg-"))
    if run_as:
        entry = pwd.getpwnam(run_as)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(folder, free_local_port(), secrets.token_urlsafe(16), bin_dir, run_as)
    password_file = folder / "password"
    password_file.write_text(server.password + "\n")
    if run_as:
        os.chown(password_file, entry.pw_uid, entry.pw_gid)
    os.chmod(password_file, 0o600)
    data = str(folder / "data")
    initdb = [str(bin_dir / "initdb"), "-D", data, "-U", ROLE, "--pwfile", str(password_file), "-E", "UTF8"]
    server.run(*initdb, "--auth", "scram-sha-256", "--no-sync")
    password_file.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} -c fsync=off"
    log = str(folder / "postgres.log")
    server.run(str(bin_dir / "pg_ctl"), "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
    environment = {**os.environ, "PGPASSWORD": server.password}
    createdb = [str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", ROLE, DATABASE]
    subprocess.run(createdb, env=environment, capture_output=True, text=True, check=True, timeout=60)
    return server
