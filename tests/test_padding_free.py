"""Padding-free SFT batches (workbench/modeling/padding_free.py): the same loss as padded batches, rows still cut at
max_length, and `workbench sft` trains with them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

EXAMPLES = [[5, 9, 17, 33, 2], [7, 8, 90, 12, 44, 61, 3, 19, 2], [11, 2]]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def tiny(request, tiny_model_path):
    from transformers import AutoModelForCausalLM

    kernel = request.param
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32, attn_implementation=kernel)
    return model.eval()


def per_token_losses(model, batch) -> torch.Tensor:
    """Each labelled token's loss (labels shifted inside), in order: what SFT averages. Without a KV cache, as TRL's
    SFTTrainer runs it (transformers reads packed positions only when no cache is passed)."""
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels.clamp(min=0), reduction="none")
    return losses[labels != -100]


def test_a_padding_free_batch_has_the_padded_batchs_token_losses(tiny):
    """TRL's padding-free row (examples concatenated, positions restarting at each) gives every token the same loss
    as the padded batch: transformers masks attention per example from the positions. Without the positions the
    same row lets examples see each other, and the losses differ (so the comparison can fail)."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    examples = [{"input_ids": ids} for ids in EXAMPLES]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert flat["input_ids"].shape == (1, sum(map(len, EXAMPLES))) and "attention_mask" not in flat
    with torch.no_grad():
        expected = per_token_losses(tiny, padded)
        got = per_token_losses(tiny, {k: flat[k] for k in ("input_ids", "position_ids", "labels")})
        leaking = per_token_losses(tiny, {k: flat[k] for k in ("input_ids", "labels")})
    assert got.shape == expected.shape == (sum(len(ids) - 1 for ids in EXAMPLES),)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(leaking, expected, atol=1e-3)


def test_padding_free_rows_are_cut_at_max_length(tiny_model_path, tmp_path):
    """TRL refuses padding_free with max_length unless packing; the stage's trainer keeps max_length's meaning."""
    from datasets import Dataset
    from trl import SFTConfig

    from workbench.modeling import loading
    from workbench.stages.sft import trainer_class

    long_answer = " ".join(f"word{i}" for i in range(60))
    rows = [
        {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": long_answer}]}
        for i in range(4)
    ]
    tokenizer = loading.load_tokenizer(str(tiny_model_path), assistant_only_loss=True)
    config = SFTConfig(
        output_dir=str(tmp_path), padding_free=True, max_length=48, assistant_only_loss=True, report_to=[],
        use_cpu=True, per_device_train_batch_size=2, max_steps=1,
    )  # fmt: skip
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    data = Dataset.from_list(rows)
    trainer = trainer_class()(model=model, args=config, train_dataset=data, processing_class=tokenizer)
    assert config.max_length == 48 and trainer.padding_free
    # the chat template's system turn and the question take ~35 tokens; every row is cut inside the long answer
    assert [len(row["input_ids"]) for row in trainer.train_dataset] == [48] * 4
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    assert batch["input_ids"].shape == (1, 96) and batch["position_ids"][0, 48] == 0
    trainer.train()
    assert trainer.state.global_step == 1


def test_workbench_sft_trains_padding_free(tiny_model_path, tmp_path):
    recipe = tmp_path / "pf.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\noutput_dir: {tmp_path / 'o'}\nmax_steps: 2\nmax_length: 64\n"
        "per_device_train_batch_size: 4\npadding_free: true\nassistant_only_loss: true\nwandb_mode: disabled\n"
        "datasets:\n  - path: bundled:instructions\n    where: {split: train}\n    max_samples: 16\n"
    )
    command = [sys.executable, "-m", "workbench.cli", "sft", "--config", str(recipe)]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["train_loss"] > 0
