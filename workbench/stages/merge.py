"""`workbench merge --adapter DIR --output_dir DIR`: fold an adapter into its base; plain transformers loads it.

QLoRA adapters are merged into the base in full precision (the 4-bit weights are only an approximation of it), as
the QLoRA paper and PEFT recommend; the merged model then matches base + adapter in that precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import atomic_directory

STAGE = "merge"


@dataclass
class MergeArguments:
    adapter: str = field(metadata={"help": "Adapter folder written by a workbench stage (holds workbench.json)."})
    output_dir: str = field(metadata={"help": "Where to write the merged checkpoint (replaced whole when done)."})


def main(argv: list[str]) -> int:
    from workbench.modeling.arguments import ModelArguments
    from workbench.output_dir import OverwriteArguments
    from workbench.recipe import RecipeParser

    parser = RecipeParser(
        [MergeArguments, ModelArguments, OverwriteArguments],
        "workbench merge",
        dict(device_map="cpu", load_in_4bit=False),
        model_groups=("base", "device", "precision"),
        unread_why="merge folds an adapter that was trained already",
    )
    args, model_args, run_args = parser.parse(argv)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        raise UserError("merge folds the adapter into the full-precision base: set load_in_4bit: false")

    from workbench.modeling import adapters
    from workbench.output_dir import prepare_output_dir

    output_dir = Path(args.output_dir)
    if output_dir.resolve() == Path(args.adapter).resolve():
        raise UserError("output_dir must differ from the adapter folder")
    prepare_output_dir(output_dir, run_args, STAGE, ["workbench.json"])

    # ── model + adapter ──────────────────────────────────────────────────────────────────────────────────────────
    model, tokenizer, manifest = adapters.load_with_adapter(args.adapter, model_args)

    # ── merge + save ─────────────────────────────────────────────────────────────────────────────────────────────
    merged = adapters.merge_and_unload(model)
    with atomic_directory(output_dir) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        adapters.AdapterManifest(
            stage=STAGE,
            base_model=manifest.base_model,
            peft_method="merged",
            parents=[{"role": "adapter", "path": str(Path(args.adapter).resolve()), "stage": manifest.stage}],
            data_fingerprint=manifest.data_fingerprint,
            metrics=manifest.metrics,
            extra={"dtype": model_args.dtype},
        ).write(staging)
    print(f"workbench merge: merged checkpoint written to {output_dir}")
    return 0
