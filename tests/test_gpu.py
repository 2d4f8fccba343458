"""The CUDA path: 4-bit layers on the GPU, paged 8-bit optimizers, a QLoRA SFT step. Skipped without CUDA."""

from __future__ import annotations

import pytest
import torch
from model_args import lora, margs, quant

from workbench.modeling import adapters, loading

pytestmark = pytest.mark.gpu


def test_4bit_layers_live_on_cuda_and_train(tiny_model_path):
    import bitsandbytes as bnb

    precision = quant(load_in_4bit=True, double_quant=True, dtype="bfloat16")
    model = loading.load_model(margs(str(tiny_model_path), precision, device_map="cuda"), for_training=True)
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit) and layer.weight.device.type == "cuda"
    model = adapters.attach(model, "default", config=lora(r=8))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = bnb.optim.PagedAdamW8bit(trainable, lr=1e-3)
    ids = torch.randint(3, 1000, (2, 32), device="cuda")
    before = [p.detach().clone() for p in trainable]
    for _ in range(2):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))


def test_cuda_device_map_auto_pins_quantized_model_to_this_process_gpu():
    device_map = loading.resolve_device_map("auto", loading.get_quantization(margs("x", quant(load_in_4bit=True))))
    assert device_map == {"": 0}


def test_sft_step_on_cuda(tmp_path, tiny_model_path):
    import subprocess
    import sys

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_name_or_path: tiny-llama\nmax_steps: 3\nper_device_train_batch_size: 4\nmax_length: 128\n"
        f"optim: paged_adamw_8bit\nbf16: true\noutput_dir: {tmp_path / 'out'}\nwandb_mode: disabled\n"
        "datasets:\n  - path: bundled:instructions\n    max_samples: 32\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "sft", "--config", str(recipe)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "out" / "adapter" / "workbench.json").exists()


# ── every training stage on the GPU: a few steps each on the tiny model's 4-bit base, bf16 compute ───────────────────
STAGE_BASE = """\
load_in_4bit: true
use_bnb_nested_quant: true
dtype: bfloat16
wandb_mode: disabled
seed: 0
output_dir: {output_dir}
"""
TRAINER = """\
bf16: true
optim: paged_adamw_8bit
gradient_checkpointing: true
max_steps: 3
per_device_train_batch_size: 4
learning_rate: 1.0e-3
logging_steps: 1
save_steps: 100
"""
PAIRS = "datasets:\n  - path: bundled:preferences\n    where: {{split: train}}\n    max_samples: 24\n"
STAGES = {
    "reward": "model_name_or_path: tiny-llama\n" + TRAINER + "max_length: 256\n" + PAIRS,
    "dpo": "sft_adapter: {sft}\n" + TRAINER + "max_length: 128\n" + PAIRS,
    "ppo": "sft_adapter: {sft}\nreward_adapter: {reward}\nprompts:\n  - path: bundled:prompts\n    max_samples: 16\n"
    "total_steps: 2\nbatch_size: 4\nmini_batch_size: 2\nmax_new_tokens: 8\ngradient_checkpointing: true\n"
    "optim: paged_adamw_8bit\n",
}


@pytest.fixture(scope="module")
def gpu_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("gpu-adapters"))


def run_stage(stage: str, tmp_path, gpu_adapters, *extra: str) -> tuple[dict, float]:
    """The stage's main() in a fresh process on a recipe of STAGES: (its metrics.json, the peak GPU MiB it took)."""
    import json
    import subprocess
    import sys

    sft, reward = gpu_adapters
    recipe = tmp_path / f"{stage}.yaml"
    recipe.write_text((STAGE_BASE + STAGES[stage]).format(output_dir=tmp_path / stage, sft=sft, reward=reward))
    probe = (
        f"import sys, json, torch\nfrom workbench.stages import {stage} as s\ncode = s.main(sys.argv[1:])\n"
        "print('PEAK', json.dumps([code, torch.cuda.max_memory_allocated() / 2**20]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, "--config", str(recipe), *extra], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    code, peak = json.loads([line for line in result.stdout.splitlines() if line.startswith("PEAK")][-1][5:])
    assert code == 0
    return json.loads((tmp_path / stage / "metrics.json").read_text()), peak


def test_reward_steps_on_cuda(tmp_path, gpu_adapters):
    metrics, peak = run_stage("reward", tmp_path, gpu_adapters)
    assert peak > 1  # the model and its steps lived on the GPU
    assert (tmp_path / "reward" / "adapter" / "workbench.json").exists()
    assert metrics


def test_dpo_steps_on_cuda(tmp_path, gpu_adapters):
    metrics, peak = run_stage("dpo", tmp_path, gpu_adapters)
    assert peak > 1
    assert (tmp_path / "dpo" / "adapter" / "workbench.json").exists()


@pytest.mark.parametrize("estimator", ["gae", "gae-ref_features", "rloo"])
def test_rl_steps_on_cuda(tmp_path, gpu_adapters, estimator):
    import math

    estimator, _, value_model = estimator.partition("-")
    extra = ["--advantage_estimator", estimator] + (["--rollouts_per_prompt", "2"] if estimator == "rloo" else [])
    extra += ["--value_model", value_model] if value_model else []
    metrics, peak = run_stage("ppo", tmp_path, gpu_adapters, *extra)
    assert peak > 1
    history = metrics["history"]
    assert [row["step"] for row in history] == [1, 2]
    assert all(math.isfinite(row["reward/mean"]) and math.isfinite(row["objective/kl"]) for row in history)
    assert (tmp_path / "ppo" / "adapter" / "workbench.json").exists()
    assert (tmp_path / "ppo" / "value_adapter").exists() == (estimator == "gae")
