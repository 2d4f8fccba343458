"""Background processes with pid files: start detached, tell whether alive, stop gently then firmly.

A pid file holds the pid and the process's start time (from /proc), so a pid the kernel has since given to some
other process is not mistaken for ours. Each process leads its own session, so stopping signals its whole group
(the rq worker pool's children included).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_time = fields[0], fields[19]
    return None if state in ("Z", "X") else start_time


def _reap(pid: int) -> None:
    # A process we started and that died stays a zombie until its parent waits for it.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@dataclass(frozen=True)
class ManagedProcess:
    name: str
    pid_file: Path
    log_file: Path

    def read_pid(self) -> int | None:
        """The recorded pid if that process is still the one we started, else None."""
        try:
            recorded = json.loads(self.pid_file.read_text())
            pid, start_time = int(recorded["pid"]), str(recorded["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        _reap(pid)
        return pid if _start_time(pid) == start_time else None

    def is_alive(self) -> bool:
        return self.read_pid() is not None

    def start(self, command: list[str], env: dict[str, str], cwd: Path) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.name}\n".encode())
            log.flush()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                start_new_session=True,
            )
        start_time = _start_time(process.pid)
        temporary = self.pid_file.with_name(self.pid_file.name + ".tmp")
        temporary.write_text(json.dumps({"pid": process.pid, "start_time": start_time, "command": command[:4]}))
        os.replace(temporary, self.pid_file)
        return process.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process (SIGTERM, then SIGKILL after `timeout`); True when it was running."""
        pid = self.read_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.read_pid() is not None:
            time.sleep(0.1)
        # Also clears children left behind by a leader that exited on SIGTERM.
        self._signal_group(pid, signal.SIGKILL)
        while self.read_pid() is not None:
            time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal_group(pid: int, signal_number: int) -> None:
        try:
            os.killpg(pid, signal_number)
        except ProcessLookupError:
            pass
        except PermissionError:
            os.kill(pid, signal_number)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
