"""The embedded Argilla home: where its database, Redis data, logs, pid files and owner credentials live.

Layout under the home (created 0700):
  credentials.json   owner username, password, API key and the UI's token-signing secret (0600)
  database.json      the PostgreSQL URL when the home was served with --database (0600; see database.py)
  server.json        the URL of the last `serve` (host, port)
  data/              ARGILLA_HOME_PATH: the SQLite database argilla.db (when no database.json)
  redis/             redis.conf, its dump and its unix socket
  run/               pid files          logs/  one log per process          tmp/  the server's scratch space
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError

from .venv import workbench_cache_dir

OWNER_USERNAME = "owner"


def default_home() -> Path:
    return workbench_cache_dir() / "argilla"


def write_private_json(path: Path, payload: dict) -> None:
    """Write `payload` atomically to a file that only its owner can read (0600 from creation on)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(payload, file, indent=2)
        file.write("\n")
    os.replace(temporary, path)


def mask_secret(secret: str) -> str:
    """Enough of a secret to tell two apart, never enough to use: its last four characters."""
    return f"…{secret[-4:]}" if len(secret) >= 16 else "…"


@dataclass(frozen=True)
class ArgillaHome:
    root: Path

    @classmethod
    def at(cls, root: Path | str | None) -> ArgillaHome:
        return cls(Path(root).expanduser().absolute() if root else default_home())

    credentials_file = property(lambda self: self.root / "credentials.json")
    database_file = property(lambda self: self.root / "database.json")
    state_file = property(lambda self: self.root / "server.json")
    data_dir = property(lambda self: self.root / "data")
    redis_dir = property(lambda self: self.root / "redis")
    redis_socket = property(lambda self: self.root / "redis" / "redis.sock")
    run_dir = property(lambda self: self.root / "run")
    logs_dir = property(lambda self: self.root / "logs")
    tmp_dir = property(lambda self: self.root / "tmp")
    pythonpath_dir = property(lambda self: self.root / "pythonpath")

    def create_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for directory in (self.data_dir, self.redis_dir, self.run_dir, self.logs_dir, self.tmp_dir):
            directory.mkdir(exist_ok=True)

    def ensure_credentials(self) -> dict:
        """Read the owner credentials, creating random ones on first use."""
        if self.credentials_file.exists():
            return self.read_credentials()
        credentials = {
            "username": OWNER_USERNAME,
            "password": secrets.token_urlsafe(18),
            "api_key": "argilla.apikey." + secrets.token_urlsafe(32),
            "auth_secret_key": secrets.token_hex(32),
        }
        write_private_json(self.credentials_file, credentials)
        return credentials

    def read_credentials(self) -> dict:
        try:
            credentials = json.loads(self.credentials_file.read_text())
        except FileNotFoundError as error:
            raise UserError(
                f"no Argilla owner credentials at {self.credentials_file}: start the embedded server with "
                f"`workbench label serve --home {self.root}`, or set ARGILLA_API_URL and ARGILLA_API_KEY"
            ) from error
        except (OSError, ValueError) as error:
            raise UserError(f"{self.credentials_file}: not a readable JSON credentials file ({error})") from error
        missing = [key for key in ("username", "password", "api_key", "auth_secret_key") if key not in credentials]
        if missing:
            raise UserError(f"{self.credentials_file}: missing keys {missing}; delete it and serve again")
        return credentials

    def write_state(self, host: str, port: int) -> None:
        temporary = self.state_file.with_name(".server.json.tmp")
        temporary.write_text(json.dumps({"host": host, "port": port, "url": url_for(host, port)}, indent=2) + "\n")
        os.replace(temporary, self.state_file)

    def read_state(self) -> dict | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None


def url_for(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
