"""`workbench ppo` on a tiny 4-bit model: outputs, lineage, W&B offline, bad input, kill -9 and exact resume."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kill_after import kill_9_after

from workbench.errors import UserError
from workbench.modeling.chunked_logprobs import logprobs_from_logits
from workbench.rl.ppo_config import PPOConfig
from workbench.rl.trainer import PromptStream

RECIPE = """\
model_name_or_path: tiny-llama
load_in_4bit: true
dtype: float32
sft_adapter: {sft}
reward_adapter: {reward}
prompts:
  - path: bundled:prompts
    where: {{split: train}}
    max_samples: 40
total_steps: {steps}
batch_size: 4
mini_batch_size: 2
gradient_accumulation_steps: 2
ppo_epochs: 2
max_new_tokens: 6
temperature: 1.0
missing_eos_penalty: 1.0
kl_estimator: k3
adaptive_kl: true
kl_target: 0.1
kl_horizon: 100
learning_rate: 1.0e-3
save_steps: 2
sample_rows: 2
seed: 7
output_dir: {output_dir}
"""
PERF = ("perf/",)


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("ppo-adapters"))


def write_recipe(tmp_path: Path, name: str, adapters, steps: int = 4) -> tuple[Path, Path]:
    output_dir = tmp_path / name
    recipe = tmp_path / f"{name}.yaml"
    sft, reward = adapters
    recipe.write_text(RECIPE.format(sft=sft, reward=reward, steps=steps, output_dir=output_dir))
    return recipe, output_dir


def ppo_command(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "ppo", "--config", str(recipe), *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(command):
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)


# ── pure pieces ──────────────────────────────────────────────────────────────────────────────────────────────────────
def test_logprobs_from_logits_is_log_softmax_at_the_tokens():
    logits = torch.randn(2, 5, 11, generator=torch.Generator().manual_seed(0))
    tokens = torch.randint(0, 11, (2, 5), generator=torch.Generator().manual_seed(1))
    expected = torch.log_softmax(logits / 0.7, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose(logprobs_from_logits(logits, tokens, 0.7), expected, atol=1e-6)
    assert not torch.allclose(logprobs_from_logits(logits, tokens, 1.0), expected, atol=1e-3)


def test_prompt_stream_covers_each_prompt_once_per_epoch_and_resumes():
    stream = PromptStream(10, seed=3)
    first_epoch = stream.next_batch(4) + stream.next_batch(4) + stream.next_batch(2)
    assert sorted(first_epoch) == list(range(10))
    crossing = stream.next_batch(4)
    state = stream.state_dict()
    again = PromptStream(10, seed=3)
    again.load_state_dict(state)
    assert again.next_batch(6) == stream.next_batch(6)
    assert crossing and PromptStream(10, seed=4).next_batch(10) != first_epoch
    # Two processes take disjoint shares of each global batch.
    shards = [PromptStream(10, seed=3, rank=r, world=2).next_batch(3) for r in (0, 1)]
    assert not set(shards[0]) & set(shards[1]) and shards[0] + shards[1] == first_epoch[:6]


def test_config_errors_name_the_key():
    with pytest.raises(
        UserError, match="mini_batch_size \\(3\\) must divide batch_size x rollouts_per_prompt \\(8 x 1\\)"
    ):
        PPOConfig(sft_adapter="a", reward_adapter="b", batch_size=8, mini_batch_size=3).check()
    with pytest.raises(UserError, match="kl_estimator must be one of"):
        PPOConfig(sft_adapter="a", reward_adapter="b", kl_estimator="k9").check()
    with pytest.raises(UserError, match="sft_adapter is required"):
        PPOConfig(reward_adapter="b").check()
    with pytest.raises(UserError, match="value_model must be one of \\('adapter', 'ref_features'\\); got 'head'"):
        PPOConfig(sft_adapter="a", reward_adapter="b", value_model="head").check()
    with pytest.raises(UserError, match="value_model is for the critic; advantage_estimator reinforce\\+\\+ has none"):
        PPOConfig(
            sft_adapter="a", reward_adapter="b", advantage_estimator="reinforce++", value_model="ref_features"
        ).check()


# ── the stage ────────────────────────────────────────────────────────────────────────────────────────────────────────
def test_ppo_writes_adapter_with_lineage_metrics_and_offline_wandb(tmp_path, tiny_adapters):
    recipe, output_dir = write_recipe(tmp_path, "run", tiny_adapters, steps=2)
    result = run(ppo_command(recipe, "--optim", "paged_adamw_8bit"))  # bitsandbytes' paged 8-bit AdamW, on CPU too
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((output_dir / "adapter" / "workbench.json").read_text())
    assert manifest["stage"] == "ppo"
    assert [p["role"] for p in manifest["parents"]] == ["sft", "reward"]
    assert [p["stage"] for p in manifest["parents"]] == ["sft", "reward"]
    assert manifest["base_model"]["quantization"]["bits"] == 4
    assert manifest["wandb_run"]["mode"] == "offline"
    assert list((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (output_dir / "value_adapter" / "adapter_model.safetensors").exists()
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    assert [row["step"] for row in history] == [1, 2]
    for key in (
        "reward/mean",
        "reward/std",
        "objective/kl",
        "policy/entropy",
        "policy/clip_fraction",
        "policy/approx_kl",
        "value/loss",
        "value/explained_variance",
        "response/length",
        "perf/tokens_per_second",
    ):
        assert key in history[0], key
    # Per-phase seconds (NeMo-RL's timers): the rollout's phases fit inside the rollout, all of them inside the step.
    # The policy's log-probs are recorded while it samples (workbench/modeling/sampled_logprobs.py): no pass of its own
    rollout_phases = ["generation", "reference_logprobs", "values", "reward"]
    update_phases = ["policy_update", "value_update", "optimizer"]
    for row in history:
        assert "perf/policy_logprobs_seconds" not in row
        seconds = {phase: row[f"perf/{phase}_seconds"] for phase in rollout_phases + update_phases}
        assert all(value > 0 for value in seconds.values()), seconds
        assert sum(seconds[p] for p in rollout_phases) <= row["perf/rollout_seconds"]
        assert sum(seconds.values()) <= row["perf/step_seconds"]
    assert "reward/uncertainty" not in history[0]  # reward_uncertainty_coef 0: the plain head
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-5)  # policy == ref before the first update
    assert history[1]["objective/kl"] > 1e-6  # and apart after it
    assert history[1]["objective/kl_coef"] != history[0]["objective/kl_coef"]  # the adaptive controller moved
    assert (output_dir / "recipe.yaml").read_text().startswith("# Resolved recipe")
    # The trained policy adapter loads with plain PEFT on the base, and it moved away from the SFT adapter.
    from safetensors.torch import load_file

    trained = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    start = load_file(Path(tiny_adapters[0]) / "adapter_model.safetensors")
    assert trained.keys() == start.keys()
    assert max((trained[k] - start[k]).abs().max().item() for k in trained) > 1e-4
    again = run(ppo_command(recipe))
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_critic_free_grpo_saves_a_policy_and_no_value_adapter(tmp_path, tiny_adapters):
    recipe, output_dir = write_recipe(tmp_path, "grpo", tiny_adapters, steps=2)
    critic_free = ["--advantage_estimator", "grpo", "--rollouts_per_prompt", "2", "--kl_loss", "true"]
    result = run(ppo_command(recipe, *critic_free, "--adaptive_kl", "false"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 prompts x 2 responses" in result.stdout and "advantage estimator grpo" in result.stdout
    manifest = json.loads((output_dir / "adapter" / "workbench.json").read_text())
    assert manifest["extra"]["advantage_estimator"] == "grpo"
    assert not (output_dir / "value_adapter").exists()
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    assert [row["episodes"] for row in history] == [8, 16]
    assert all("value/loss" not in row and "policy/kl_loss" in row for row in history)


def test_a_critic_on_the_reference_features_saves_the_ref_lora_with_its_trained_head(tmp_path, tiny_adapters):
    """value_model ref_features: no value adapter is trained; value_adapter/ is what computed the values, the SFT
    LoRA (the reference) with the value head, which moved away from the reward head it started as."""
    from safetensors.torch import load_file

    from workbench.modeling.heads import HEAD_KEY

    recipe, output_dir = write_recipe(tmp_path, "ref-features", tiny_adapters, steps=2)
    result = run(ppo_command(recipe, "--value_model", "ref_features"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "advantage estimator gae, critic: value ref_features" in result.stdout
    assert "adapters ['policy', 'ref', 'reward'] on one" in result.stdout
    manifest = json.loads((output_dir / "value_adapter" / "workbench.json").read_text())
    assert manifest["task_type"] == "SEQ_CLS" and manifest["extra"]["value_model"] == "ref_features"
    saved = load_file(output_dir / "value_adapter" / "adapter_model.safetensors")
    sft = load_file(Path(tiny_adapters[0]) / "adapter_model.safetensors")
    reward = load_file(Path(tiny_adapters[1]) / "adapter_model.safetensors")
    head = saved.pop(HEAD_KEY)
    assert saved.keys() == sft.keys() and all(torch.equal(saved[key], sft[key]) for key in sft)
    assert head.shape == reward[HEAD_KEY].shape and (head - reward[HEAD_KEY]).abs().max() > 1e-4
    checkpoint = load_file(output_dir / "checkpoint-2" / "trainable.safetensors")
    assert [key for key in checkpoint if ".value" in key] == ["workbench_heads.value.weight"]
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    assert all({"value/loss", "value/explained_variance", "perf/value_update_seconds"} <= set(row) for row in history)


def test_bad_input_exits_2_naming_the_key(tmp_path, tiny_adapters):
    recipe, output_dir = write_recipe(tmp_path, "bad", tiny_adapters)
    result = run(ppo_command(recipe, "--mini_batch_size", "3"))
    assert result.returncode == 2 and "mini_batch_size (3)" in result.stderr and "Traceback" not in result.stderr
    result = run(ppo_command(recipe, "--reward_adapter", str(tiny_adapters[0])))  # an SFT adapter is no reward model
    assert (
        result.returncode == 2
        and "reward_adapter" in result.stderr
        and "found a policy adapter (CAUSAL_LM" in result.stderr
    )
    assert not (output_dir / "adapter").exists()
    result = run(ppo_command(recipe, "--reward_uncertainty_coef", "0.5"))  # a reward adapter without its posterior
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "reward_uncertainty.safetensors: expected the reward head's posterior" in result.stderr


def test_a_pessimistic_reward_logs_the_uncertainty_it_subtracts(tmp_path, tiny_adapters, tiny_model_path):
    """reward_uncertainty_coef: the rollouts' scores are the head's minus coef times u (the identity is proved on
    the single base in tests/test_reward_uncertainty.py); each step logs the mean u of its answers."""
    import shutil

    from workbench.modeling import reward_uncertainty

    sft, reward = tiny_adapters
    uncertain = shutil.copytree(reward, tmp_path / "reward")
    hidden = json.loads((Path(tiny_model_path) / "config.json").read_text())["hidden_size"]
    features = torch.randn(8, hidden, generator=torch.Generator().manual_seed(0))
    posterior = reward_uncertainty.fit(features, torch.tensor([[0, 1], [2, 3]]), torch.zeros(hidden), 1.0)
    reward_uncertainty.save(uncertain, posterior, 1.0, pairs=2)
    recipe, output_dir = write_recipe(tmp_path, "pessimistic", (sft, uncertain), steps=2)
    result = run(ppo_command(recipe, "--reward_uncertainty_coef", "0.5"))
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    assert all(row["reward/uncertainty"] > 0 for row in history) and len(history) == 2


# every lever with state in the checkpoint: the schedule's position (10 warm-up optimizer steps span PPO steps 1-3),
# the running score moments, the critic warm-up
LEVERS = ["--critic_warmup_steps", "1", "--warmup_steps", "10", "--value_learning_rate", "3e-3"]
LEVERS += ["--value_max_grad_norm", "0.5", "--use_score_scaling", "true", "--use_score_norm", "true"]
LEVERS += ["--score_clip", "2.0"]


def test_kill_9_then_resume_gives_the_same_metrics(tmp_path, tiny_adapters):
    """4 steps straight vs a run killed after its step-2 checkpoint and resumed: steps 3 and 4 match exactly."""
    straight_recipe, straight_dir = write_recipe(tmp_path, "straight", tiny_adapters, steps=4)
    straight = run(ppo_command(straight_recipe, *LEVERS))
    assert straight.returncode == 0, straight.stderr[-3000:]

    # The killed run is told to go on for long, so that it is surely still running when the kill comes.
    recipe, output_dir = write_recipe(tmp_path, "killed", tiny_adapters, steps=4)
    process = subprocess.Popen(
        ppo_command(recipe, "--total_steps", "1000", *LEVERS),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    kill_9_after(process, output_dir / "checkpoint-2" / "complete", "PPO", settle=0)
    assert not (output_dir / "adapter").exists() and not (output_dir / "checkpoint-4").exists()

    resumed = run(ppo_command(recipe, "--resume", *LEVERS))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from checkpoint-2" in resumed.stdout
    expected = json.loads((straight_dir / "metrics.json").read_text())["history"]
    got = json.loads((output_dir / "metrics.json").read_text())["history"]
    assert [row["step"] for row in got] == [1, 2, 3, 4]
    for want, have in zip(expected[2:], got[2:]):
        for key, value in want.items():
            if key.startswith(PERF):
                continue
            assert math.isclose(have[key], value, rel_tol=1e-6, abs_tol=1e-7), (want["step"], key, have[key], value)
    # The steps after the checkpoint really changed things (equal metrics are not trivially equal).
    assert expected[3]["reward/mean"] != expected[1]["reward/mean"]
    assert [row["policy/frozen"] for row in got] == [1.0, 0.0, 0.0, 0.0]
    assert expected[2]["learning_rate"] < expected[3]["learning_rate"]  # step 3 still warming up, step 4 not
    trained = (output_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert trained == (straight_dir / "adapter" / "adapter_model.safetensors").read_bytes()
