"""`workbench raft` on a tiny model: N answers per prompt from the SFT policy, the reward model (scored again here by
the reward stage's own model) keeps the best, TRL's SFTTrainer trains the SFT adapter on the kept answers; kill -9
then --resume reuses the samples and ends with the straight run's adapter (bad input: tests/test_bad_input.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kill_after import kill_9_after

RECIPE = """\
sft_adapter: {sft}
reward_adapter: {reward}
prompts:
  - path: bundled:prompts
    where: {{split: train}}
max_prompts: 6
num_samples: 3
max_new_tokens: 8
min_new_tokens: 1
temperature: 1.0
sampling_batch_size: 4
load_in_4bit: false
dtype: float32
bf16: false
max_length: 96
max_steps: 4
per_device_train_batch_size: 2
learning_rate: 5.0e-3
lr_scheduler_type: constant
logging_steps: 1
save_steps: 2
seed: 3
output_dir: {output_dir}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("raft-adapters"))


def raft(recipe: Path, *extra: str, **popen):
    command = [sys.executable, "-m", "workbench.cli", "raft", "--config", str(recipe), *extra]
    if popen:
        return subprocess.Popen(command, env=ENV, **popen)
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)


def write_recipe(folder: Path, adapters: tuple[Path, Path]) -> tuple[Path, Path]:
    recipe, output_dir = folder / "raft.yaml", folder / "raft"
    recipe.write_text(RECIPE.format(sft=adapters[0], reward=adapters[1], output_dir=output_dir))
    return recipe, output_dir


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_adapters):
    """6 prompts x 3 answers, then 4 steps on the 6 kept answers without interruption (checkpoints at 2 and 4)."""
    recipe, output_dir = write_recipe(tmp_path_factory.mktemp("raft-straight"), tiny_adapters)
    return recipe, output_dir, raft(recipe)


def read_samples(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "samples.jsonl").read_text().splitlines()]


def test_raft_keeps_the_reward_models_best_answer_and_trains_the_sft_adapter_on_it(straight_run, tiny_adapters):
    recipe, output_dir, result = straight_run
    assert result.returncode == 0, result.stderr[-3000:]
    samples = read_samples(output_dir)
    assert len(samples) == 6 and len({row["prompt_id"] for row in samples}) == 6
    assert all(len(row["completions"]) == len(row["rewards"]) == 3 for row in samples)

    # the rewards are the reward stage's own model's scores of the same answers, and the kept one is the highest
    from workbench.modeling.reward_model import load_reward_model, score_sequences
    from workbench.modeling.tokens import reward_input_ids

    model, tokenizer, _ = load_reward_model(tiny_adapters[1])
    sequences = [reward_input_ids(tokenizer, r["prompt"], text) for r in samples for text in r["completions"]]
    scores = score_sequences(model, sequences, tokenizer.pad_token_id)
    recorded = [reward for row in samples for reward in row["rewards"]]
    assert max(abs(a - b) for a, b in zip(scores, recorded)) < 1e-4
    for row in samples:
        assert row["rewards"][row["kept"]] == max(row["rewards"])
        assert row["kept"] == row["rewards"].index(max(row["rewards"]))  # the first of equals

    # the summary is those numbers: the kept answers' mean reward against every answer's
    metrics = json.loads((output_dir / "metrics.json").read_text())
    kept = [row["rewards"][row["kept"]] for row in samples]
    assert metrics["prompts"] == 6 and metrics["samples"] == 18 and metrics["global_step"] == 4
    assert metrics["reward_mean_kept"] == pytest.approx(sum(kept) / 6)
    assert metrics["reward_mean_samples"] == pytest.approx(sum(recorded) / 18)
    assert metrics["reward_mean_kept"] >= metrics["reward_mean_samples"]

    # the policy is the SFT adapter trained further, with its lineage
    from safetensors.torch import load_file

    manifest = json.loads((output_dir / "adapter" / "workbench.json").read_text())
    assert manifest["stage"] == "raft" and [p["role"] for p in manifest["parents"]] == ["sft", "reward"]
    trained = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    start = load_file(Path(tiny_adapters[0]) / "adapter_model.safetensors")
    assert trained.keys() == start.keys()
    assert max((trained[k].float() - start[k].float()).abs().max().item() for k in trained) > 1e-4

    again = raft(recipe)
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_kill_9_then_resume_reuses_the_samples_and_gives_the_same_adapter(tmp_path, straight_run, tiny_adapters):
    """A run killed after its step-2 checkpoint and resumed keeps its samples (not drawn again) and ends with the
    straight run's adapter."""
    import torch
    from safetensors.torch import load_file

    recipe, output_dir = write_recipe(tmp_path, tiny_adapters)
    # told to go on for long, so that it is surely still running when the kill comes (a constant learning rate: the
    # schedule does not depend on max_steps; the resumed run has the recipe's 4)
    process = raft(recipe, "--max_steps", "1000", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # at once: a tiny model's steps take milliseconds, and a later checkpoint than the straight run's last (4) would
    # resume past it (the Trainer writes trainer_state.json after the weights and optimizer, before rng_state.pth,
    # which LoRA without dropout does not need)
    kill_9_after(process, output_dir / "checkpoint-2" / "trainer_state.json", "RAFT", settle=0)
    assert not (output_dir / "adapter").exists()
    drawn = (output_dir / "samples.jsonl").stat().st_mtime_ns

    # resumed with other sampling settings, the checkpoint's answers are not the recipe's: refused, nothing changed
    other = raft(recipe, "--resume", "--temperature", "0.5")
    assert other.returncode == 2 and "samples.jsonl: expected the answers checkpoint-" in other.stderr
    assert (output_dir / "samples.jsonl").stat().st_mtime_ns == drawn

    resumed = raft(recipe, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "reusing the 6 prompts' answers" in resumed.stdout
    assert (output_dir / "samples.jsonl").stat().st_mtime_ns == drawn
    assert read_samples(output_dir) == read_samples(straight_run[1])
    want = load_file(straight_run[1] / "adapter" / "adapter_model.safetensors")
    have = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    assert want.keys() == have.keys()
    assert all(torch.allclose(have[k].float(), want[k].float(), atol=1e-6) for k in want)
