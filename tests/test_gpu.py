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
