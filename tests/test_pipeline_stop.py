"""A SIGTERM or Ctrl-C asks the pipeline to stop, and the request is never lost: the signal handler only records it
(`workbench.pipeline.runner.STOP`), and the runner acts on it at its next check. A handler that raised
KeyboardInterrupt itself lost the signal whenever it landed in a finalizer: Python prints such an exception and drops
it, and a pipeline ran on after a SIGTERM, recorded the interrupted stage as done and hung in the report."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from rich.console import Console

from workbench.pipeline.runner import STOP, Runner

sys.path.insert(0, str(Path(__file__).parent))
from test_pipeline import plan_for, tiny_recipe  # noqa: E402


class SignalsItselfWhenCollected:
    """Sends this process SIGTERM from its finalizer, as a signal may arrive while any finalizer runs."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs at the next bytecode boundaries, still inside this finalizer
            pass


def raising_handler(signum, frame):
    raise KeyboardInterrupt  # what the pipeline installed before STOP


def report_stage_with(tmp_path: Path, hook):
    recipe = tiny_recipe(tmp_path / "pipeline.yaml", tmp_path / "run", tmp_path / "argilla", 6999)
    planner = plan_for(recipe)
    runner = Runner(planner, planner.state, set(), Console(file=open(os.devnull, "w")), {"report": {"after": hook}})
    runner.logs.mkdir(parents=True, exist_ok=True)
    return runner, planner.stage("report")


def collect_then_write_report(stage, log):
    SignalsItselfWhenCollected()  # collected at once: its finalizer signals
    stage.outputs[0].write_text("a report")


@pytest.fixture
def sigterm_handler():
    previous = signal.getsignal(signal.SIGTERM)
    STOP.clear()
    yield lambda handler: signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGTERM, previous)
    STOP.clear()


def test_a_signal_raised_in_a_finalizer_was_lost(tmp_path, sigterm_handler, monkeypatch):
    """The control: with the old handler the stage finished and was recorded as done despite the SIGTERM."""
    sigterm_handler(raising_handler)
    runner, stage = report_stage_with(tmp_path, collect_then_write_report)
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", dropped.append)  # where "Exception ignored in: ..." is printed
    runner.run_stage(stage, fresh=True)
    assert [type(report.exc_value) for report in dropped] == [KeyboardInterrupt]
    assert runner.state["stages"]["report"]["status"] == "done"


def test_a_stop_requested_in_a_finalizer_stops_the_stage_after_that_step(tmp_path, sigterm_handler):
    sigterm_handler(STOP)
    runner, stage = report_stage_with(tmp_path, collect_then_write_report)
    with pytest.raises(KeyboardInterrupt):
        runner.run_stage(stage, fresh=True)
    assert runner.state["stages"]["report"]["status"] == "interrupted"
    assert not stage.outputs[0].exists(), "an interrupted stage must not look finished"


def test_a_second_signal_interrupts_at_once(tmp_path, sigterm_handler):
    """For a pipeline stuck in its own process (a hook that never returns), the second SIGTERM raises there."""
    sigterm_handler(STOP)
    reached = []

    def stuck(stage, log):
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the first signal")
        os.kill(os.getpid(), signal.SIGTERM)
        reached.append("after the second signal")

    runner, stage = report_stage_with(tmp_path, stuck)
    with pytest.raises(KeyboardInterrupt):
        runner.run_stage(stage, fresh=True)
    assert reached == ["after the first signal"]
    assert runner.state["stages"]["report"]["status"] == "interrupted"
