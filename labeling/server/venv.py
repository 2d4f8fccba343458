"""The argilla-server venv: created once, shared by every Argilla home on the machine.

argilla-server 2.8.0 pins old fastapi/pydantic/typer that clash with the workbench's own environment, so it lives
in a venv of its own. Creation takes about a minute (pip from the registry); a marker file holding a hash of the
constraints makes it idempotent, and a file lock lets the CLI and a test session ask for it at the same time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from workbench.errors import UserError

ARGILLA_SERVER_REQUIREMENT = "argilla-server==2.8.0"
CONSTRAINTS_FILE = Path(__file__).with_name("constraints.txt")
READY_MARKER = ".workbench-ready"


def workbench_cache_dir() -> Path:
    configured = os.environ.get("WORKBENCH_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "workbench"


def default_venv_dir() -> Path:
    configured = os.environ.get("WORKBENCH_ARGILLA_VENV")
    if configured:
        return Path(configured).expanduser()
    return workbench_cache_dir() / "venvs" / "argilla-server-2.8.0"


def venv_python(venv_dir: Path) -> Path:
    return venv_dir / "bin" / "python"


def _fingerprint() -> str:
    # A new constraints file or a different base interpreter means a different venv.
    digest = hashlib.sha256(CONSTRAINTS_FILE.read_bytes())
    digest.update(ARGILLA_SERVER_REQUIREMENT.encode())
    digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
    return digest.hexdigest()


def venv_is_ready(venv_dir: Path) -> bool:
    marker = venv_dir / READY_MARKER
    return marker.is_file() and marker.read_text().strip() == _fingerprint() and venv_python(venv_dir).exists()


def ensure_venv(venv_dir: Path | None = None, log=print) -> Path:
    """Return the venv's python, creating the venv first when it is missing or stale."""
    venv_dir = (venv_dir or default_venv_dir()).absolute()
    if venv_is_ready(venv_dir):
        return venv_python(venv_dir)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(venv_dir.parent / f".{venv_dir.name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if venv_is_ready(venv_dir):  # another process built it while we waited for the lock
            return venv_python(venv_dir)
        _build(venv_dir, log)
    return venv_python(venv_dir)


def _build(venv_dir: Path, log) -> None:
    log(f"Creating the argilla-server venv at {venv_dir} (about a minute, once) ...")
    shutil.rmtree(venv_dir, ignore_errors=True)
    pip_log = venv_dir.parent / f"{venv_dir.name}.pip.log"
    _run([sys.executable, "-m", "venv", str(venv_dir)], pip_log, "python -m venv")
    install = [
        str(venv_python(venv_dir)),
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        ARGILLA_SERVER_REQUIREMENT,
        "click<8.2",
        # PostgreSQL drivers for `serve --database` (argilla-server's `postgresql` extra, with psycopg2's binary
        # wheel: the source package needs libpq's headers and a compiler)
        "asyncpg",
        "psycopg2-binary",
        "-c",
        str(CONSTRAINTS_FILE),
    ]
    _run(install, pip_log, f"pip install {ARGILLA_SERVER_REQUIREMENT}")
    (venv_dir / READY_MARKER).write_text(_fingerprint() + "\n")
    log(f"argilla-server venv ready ({pip_log} has pip's log)")


def _run(command: list[str], log_path: Path, what: str) -> None:
    with open(log_path, "a") as log_file:
        log_file.write(f"$ {' '.join(command)}\n")
        log_file.flush()
        result = subprocess.run(command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise UserError(
            f"creating the argilla-server venv failed at `{what}` (exit {result.returncode}); "
            f"see {log_path}. It needs the package registry (PyPI) and `python3 -m venv` (Debian: python3-venv)."
        )
