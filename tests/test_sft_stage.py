"""`workbench sft` end to end on a tiny 4-bit model: outputs, manifest, W&B offline run, errors, kill -9 and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kill_after import kill_9_after
from safetensors.torch import load_file

RECIPE = """\
model_name_or_path: tiny-llama
datasets:
  - path: bundled:instructions
    where: {{split: train}}
    max_samples: 96
eval_datasets:
  - path: bundled:instructions
    where: {{split: test}}
    max_samples: 8
assistant_only_loss: true
max_steps: {max_steps}
per_device_train_batch_size: 4
per_device_eval_batch_size: 8
learning_rate: 1.0e-3
max_length: 128
save_steps: {save_steps}
eval_steps: 1000
logging_steps: 2
gradient_checkpointing: false
dataloader_num_workers: 0
output_dir: {output_dir}
"""


def sft_command(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "sft", "--config", str(recipe), *extra]


def write_recipe(tmp_path: Path, name: str, max_steps=8, save_steps=4) -> tuple[Path, Path]:
    output_dir = tmp_path / name
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(RECIPE.format(max_steps=max_steps, save_steps=save_steps, output_dir=output_dir))
    return recipe, output_dir


def run(command, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, tiny_model_path):
    """8 steps, checkpoints at 4 and 8."""
    recipe, output_dir = write_recipe(tmp_path_factory.mktemp("sft"), "run")
    result = run(sft_command(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, output_dir


def test_sft_writes_adapter_manifest_recipe_and_offline_wandb(straight_run):
    recipe, output_dir = straight_run
    adapter = output_dir / "adapter"
    manifest = json.loads((adapter / "workbench.json").read_text())
    assert manifest["stage"] == "sft" and manifest["peft_method"] == "lora"
    assert manifest["base_model"]["quantization"] == {
        "bits": 4,
        "quant_type": "nf4",
        "double_quant": True,
        "compute_dtype": "bfloat16",
        "quant_storage": "uint8",
    }
    assert manifest["data_fingerprint"].startswith("sha256:")
    assert manifest["metrics"]["global_step"] == 8 and "base_eval_loss" in manifest["metrics"]
    assert manifest["wandb_run"]["mode"] == "offline"
    assert list((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    rerun = (output_dir / "recipe.yaml").read_text()
    assert rerun.startswith("# Resolved recipe") and "model_name_or_path: tiny-llama" in rerun
    assert "overwrite" not in rerun and "resume" not in rerun
    # Running again without --resume or --overwrite refuses to clobber the checkpoints.
    again = run(sft_command(recipe))
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_missing_column_exits_2_naming_it(tmp_path, tiny_model_path):
    data = tmp_path / "q.jsonl"
    data.write_text(json.dumps({"quote": "Brevity is the soul of wit."}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\noutput_dir: {tmp_path / 'o'}\ndatasets:\n"
        f"  - path: {data}\n    template: 'Quote: {{quote}} Author: {{author}}'\n"
    )
    result = run(sft_command(recipe))
    assert result.returncode == 2
    assert "missing column(s) ['author']" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "adapter").exists()


def test_kill_9_then_resume_continues_from_checkpoint(tmp_path, straight_run):
    """A run killed after its step-4 checkpoint and resumed ends where an uninterrupted run ends."""
    _, straight_dir = straight_run
    recipe, output_dir = write_recipe(tmp_path, "killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(sft_command(recipe), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    # 0.5 s after trainer_state.json: the rest of the checkpoint, and on to step 5+
    kill_9_after(process, output_dir / "checkpoint-4" / "trainer_state.json", "training")
    assert not (output_dir / "adapter").exists()  # nothing half-finished looks finished

    resumed = run(sft_command(recipe, "--resume"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    state = json.loads((output_dir / "checkpoint-8" / "trainer_state.json").read_text())
    steps_logged = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps_logged == [2, 4, 6, 8]  # history up to step 4 came back from the checkpoint
    resumed_weights = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    straight_weights = load_file(straight_dir / "adapter" / "adapter_model.safetensors")
    at_kill = load_file(output_dir / "checkpoint-4" / "adapter_model.safetensors")

    def distance(x, y):  # L2 over all adapter weights
        return sum(((x[k].float() - y[k].float()) ** 2).sum().item() for k in x) ** 0.5

    # Same data order, optimizer moments and RNG after resume: the weights the uninterrupted run reaches (measured:
    # 0.0 apart; up to bf16 rounding is allowed), while steps 5-8 moved them far from where the kill left them
    # (measured: 0.14).
    assert {v.dtype for v in resumed_weights.values()} == {v.dtype for v in straight_weights.values()}
    assert distance(at_kill, straight_weights) > 20 * distance(resumed_weights, straight_weights)


def test_packing_and_prompt_completion_template(tmp_path, tiny_model_path):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": f"{2 * i}."}) + "\n" for i in range(40)))
    recipe = tmp_path / "p.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\noutput_dir: {tmp_path / 'o'}\nmax_steps: 2\nmax_length: 64\n"
        "per_device_train_batch_size: 2\npacking: true\nwandb_mode: disabled\ngradient_checkpointing: false\n"
        f"datasets:\n  - path: {data}\n    prompt_template: 'Q: {{q}}\\nA: '\n    completion_template: '{{a}}'\n"
    )
    result = run(sft_command(recipe))
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "o" / "adapter" / "workbench.json").read_text())
    assert manifest["extra"]["format"] == "prompt_completion" and manifest["metrics"]["global_step"] == 2
