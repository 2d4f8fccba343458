"""The tiny `workbench pipeline` recipe (tiny-llama, a few steps a stage) and how the pipeline tests run it, plan it
and watch it: tests/test_pipeline_plan.py (no model, no server) and tests/test_pipeline.py (end to end)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from workbench.pipeline.pipeline_recipe import stages_of

STAGES = stages_of(["ppo"])  # the stages of a run with the default methods

OVERRIDES = {
    "sft": {
        "per_device_train_batch_size": 2,
        "max_length": 64,
        "logging_steps": 1,
        "dtype": "float32",
        "eval_datasets": [{"path": "bundled:instructions", "where": {"split": "test"}, "max_samples": 4}],
    },
    "generate": {"max_new_tokens": 8, "min_new_tokens": 4, "batch_size": 8},
    # the quickstart's reward model reads a middle layer with its head fitted first: here layer 1 of tiny-llama's 2
    "reward": {"per_device_train_batch_size": 4, "max_length": 96, "logging_steps": 1, "dtype": "float32"}
    | {"reward_layer": 1, "linear_head_fit": True},
    # one critic warm-up step: the default recipe's 2 would leave none of the 2 PPO steps to the policy
    "ppo": {"batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 6, "ppo_epochs": 1, "dtype": "float32"}
    | {"critic_warmup_steps": 1},
    "dpo": {"per_device_train_batch_size": 2, "max_length": 96, "logging_steps": 1, "dtype": "float32"}
    | {"eval_split_size": 0.3},
    "raft": {"max_prompts": 4, "num_samples": 2, "max_new_tokens": 6, "sampling_batch_size": 8, "max_steps": 2}
    | {"per_device_train_batch_size": 2, "max_length": 96, "logging_steps": 1, "dtype": "float32"},
    "eval": {"max_new_tokens": 8, "batch_size": 4},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def tiny_recipe(path: Path, run_dir: Path, argilla_home: Path, port: int, **changes) -> Path:
    recipe = {
        "run_dir": str(run_dir),
        "model_name_or_path": "tiny-llama",
        "sft_max_steps": 4,
        "num_prompts": 6,
        "num_candidates": 3,
        "annotators": 2,
        "annotator_noise": 0.3,
        "reward_max_steps": 4,
        "ppo_steps": 2,
        "eval_prompts": 4,
        "argilla_home": str(argilla_home),
        "argilla_port": port,
        "wandb_mode": "offline",
        "overrides": json.loads(json.dumps(OVERRIDES)),
    }
    for key, value in changes.items():
        if key.startswith("overrides."):
            recipe["overrides"][key.split(".")[1]].update(value)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


def pipeline(recipe: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench.cli", "pipeline", "--config", str(recipe), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def plan_for(recipe: Path, *argv: str):
    """The pipeline's Planner for `recipe` (and command-line flags), as `workbench pipeline` would build it."""
    from workbench.pipeline.plan import Planner
    from workbench.pipeline.runner import load_state
    from workbench.stages.pipeline import TRACKING_KEYS, parse

    cfg, tracking_cfg, given = parse(["--config", str(recipe), *argv])
    return Planner(cfg, tracking_cfg, given & TRACKING_KEYS, load_state(Path(cfg.run_dir), None), recipe)


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "pipeline.json").read_text())


def processes_of(run_dir: Path) -> list[str]:
    """Command lines of live processes working on `run_dir` (a stage names its recipe or output under it)."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                line = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and str(run_dir) in line and int(entry.name) != os.getpid():
            found.append(line)
    return found


def kill_9_during(recipe: Path, stage: str, run_dir: Path) -> None:
    """Start the pipeline and `kill -9` it once `stage` is at work (its log shows the stage's command and output
    after it); the stage's own process dies with it. Leaves the stage recorded as running, not done."""
    log = run_dir / "logs" / f"{stage}.log"
    offset = log.stat().st_size if log.exists() else 0
    command = [sys.executable, "-m", "workbench.cli", "pipeline", "--config", str(recipe)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 600
    while True:
        assert process.poll() is None, f"the pipeline ended before {stage} got to work"
        assert time.monotonic() < deadline, f"{stage} never got to work"
        new = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""  # offset counts bytes
        if "$ workbench" in new and len(new.split("$ workbench", 1)[1].strip().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state_of(run_dir)["stages"][stage]["status"] == "running"
    deadline = time.monotonic() + 15
    while processes_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_of(run_dir), "a stage outlived its killed pipeline"
