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
    dtype: str = field(
        default="bfloat16", metadata={"help": "dtype of the merged weights: bfloat16, float16, float32."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base to merge into; default: the one in the manifest (same weights required)."},
    )
    device_map: str = field(default="cpu", metadata={"help": "Where to do the merge: cpu, cuda, cuda:N or auto."})


def main(argv: list[str]) -> int:
    from workbench.config import RecipeParser

    (args,) = RecipeParser([MergeArguments], "workbench merge").parse(argv)

    from workbench.modeling import adapters, loading

    # ── model + adapter ──────────────────────────────────────────────────────────────────────────────────────────
    quant = loading.quantization_from_args(dtype=args.dtype)
    model, manifest = adapters.load_with_adapter(
        args.adapter, quant=quant, base_model=args.base_model, device_map=args.device_map
    )
    tokenizer = loading.load_tokenizer(manifest.base_model["name_or_path"])

    # ── merge + save ─────────────────────────────────────────────────────────────────────────────────────────────
    merged = adapters.merge_and_unload(model)
    output_dir = Path(args.output_dir)
    if output_dir.resolve() == Path(args.adapter).resolve():
        raise UserError("output_dir must differ from the adapter folder")
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
            extra={"dtype": args.dtype},
        ).write(staging)
    print(f"workbench merge: merged checkpoint written to {output_dir}")
    return 0
