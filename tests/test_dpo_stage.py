"""`workbench dpo` on a tiny 4-bit model: TRL's DPOTrainer from an SFT adapter whose frozen copy is the reference on
the same base; the adapter loads with plain PEFT; kill -9 and --resume give the same adapter; a finished run is
refused (bad input: tests/test_bad_input.py)."""

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
load_in_4bit: true
dtype: float32
bf16: false
datasets:
  - path: bundled:preferences
    where: {{split: train}}
    max_samples: 24
eval_datasets:
  - path: bundled:preferences
    where: {{split: test}}
    max_samples: 8
max_length: 96
beta: 0.1
max_steps: 4
per_device_train_batch_size: 4
per_device_eval_batch_size: 8
learning_rate: 5.0e-3
lr_scheduler_type: constant
logging_steps: 1
save_steps: 2
seed: 3
output_dir: {output_dir}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("dpo-adapters"))[0]


def dpo(recipe: Path, *extra: str):
    command = [sys.executable, "-m", "workbench.cli", "dpo", "--config", str(recipe), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=600)


def write_recipe(folder: Path, sft_adapter: Path) -> tuple[Path, Path]:
    recipe, output_dir = folder / "dpo.yaml", folder / "dpo"
    recipe.write_text(RECIPE.format(sft=sft_adapter, output_dir=output_dir))
    return recipe, output_dir


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, sft_adapter):
    """4 DPO steps without interruption (checkpoints at steps 2 and 4)."""
    recipe, output_dir = write_recipe(tmp_path_factory.mktemp("dpo-straight"), sft_adapter)
    return recipe, output_dir, dpo(recipe)


def test_dpo_trains_the_sft_adapter_against_its_frozen_copy_on_one_base(straight_run, sft_adapter, tiny_model_path):
    recipe, output_dir, result = straight_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert "adapters ['default', 'ref'] on one 4-bit" in result.stdout  # the reference is an adapter, not a model
    manifest = json.loads((output_dir / "adapter" / "workbench.json").read_text())
    assert manifest["stage"] == "dpo" and manifest["base_model"]["quantization"]["bits"] == 4
    assert manifest["parents"][0]["role"] == "sft" and manifest["parents"][0]["path"] == str(sft_adapter.resolve())
    assert [p["path"] for p in manifest["parents"][1:]] == ["bundled:preferences"] * 2
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["global_step"] == 4 and 0.0 <= metrics["eval_rewards/accuracies"] <= 1.0
    assert "eval_rewards/margins" in metrics and math_finite(metrics["train_loss"])

    # the DPO adapter loads with plain PEFT on the base and has moved away from the SFT adapter it started from
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    trained = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    start = load_file(Path(sft_adapter) / "adapter_model.safetensors")
    assert trained.keys() == start.keys()
    assert max((trained[k].float() - start[k].float()).abs().max().item() for k in trained) > 1e-4
    # the reference (TRL's `ref` copy, saved in the checkpoint beside `default`) is still the SFT adapter, bit for bit
    reference = load_file(output_dir / "checkpoint-4" / "ref" / "adapter_model.safetensors")
    assert reference.keys() == start.keys()
    assert all(torch.equal(reference[k].to(start[k].dtype), start[k]) for k in start)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, output_dir / "adapter")
    assert set(model.peft_config) == {"default"}  # only the trained policy was saved, not the reference copy

    again = dpo(recipe)
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_kill_9_then_resume_gives_the_same_adapter(tmp_path, straight_run, sft_adapter):
    """A run killed after its step-2 checkpoint and resumed ends with the straight run's adapter."""
    import torch
    from safetensors.torch import load_file

    recipe, output_dir = write_recipe(tmp_path, sft_adapter)
    command = [sys.executable, "-m", "workbench.cli", "dpo", "--config", str(recipe)]
    # told to go on for long, so that it is surely still running when the kill comes (a constant learning rate: the
    # schedule does not depend on max_steps; the resumed run has the recipe's 4)
    process = subprocess.Popen(
        [*command, "--max_steps", "1000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    # 0.5 s after trainer_state.json: the checkpoint's last files (the Trainer writes it before rng_state.pth)
    kill_9_after(process, output_dir / "checkpoint-2" / "trainer_state.json", "DPO")
    assert not (output_dir / "adapter").exists()
    resumed = dpo(recipe, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    want = load_file(straight_run[1] / "adapter" / "adapter_model.safetensors")
    have = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    assert want.keys() == have.keys()
    assert all(torch.allclose(have[k].float(), want[k].float(), atol=1e-6) for k in want)
    got = json.loads((output_dir / "metrics.json").read_text())
    assert got["global_step"] == 4


def math_finite(value: float) -> bool:
    return value == value and abs(value) != float("inf")
