"""A checkpoint of a published architecture with random weights: speed and memory do not depend on the weights'
values, so Qwen2.5-1.5B or Llama-3.1-8B can be measured where nothing can be downloaded.

    python bench/random_model.py recipes/configs/qwen2.5-1.5b-instruct [--seed 0]   # prints the checkpoint's path

The shape (layers, widths, heads, vocabulary, tied or separate output head, rope) is the published config.json in
recipes/configs/<model>/; the tokenizer is the embedded default model's (its ids all lie inside these vocabularies),
and the config's special-token ids are set to that tokenizer's. Weights are drawn with the architecture's own
initialisation (normal, std = initializer_range) in bfloat16, on the GPU when there is one (an 8B model draws there in
seconds), and saved once under $WORKBENCH_HOME/models/random-<model>-seed<seed>/ (a killed build is redone).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def ensure_random_model(config_dir: str | Path, seed: int = 0) -> Path:
    """The random-weight checkpoint of `config_dir`'s architecture, built on first use."""
    from workbench.modeling.default_model import _atomic_checkpoint_dir, ensure_default_tokenizer, models_dir

    config_dir = Path(config_dir)
    values = json.loads((config_dir / "config.json").read_text())

    def build(staging: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(ensure_default_tokenizer())
        shape = {k: v for k, v in values.items() if k not in ("architectures", "transformers_version", "torch_dtype")}
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            shape[key] = getattr(tokenizer, key)
        config = AutoConfig.for_model(shape.pop("model_type"), **shape)
        assert len(tokenizer) <= config.vocab_size, "the default tokenizer's ids must lie inside the vocabulary"
        torch.manual_seed(seed)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.md").write_text(
            f"Random weights (seed {seed}, bfloat16) in the shape of {config_dir / 'config.json'}; "
            "the embedded default model's tokenizer. For speed and memory measurements only.\n"
        )
        del model

    return _atomic_checkpoint_dir(models_dir() / f"random-{config_dir.name}-seed{seed}", build)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config_dir", help="a folder holding a published config.json (recipes/configs/<model>)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(ensure_random_model(args.config_dir, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
