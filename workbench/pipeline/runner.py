"""Runs the pipeline's stages in order: skips complete ones, resumes an unfinished one, stops at a failing one.

Recipe stages and `label` commands run as subprocesses (`python -m workbench.cli ...`): each stage gets a fresh
process (its memory is returned when it ends) and its whole output in `<run_dir>/logs/<stage>.log`, while the
terminal shows one live line per stage. `<run_dir>/pipeline.json` records every stage's status, time, log and the
configuration it completed with.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import fcntl
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import write_json_atomic
from workbench.pipeline.plan import Planner, Stage

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STATE_NAME = "pipeline.json"


class StageFailed(Exception):
    """A stage exited with an error; the message names the stage, its exit status and its log."""


class StopRequest:
    """The pipeline's SIGTERM (and Ctrl-C) handler: it records the request, and the runner acts on it at its next
    check (twice a second while a stage's process runs, and between commands, hooks and stages).

    A handler that raised KeyboardInterrupt itself could land anywhere, and where it landed in a finalizer or a
    callback, Python printed the exception and dropped it: a pipeline once ran on after a SIGTERM, recorded the
    interrupted eval as done and hung in the report's wandb.init. A recorded request cannot be dropped. A second
    signal raises at once, for a pipeline stuck in its own process.
    """

    def __init__(self):
        self.signum: int | None = None

    def __call__(self, signum, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def clear(self) -> None:
        self.signum = None

    def check(self) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt


STOP = StopRequest()  # the one the pipeline installs; long waits in its own process (labels.wait_for_labels) check it


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def load_state(run_dir: Path, wandb_group: str | None) -> dict:
    path = run_dir / STATE_NAME
    state = {}
    if path.exists():
        try:
            state = json.loads(path.read_text())
        except ValueError as error:
            raise UserError(
                f"{path} is not valid JSON ({error}); delete it to start the bookkeeping afresh"
            ) from error
    state.setdefault("created_at", now())
    state.setdefault("stages", {})
    stamp = state["created_at"][:19].replace(":", "").replace("-", "")
    state["wandb_group"] = wandb_group or state.get("wandb_group") or f"pipeline-{run_dir.name}-{stamp}"
    return state


class LogTail:
    """The last line a subprocess wrote to its log (progress bars rewrite theirs with carriage returns)."""

    def __init__(self, path: Path):
        self.path, self.offset, self.line = path, path.stat().st_size if path.exists() else 0, ""

    def update(self) -> str:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        self.offset += len(chunk)
        pieces = [ANSI.sub("", p).strip() for p in re.split(r"[\r\n]", chunk.decode(errors="replace"))]
        pieces = [p for p in pieces if p]
        if pieces:
            self.line = pieces[-1][:100]
        return self.line


class Runner:
    def __init__(self, planner: Planner, state: dict, force: set[str], console, hooks: dict):
        self.planner, self.state, self.force, self.console = planner, state, force, console
        # stage name -> {"before": f, "after": f}: f(stage, log) runs in this process around the stage's commands
        self.hooks = hooks
        self.run_dir = planner.run
        self.logs = self.run_dir / "logs"

    def save(self) -> None:
        write_json_atomic(self.run_dir / STATE_NAME, self.state)

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    # ── the loop ─────────────────────────────────────────────────────────────────────────────────────────────────
    def run(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        upstream_ran = False
        stages = self.planner.stages
        for index, name in enumerate(stages, start=1):
            STOP.check()
            stage = self.planner.stage(name)
            record = self.state["stages"].get(name, {})
            done_sha = record.get("config_sha") if record.get("status") == "done" else None
            complete = stage.complete(done_sha)
            outputs_there = all(path.exists() for path in stage.outputs)
            if name == "report":
                fresh, why = True, "built from the stage outputs"
            elif name in self.force:
                fresh, why = True, "forced"
            elif complete and not upstream_ran:
                if record.get("status") != "done":
                    # its outputs were all written, but the pipeline died (kill -9) before it recorded that
                    record.update(status="done", config_sha=stage.sha(), finished_at=now())
                    self.state["stages"][name] = record
                    self.save()
                self.console.print(f"[{index}/{len(stages)}] {name}: complete, skipped ({stage.folder})")
                continue
            elif upstream_ran:
                fresh, why = True, "an earlier stage ran again" if record else "not run yet"
            elif outputs_there:
                fresh, why = True, "its configuration changed since it ran"
            elif record.get("attempt_sha") not in (None, stage.sha()):
                fresh, why = True, "its configuration changed since the last attempt"
            else:
                last = {"running": "an unfinished run"}.get(record.get("status"), record.get("status"))
                fresh, why = False, f"resuming after {last}" if record else "not run yet"
            self.console.print(f"[{index}/{len(stages)}] {name}: running ({why}); log: {self.log_path(name)}")
            self.run_stage(stage, fresh)
            upstream_ran = True

    def run_stage(self, stage: Stage, fresh: bool) -> None:
        if fresh:
            for output in stage.outputs:
                output.unlink(missing_ok=True)
            if stage.recipe is not None and stage.folder.exists():
                shutil.rmtree(stage.folder)
        resume = not fresh and stage.folder.exists()
        record = self.state["stages"].setdefault(stage.name, {})
        record.update(
            status="running",
            started_at=now(),
            attempt_sha=stage.sha(),
            log=str(self.log_path(stage.name)),
            attempts=record.get("attempts", 0) + 1,
        )
        self.save()
        started, cpu_started = time.monotonic(), child_cpu_seconds()
        try:
            if stage.recipe is not None:
                self.planner.write_recipe(stage)
            with open(self.log_path(stage.name), "a") as log:
                log.write(
                    f"\n=== workbench pipeline: stage {stage.name} at {now()} ({'fresh' if fresh else 'resume'})\n"
                )
            hooks = self.hooks.get(stage.name, {})
            if "before" in hooks:
                STOP.check()
                hooks["before"](stage, self.stage_logger(stage.name))
            for command in stage.commands:
                STOP.check()
                self.run_command(stage.name, command + (stage.resume_args if resume else []))
            if "after" in hooks:
                STOP.check()
                hooks["after"](stage, self.stage_logger(stage.name))
            STOP.check()  # a stop asked for during the last step: the stage is not recorded as done
        except KeyboardInterrupt:
            # Recorded as interrupted, so it must not look finished: a stage can still finish after the SIGINT that
            # stop_child sends (a SIGINT landing in a callback of Python's import machinery is printed and dropped).
            for output in stage.outputs:
                output.unlink(missing_ok=True)
            record.update(status="interrupted", seconds=record.get("seconds", 0) + time.monotonic() - started)
            self.save()
            raise
        except (StageFailed, UserError) as error:
            record.update(status="failed", error=str(error).splitlines()[0][:500])
            record["seconds"] = time.monotonic() - started
            self.save()
            if isinstance(error, StageFailed):
                raise
            raise StageFailed(self.failure(stage.name, str(error))) from error
        record.update(status="done", finished_at=now(), config_sha=stage.sha(), seconds=time.monotonic() - started)
        # CPU time of the stage's processes: with other work on the machine, the wall time alone overstates it
        record.update(
            cpu_seconds=child_cpu_seconds() - cpu_started, load_average=[round(x, 1) for x in os.getloadavg()]
        )
        record.pop("error", None)
        self.save()
        self.console.print(f"    {stage.name}: done in {record['seconds']:.0f} s")

    def stage_logger(self, name: str):
        """print() for in-process stages: to the terminal and to the stage's log."""

        def log(message: str) -> None:
            self.console.print(message, highlight=False, markup=False)
            with open(self.log_path(name), "a") as handle:
                handle.write(message + "\n")

        return log

    def failure(self, name: str, detail: str) -> str:
        log = self.log_path(name)
        return (
            f"stage {name!r} failed: {detail}\n"
            f"  its log: {log}\n"
            f"  earlier stages' outputs are kept; fix the cause and run the same command again to resume at {name}"
        )

    # ── one subprocess ───────────────────────────────────────────────────────────────────────────────────────────
    def run_command(self, name: str, command: list[str]) -> None:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        log_path = self.log_path(name)
        argv = [sys.executable, "-m", "workbench.cli", *command]
        with open(log_path, "a") as log:
            log.write(f"$ workbench {' '.join(command)}\n")
        tail = LogTail(log_path)
        environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=environment, preexec_fn=interruptible
            )
        columns = (SpinnerColumn(), TextColumn(f"[bold]{name}"), TimeElapsedColumn(), TextColumn("{task.description}"))
        try:
            with Progress(
                *columns, console=self.console, transient=True, disable=not self.console.is_terminal
            ) as progress:
                task = progress.add_task("starting", total=None)
                while not reap(process, self.state["stages"].setdefault(name, {})):
                    STOP.check()
                    progress.update(task, description=tail.update())
                    time.sleep(0.5)
            STOP.check()  # a Ctrl-C reaches the stage too: it ended because it was interrupted, not failed
        except BaseException:
            stop_child(process)
            raise
        if process.returncode != 0:
            last = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-12:]
            detail = f"`workbench {' '.join(command[:2])} ...` exited with status {process.returncode}"
            raise StageFailed(self.failure(name, detail) + "\n  last lines of the log:\n    " + "\n    ".join(last))


def reap(process: subprocess.Popen, record: dict) -> bool:
    """Whether `process` has ended; once it has, its exit status is in `process.returncode` and its peak resident
    memory (the kernel's ru_maxrss from wait4) is the stage record's `peak_rss_mb` if above what is there."""
    pid, status, usage = os.wait4(process.pid, os.WNOHANG)
    if pid == 0:
        return False
    process.returncode = os.waitstatus_to_exitcode(status)
    record["peak_rss_mb"] = max(record.get("peak_rss_mb", 0.0), round(usage.ru_maxrss / 1024, 1))  # kB on Linux
    return True


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def interruptible() -> None:
    """Run in a stage's process before it starts.

    SIGINT goes back to its default action, so that Python turns it into KeyboardInterrupt and `stop_child`'s SIGINT
    stops the stage. A pipeline started as a background job of a non-interactive shell inherits SIGINT ignored, and
    so would its stages: they then ran on through the SIGINT and finished writing their outputs while the pipeline
    recorded them as interrupted.

    And a stage never outlives its pipeline: when the pipeline dies (kill -9, the OOM killer), the kernel sends the
    stage SIGKILL (Linux's PR_SET_PDEATHSIG), so a rerun never races an orphaned stage writing the same folder.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the pipeline died before prctl took effect
            os._exit(137)


@contextlib.contextmanager
def hold_run_dir(run_dir: Path, command: str = "workbench pipeline", folder: str = "run_dir"):
    """One pipeline (or other long `command`) per run_dir at a time: an exclusive lock on `<run_dir>/.pipeline.lock`,
    released when the command ends however it ends (the kernel drops a dead process's locks)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / ".pipeline.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise UserError(
                f"{run_dir}: another `{command}` is running on this {folder} (pid {holder}); wait for it to "
                "end or stop it, then run this command again"
            ) from error
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


def stop_child(process: subprocess.Popen) -> None:
    """Interrupt a stage's process like Ctrl-C would (it saves nothing half-written), then insist."""
    for sig, patience in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=patience)
        except subprocess.TimeoutExpired:
            continue
