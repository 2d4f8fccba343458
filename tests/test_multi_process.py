"""Two processes (`accelerate launch`, gloo on CPU) against one, at the same global batch: SFT, reward and PPO.

This is the path to many GPUs (recipes/accelerate/multi_gpu.yaml), run here with 2 processes on CPU: torchrun starts
them and accelerate picks gloo. Each pair of runs uses float32 compute and no dropout, so that the only differences
left are the order of floating-point sums: one process on a batch of 4 and two processes on 2 each then take the
same steps. Also: only the main process writes outputs and W&B; a run whose rank 1 is killed resumes with --resume.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file
from test_ppo_stage import RECIPE as PPO_RECIPE
from test_reward_stage import RECIPE as REWARD_RECIPE
from test_reward_stage import labeled_data  # noqa: F401 - a fixture
from test_sft_stage import RECIPE as SFT_RECIPE

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EXACT = "dtype: float32\nlora_dropout: 0.0\nlogging_steps: 1\n"


def one_process(stage: str, recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", stage, "--config", str(recipe), *extra]


def two_processes(stage: str, recipe: Path, *extra: str) -> list[str]:
    """The README's multi-GPU command with 2 processes; bf16 autocast off, as in the one-process run."""
    launch = ["accelerate", "launch", "--config_file", str(ROOT / "recipes/accelerate/multi_gpu.yaml")]
    launch += ["--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port())]
    return [*launch, "-m", "workbench.cli", stage, "--config", str(recipe), *extra]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run(command: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def logged(output_dir: Path, checkpoint: str, key: str) -> list[tuple[int, float]]:
    state = json.loads((output_dir / checkpoint / "trainer_state.json").read_text())
    return [(entry["step"], entry[key]) for entry in state["log_history"] if key in entry]


def distance(x: dict, y: dict) -> float:
    """L2 distance over all adapter tensors."""
    return sum(((x[k].float() - y[k].float()) ** 2).sum().item() for k in x) ** 0.5


def adapter_weights(output_dir: Path, folder: str = "adapter") -> dict:
    return load_file(output_dir / folder / "adapter_model.safetensors")


def wandb_runs(output_dir: Path) -> list[Path]:
    return sorted((output_dir / "wandb").glob("offline-run-*"))


def kill_rank_1_after(command: list[str], ready: Path) -> None:
    """Start `command`, wait for `ready` to exist, then kill -9 the process of rank 1; the launcher stops the rest."""
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    deadline = time.time() + 600
    while not ready.exists():
        assert launcher.poll() is None, "the run ended before the checkpoint it was to be killed after"
        assert time.time() < deadline
        time.sleep(0.05)
    rank_1 = [pid for pid in descendants(launcher.pid) if environment(pid).get("RANK") == "1"]
    assert len(rank_1) == 1, rank_1
    os.kill(rank_1[0], signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0


def descendants(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            children += [int(child), *descendants(int(child))]
    return children


def environment(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)


# ── SFT ──────────────────────────────────────────────────────────────────────────────────────────────────────────────
def sft_recipe(tmp: Path, name: str, per_device: int) -> tuple[Path, Path]:
    text = SFT_RECIPE.format(max_steps=8, save_steps=4, output_dir=tmp / name).replace("logging_steps: 2\n", "")
    text = text.replace("per_device_train_batch_size: 4", f"per_device_train_batch_size: {per_device}")
    return write(tmp / f"{name}.yaml", text + EXACT), tmp / name


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory, tiny_model_path):
    tmp = tmp_path_factory.mktemp("sft")
    one_recipe, one_dir = sft_recipe(tmp, "one", per_device=4)
    two_recipe, two_dir = sft_recipe(tmp, "two", per_device=2)
    run(one_process("sft", one_recipe))
    two = run(two_processes("sft", two_recipe))
    return one_dir, two_dir, two, tmp


def test_sft_two_processes_take_the_one_process_steps(sft_runs):
    one_dir, two_dir, two, _ = sft_runs
    one_loss, two_loss = logged(one_dir, "checkpoint-8", "loss"), logged(two_dir, "checkpoint-8", "loss")
    assert [step for step, _ in two_loss] == list(range(1, 9))  # 8 steps of 2 x 2 rows: the global batch of 4
    for (step, want), (_, got) in zip(one_loss, two_loss):
        assert math.isclose(got, want, abs_tol=2e-4), (step, got, want)  # measured: within 6e-5
    # The gradient of each step, before clipping: the same (without gradient sync it was 1.5x at step 1, measured).
    one_norm, two_norm = logged(one_dir, "checkpoint-8", "grad_norm"), logged(two_dir, "checkpoint-8", "grad_norm")
    for (step, want), (_, got) in zip(one_norm, two_norm):
        assert math.isclose(got, want, rel_tol=0.01), (step, got, want)
    # Same weights at the end, up to bf16 rounding of the stored adapter: measured 0.007, against 0.13 moved by the
    # last 4 steps.
    one, two_weights = adapter_weights(one_dir), adapter_weights(two_dir)
    moved = distance(load_file(one_dir / "checkpoint-4" / "adapter_model.safetensors"), one)
    assert distance(one, two_weights) < moved / 8
    # Held-out loss on the base (step 0, before any update) and at the end: the same eval set on both.
    one_metrics = json.loads((one_dir / "metrics.json").read_text())
    two_metrics = json.loads((two_dir / "metrics.json").read_text())
    assert math.isclose(two_metrics["base_eval_loss"], one_metrics["base_eval_loss"], rel_tol=1e-5)
    assert math.isclose(two_metrics["eval_loss"], one_metrics["eval_loss"], rel_tol=1e-3)


def test_sft_only_the_main_process_writes(sft_runs):
    _, two_dir, two, _ = sft_runs
    assert len(wandb_runs(two_dir)) == 1  # one W&B run, not one per process
    assert two.stdout.count("adapter saved to") == 1
    manifest = json.loads((two_dir / "adapter" / "workbench.json").read_text())
    assert manifest["metrics"]["global_step"] == 8 and manifest["wandb_run"]["mode"] == "offline"


def test_sft_killed_rank_resumes(sft_runs):
    """kill -9 of rank 1 after the step-4 checkpoint stops the run; --resume ends where the straight run ends."""
    _, two_dir, _, tmp = sft_runs
    recipe, output_dir = sft_recipe(tmp, "killed", per_device=2)
    kill_rank_1_after(two_processes("sft", recipe), output_dir / "checkpoint-4" / "trainer_state.json")
    assert not (output_dir / "adapter").exists()
    resumed = run(two_processes("sft", recipe, "--resume"))
    assert resumed.stdout.count("adapter saved to") == 1
    assert [step for step, _ in logged(output_dir, "checkpoint-8", "loss")] == list(range(1, 9))
    straight, again = adapter_weights(two_dir), adapter_weights(output_dir)
    moved = distance(load_file(two_dir / "checkpoint-4" / "adapter_model.safetensors"), straight)
    assert distance(straight, again) < moved / 8


def test_refused_output_dir_stops_every_process(sft_runs):
    """A finished output_dir refused on the main process: exit 2 with one message, no process left waiting."""
    _, two_dir, _, tmp = sft_runs
    result = subprocess.run(
        two_processes("sft", tmp / "two.yaml"), capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT
    )
    assert result.returncode != 0
    assert result.stderr.count("holds a finished sft result") == 1


def test_cpu_flag_that_would_start_one_process_is_refused(tmp_path, tiny_model_path):
    """`accelerate launch --cpu --num_processes 2` starts one process (accelerate 1.x): refused, naming the fix."""
    recipe, output_dir = sft_recipe(tmp_path, "cpu", per_device=2)
    command = ["accelerate", "launch", "--cpu", "--num_processes", "2", "-m", "workbench.cli", "sft"]
    result = subprocess.run(
        [*command, "--config", str(recipe)], capture_output=True, text=True, env=ENV, timeout=300, cwd=ROOT
    )
    assert result.returncode != 0
    assert "starts 1 process, not 2" in result.stderr and "recipes/accelerate/multi_gpu.yaml" in result.stderr
    assert not output_dir.exists()


# ── reward ───────────────────────────────────────────────────────────────────────────────────────────────────────────
# the length term's weight lives outside the model, so DDP does not average its gradient: the trainer does
# (workbench/modeling/length_term.py). Its decorrelation term is a cosine over each process's own pairs, not a mean,
# so the equivalence holds with it off.
@pytest.mark.parametrize("extra", ["", "length_term: true\nlength_decorrelation: 0.0\n"], ids=["plain", "length_term"])
def test_reward_two_processes_take_the_one_process_steps(tmp_path, labeled_data, tiny_model_path, extra):  # noqa: F811
    runs = {}
    for name, per_device, launcher in (("one", 4, one_process), ("two", 2, two_processes)):
        text = REWARD_RECIPE.format(data=labeled_data, max_steps=6, save_steps=6, output_dir=tmp_path / name)
        text = text.replace("logging_steps: 2\n", "").replace("dtype: float32\n", "")
        text = text.replace("per_device_train_batch_size: 4", f"per_device_train_batch_size: {per_device}")
        recipe = write(tmp_path / f"{name}.yaml", text + EXACT + extra)
        runs[name] = (run(launcher("reward", recipe)), tmp_path / name)
    (_, one_dir), (two, two_dir) = runs["one"], runs["two"]
    one_loss, two_loss = logged(one_dir, "checkpoint-6", "loss"), logged(two_dir, "checkpoint-6", "loss")
    assert [step for step, _ in two_loss] == list(range(1, 7))
    for (step, want), (_, got) in zip(one_loss, two_loss):
        assert math.isclose(got, want, rel_tol=1e-3, abs_tol=1e-4), (step, got, want)
    one_metrics = json.loads((one_dir / "metrics.json").read_text())
    two_metrics = json.loads((two_dir / "metrics.json").read_text())
    assert math.isclose(two_metrics["eval_accuracy"], one_metrics["eval_accuracy"])
    assert math.isclose(two_metrics["eval_mean_margin"], one_metrics["eval_mean_margin"], rel_tol=1e-2, abs_tol=1e-4)
    assert len(wandb_runs(two_dir)) == 1 and two.stdout.count("adapter saved to") == 1
    if extra:
        assert one_metrics["length_weight"] != 0.0
        assert math.isclose(two_metrics["length_weight"], one_metrics["length_weight"], rel_tol=1e-3, abs_tol=1e-5)


# ── PPO ──────────────────────────────────────────────────────────────────────────────────────────────────────────────
# Near-greedy sampling (temperature 1e-4: the same token whatever the random draw), one minibatch per step and no
# advantage whitening (whitening is over each process's own rollouts, as in TRL): two processes on 2 prompts each then
# take the steps one process takes on 4. Learning rate 1e-4, not the recipe's 1e-3: after one step at 1e-3 the tiny
# policy is saturated (KL 1331 at temperature 1e-4, entropy 0.03) and step 2's gradient norm moved by 2.4% with the
# order of float sums alone on an AVX512 CPU (measured); at 1e-4 every logged value matches within 4e-6.
PPO_EXACT = (
    "--temperature 0.0001 --ppo_epochs 1 --whiten_advantages false --gradient_accumulation_steps 1 "
    "--missing_eos_penalty 0.0 --learning_rate 1e-4"
).split()
PPO_CURVE = ("reward/mean", "objective/kl", "value/loss", "policy/loss", "grad_norm", "value/explained_variance")


@pytest.fixture(scope="module")
def ppo_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("mp-ppo-adapters"))


def ppo_recipe(tmp: Path, name: str, adapters, per_device: int, steps: int = 2) -> tuple[Path, Path]:
    sft, reward = adapters
    text = PPO_RECIPE.format(sft=sft, reward=reward, steps=steps, output_dir=tmp / name)
    text = text.replace(
        "batch_size: 4\nmini_batch_size: 2", f"batch_size: {per_device}\nmini_batch_size: {per_device}"
    )
    return write(tmp / f"{name}.yaml", text), tmp / name


def history(output_dir: Path) -> list[dict]:
    return json.loads((output_dir / "metrics.json").read_text())["history"]


def test_ppo_two_processes_take_the_one_process_steps(tmp_path, ppo_adapters):
    one_recipe, one_dir = ppo_recipe(tmp_path, "one", ppo_adapters, per_device=4)
    two_recipe, two_dir = ppo_recipe(tmp_path, "two", ppo_adapters, per_device=2)
    run(one_process("ppo", one_recipe, *PPO_EXACT))
    two = run(two_processes("ppo", two_recipe, *PPO_EXACT))
    one_history, two_history = history(one_dir), history(two_dir)
    assert [row["episodes"] for row in two_history] == [4, 8]  # 2 processes x 2 prompts a step
    for want, got in zip(one_history, two_history):
        for key in PPO_CURVE:
            assert math.isclose(got[key], want[key], rel_tol=1e-3, abs_tol=1e-5), (want["step"], key, got, want)
    assert one_history[-1]["value/loss"] != one_history[0]["value/loss"]  # it learned: the match is not trivial
    one, two_weights = adapter_weights(one_dir), adapter_weights(two_dir)
    assert distance(one, two_weights) < 1e-3 * max(1.0, sum(v.float().norm().item() for v in one.values()))
    assert len(wandb_runs(two_dir)) == 1 and two.stdout.count("adapter saved to") == 1


def test_ppo_killed_rank_resumes_exactly(tmp_path, ppo_adapters):
    """Sampling at temperature 1 (each process its own random stream): a run whose rank 1 is killed after the
    step-2 checkpoint and resumed takes exactly the straight run's steps 3 and 4 (every process's RNG restored)."""
    straight_recipe, straight_dir = ppo_recipe(tmp_path, "straight", ppo_adapters, per_device=2, steps=4)
    run(two_processes("ppo", straight_recipe))
    recipe, output_dir = ppo_recipe(tmp_path, "killed", ppo_adapters, per_device=2, steps=4)
    kill_rank_1_after(two_processes("ppo", recipe, "--total_steps", "1000"), output_dir / "checkpoint-2" / "complete")
    assert not (output_dir / "adapter").exists()
    resumed = run(two_processes("ppo", recipe, "--resume"))
    assert resumed.stdout.count("resumed from checkpoint-2") == 1
    expected, got = history(straight_dir), history(output_dir)
    assert [row["step"] for row in got] == [1, 2, 3, 4]
    for want, have in zip(expected[2:], got[2:]):
        for key, value in want.items():
            if not key.startswith("perf/"):
                assert math.isclose(have[key], value, rel_tol=1e-6, abs_tol=1e-7), (want["step"], key, have, value)
    assert expected[3]["reward/mean"] != expected[1]["reward/mean"]
    assert distance(adapter_weights(output_dir), adapter_weights(straight_dir)) == 0
