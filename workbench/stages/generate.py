"""`workbench generate --config recipes/<model>/generate.yaml`: K candidate completions per prompt, for ranking.

Reads prompts (`prompt_id`, `prompt` as chat messages, or a plain string) from a file or `bundled:prompts`, samples K
completions each from the base model plus the policy adapter, and writes `output_dir/`:
`candidates.jsonl` (prompt_id, prompt, completions, policy, generation), `manifest.json`, `recipe.yaml`, `wandb/`.
`workbench label push --candidates output_dir` sends it to Argilla.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

STAGE = "generate"
FINISHED = ["candidates.jsonl", "manifest.json"]
SAMPLING_DEFAULTS = dict(max_new_tokens=128, min_new_tokens=1, temperature=0.8, top_p=0.95, top_k=50)


@dataclass
class GenerateConfig:
    """Where the prompts come from, which policy answers them, how many candidates each."""

    adapter: str | None = field(
        default=None,
        metadata={"help": "Policy adapter folder (e.g. outputs/sft/adapter); its manifest names the base."},
    )
    prompts: str = field(
        default="bundled:prompts",
        metadata={
            "help": "Prompts: bundled:prompts, a .jsonl/.json/.parquet/.csv file or a save_to_disk folder "
            "with `prompt_id` and `prompt` (chat messages or a string)."
        },
    )
    prompts_where: dict | None = field(
        default_factory=lambda: {"split": "train"}, metadata={"help": "Keep prompt rows whose columns equal these."}
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many prompts (the first)."})
    skip_prompts: int = field(
        default=0,
        metadata={"help": "Leave out the first this many prompts (a later labeling round takes the next ones)."},
    )
    num_completions: int = field(default=4, metadata={"help": "K: candidates per prompt (2 or more)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences generated together."})
    seed: int = field(default=0, metadata={"help": "Random seed: same recipe, same candidates."})
    output_dir: str = field(default="outputs/candidates", metadata={"help": "Where candidates.jsonl is written."})


def parse(argv: list[str]):
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.generation import Sampling
    from workbench.output_dir import OverwriteArguments
    from workbench.recipe import RecipeParser, check_value
    from workbench.tracking import TrackingConfig

    parser = RecipeParser(
        [GenerateConfig, Sampling, ModelArguments, OverwriteArguments, TrackingConfig],
        "workbench generate",
        SAMPLING_DEFAULTS,
        model_groups=("base", "device", "precision"),
        unread_why="it samples from an adapter that was trained already",
    )
    parsed = parser.parse(argv)
    cfg, sampling = parsed[0], parsed[1]
    k = cfg.num_completions
    check_value(argv, "num_completions", k >= 2, "2 or more (a ranking needs two)", k)
    check_value(argv, "batch_size", cfg.batch_size >= 1, "1 or more", cfg.batch_size)
    check_value(argv, "skip_prompts", cfg.skip_prompts >= 0, "0 or more", cfg.skip_prompts)
    sampling.check()
    return (*parsed, parser.given)


def policy_reference(cfg: GenerateConfig, model) -> dict:
    """What wrote the candidates: the adapter (path, stage, manifest hash) or the bare base, and its quantization."""
    base = model.workbench_base
    reference = {"adapter": None, "base_model": base.name_or_path, "base_content_hash": base.content_hash}
    if cfg.adapter:
        from workbench.modeling.adapters import MANIFEST_NAME, read_manifest

        manifest_bytes = (Path(cfg.adapter) / MANIFEST_NAME).read_bytes()
        reference.update(
            adapter=str(Path(cfg.adapter).resolve()),
            stage=read_manifest(cfg.adapter).stage,
            manifest_sha256="sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
        )
    return reference


def main(argv: list[str]) -> int:
    cfg, sampling, model_args, run_args, tracking_cfg, given = parse(argv)
    configs = (cfg, sampling, model_args, tracking_cfg)

    from workbench import tracking
    from workbench.data.prompts import load_prompts
    from workbench.fileio import write_json_atomic, write_jsonl_atomic
    from workbench.modeling import adapters, loading
    from workbench.modeling.generation import generate_completions
    from workbench.output_dir import prepare_output_dir
    from workbench.recipe import resolved_recipe, write_resolved_recipe

    output_dir = Path(cfg.output_dir)
    candidates_path = output_dir / "candidates.jsonl"
    if cfg.adapter:  # a policy to sample from, checked before anything is written
        adapters.read_manifest(cfg.adapter, "CAUSAL_LM", "adapter")
    prepare_output_dir(output_dir, run_args, STAGE, FINISHED)
    write_resolved_recipe(output_dir / "recipe.yaml", STAGE, given, *configs)

    # ── prompts ──────────────────────────────────────────────────────────────────────────────────────────────────
    prompts = load_prompts(
        cfg.prompts, "prompts", where=cfg.prompts_where, limit=cfg.max_prompts, skip=cfg.skip_prompts
    )
    print(f"workbench generate: {len(prompts)} prompts × {cfg.num_completions} completions")

    # ── model ────────────────────────────────────────────────────────────────────────────────────────────────────
    if cfg.adapter:
        model, tokenizer, _ = adapters.load_with_adapter(cfg.adapter, model_args, padding_side="left")
    else:
        model = loading.load_model(model_args)
        tokenizer = loading.load_tokenizer(model_args, padding_side="left")
    policy = policy_reference(cfg, model)

    # ── generate ─────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, None, resolved_recipe(given, *configs))
    params = {"k": cfg.num_completions, **vars(sampling), "seed": cfg.seed, "batch_size": cfg.batch_size}
    completions = generate_completions(
        model, tokenizer, [row["prompt"] for row in prompts], cfg.num_completions, sampling, cfg.batch_size, cfg.seed
    )

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    rows = [
        {**row, "completions": texts, "policy": policy, "generation": params}
        for row, texts in zip(prompts, completions)
    ]
    write_jsonl_atomic(candidates_path, rows)
    empty = sum(1 for texts in completions for text in texts if not text)
    lengths = [len(text.split()) for texts in completions for text in texts]
    stats = {
        "prompts": len(rows),
        "completions": len(lengths),
        "empty_completions": empty,
        "mean_words": sum(lengths) / max(1, len(lengths)),
    }
    if run is not None:
        import wandb

        table = wandb.Table(columns=["prompt_id", "prompt", "index", "completion"])
        for row in rows[:25]:
            for index, text in enumerate(row["completions"]):
                table.add_data(row["prompt_id"], row["prompt"][-1]["content"], index, text)
        run.log({**{f"generate/{k}": v for k, v in stats.items()}, "candidates": table})
    manifest_out = {
        "stage": STAGE,
        "candidates": candidates_path.name,
        "policy": policy,
        "quantization": model.workbench_base.quantization,
        "generation": params,
        "prompts": {"source": cfg.prompts, "where": cfg.prompts_where},
        "stats": stats,
        "code_version": adapters.code_version(),
        "wandb_run": tracking.run_reference(run),
    }
    write_json_atomic(output_dir / "manifest.json", manifest_out)  # last: the stage is finished once it exists
    tracking.finish(run)
    if empty:
        print(f"workbench generate: warning: {empty} empty completion(s); `label push` refuses them")
    print(f"workbench generate: wrote {candidates_path} ({json.dumps(stats)})")
    return 0
