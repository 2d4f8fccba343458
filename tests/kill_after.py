"""kill -9 of a stage's process once its checkpoint is on disk: the resume tests of sft, dpo, raft and ppo."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path


def kill_9_after(process: subprocess.Popen, marker: Path, what: str, settle: float = 0.5, limit: float = 300) -> None:
    """Wait (at most `limit` seconds) until `marker` exists while `process` is still running, `settle` seconds more
    (the checkpoint's last files), then SIGKILL the process and reap it. `what`: the stage, for the failure message
    when it ends before the checkpoint it was to be killed after."""
    deadline = time.time() + limit
    while not marker.exists():
        assert process.poll() is None, f"{what} ended before the checkpoint it was to be killed after"
        assert time.time() < deadline, f"no {marker} after {limit} s"
        time.sleep(0.05)
    time.sleep(settle)
    process.send_signal(signal.SIGKILL)
    process.wait()
