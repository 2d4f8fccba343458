"""`workbench generate --config recipes/<model>/generate.yaml`: K candidate completions per prompt, for ranking.

Reads prompts (`prompt_id`, `prompt` as chat messages, or a plain string) from a file or `bundled:prompts`, samples K
completions each from the base model plus the policy adapter, and writes `output_dir/`:
`candidates.jsonl` (prompt_id, prompt, completions, policy, generation), `manifest.json`, `recipe.yaml`, `wandb/`.
`workbench label push --candidates output_dir` sends it to Argilla.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError

STAGE = "generate"


@dataclass
class GenerateConfig:
    """Where the prompts come from, which policy answers them, and how it samples."""

    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Base model (path, hub id or alias); with `adapter`, "
            "the base named in its manifest is used instead."
        },
    )
    adapter: str | None = field(default=None, metadata={"help": "Policy adapter folder (e.g. outputs/sft/adapter)."})
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
    num_completions: int = field(default=4, metadata={"help": "K: candidates per prompt (2 or more)."})
    max_new_tokens: int = field(default=128, metadata={"help": "Longest completion, in tokens."})
    min_new_tokens: int = field(default=1, metadata={"help": "Shortest completion, in tokens (avoids empty ones)."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (0: greedy, K equal answers)."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold."})
    top_k: int = field(default=50, metadata={"help": "Sample among the top k tokens (0: no limit)."})
    batch_size: int = field(default=8, metadata={"help": "Sequences generated together."})
    seed: int = field(default=0, metadata={"help": "Random seed: same recipe, same candidates."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Load the base in 4-bit NF4, as QLoRA trained it."})
    dtype: str = field(default="bfloat16", metadata={"help": "dtype of the base (compute dtype when 4-bit)."})
    device_map: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})
    output_dir: str = field(default="outputs/candidates", metadata={"help": "Where candidates.jsonl is written."})
    overwrite: bool = field(default=False, metadata={"help": "Replace candidates already in output_dir."})


def parse(argv: list[str]):
    from workbench.config import RecipeParser, TrackingConfig

    parser = RecipeParser([GenerateConfig, TrackingConfig], "workbench generate")
    return (*parser.parse(argv), parser.given)


def load_prompts(cfg: GenerateConfig) -> list[dict]:
    """Prompt rows {prompt_id, prompt}, checked: the columns, unique ids, well-formed messages."""
    from labeling.candidates import check_prompt
    from workbench.data.mixture import DatasetSpec, load_raw

    where = f"prompts ({cfg.prompts})"
    dataset = load_raw(DatasetSpec(path=cfg.prompts), where)
    missing = [c for c in ("prompt_id", "prompt", *(cfg.prompts_where or {})) if c not in dataset.column_names]
    if missing:
        raise UserError(f"{where}: missing column(s) {missing}; found {dataset.column_names}")
    rows, seen = [], set()
    for index, row in enumerate(dataset):
        if any(row[key] != value for key, value in (cfg.prompts_where or {}).items()):
            continue
        prompt_id, prompt = str(row["prompt_id"]), row["prompt"]
        if prompt_id in seen:
            raise UserError(f"{where} row {index}: duplicate prompt_id {prompt_id!r}")
        seen.add(prompt_id)
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        check_prompt(prompt, f"{where} row {index} (prompt_id {prompt_id})")
        rows.append({"prompt_id": prompt_id, "prompt": prompt})
    if cfg.max_prompts is not None:
        rows = rows[: cfg.max_prompts]
    if not rows:
        raise UserError(f"{where}: no prompts left after prompts_where={cfg.prompts_where}")
    return rows


def policy_reference(cfg: GenerateConfig, model) -> dict:
    """What wrote the candidates: the adapter (path, stage, manifest hash) or the bare base."""
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


def write_jsonl_atomic(path: Path, rows: list[dict]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def main(argv: list[str]) -> int:
    cfg, tracking_cfg, given = parse(argv)
    if cfg.num_completions < 2:
        raise UserError(f"num_completions must be 2 or more (ranking needs candidates); got {cfg.num_completions}")
    output_dir = Path(cfg.output_dir)
    candidates_path = output_dir / "candidates.jsonl"
    if candidates_path.exists() and not cfg.overwrite:
        raise UserError(f"{candidates_path} exists: pass --overwrite to replace it")

    from workbench import tracking
    from workbench.config import resolved_recipe, write_resolved_recipe
    from workbench.modeling import adapters, loading
    from workbench.modeling.generation import generate_completions

    # ── prompts ──────────────────────────────────────────────────────────────────────────────────────────────────
    prompts = load_prompts(cfg)
    print(f"workbench generate: {len(prompts)} prompts × {cfg.num_completions} completions")

    # ── model ────────────────────────────────────────────────────────────────────────────────────────────────────
    quant = loading.quantization_from_args(load_in_4bit=cfg.load_in_4bit, double_quant=True, dtype=cfg.dtype)
    if cfg.adapter:
        model, manifest = adapters.load_with_adapter(cfg.adapter, quant=quant, device_map=cfg.device_map)
        base = manifest.base_model["name_or_path"]
    else:
        base = cfg.model_name_or_path
        model = loading.load_model(base, quant=quant, device_map=cfg.device_map)
    tokenizer = loading.load_tokenizer(base, padding_side="left")
    policy = policy_reference(cfg, model)

    # ── generate ─────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, None, resolved_recipe(given, cfg, tracking_cfg))
    params = {
        "k": cfg.num_completions,
        **{name: getattr(cfg, name) for name in ("max_new_tokens", "min_new_tokens", "temperature", "top_p")},
        **{name: getattr(cfg, name) for name in ("top_k", "seed", "batch_size")},
    }
    completions = generate_completions(
        model,
        tokenizer,
        [row["prompt"] for row in prompts],
        cfg.num_completions,
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_p,
        cfg.top_k,
        cfg.batch_size,
        cfg.seed,
        cfg.min_new_tokens,
    )

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    rows = [
        {**row, "completions": texts, "policy": policy, "generation": params}
        for row, texts in zip(prompts, completions)
    ]
    output_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(candidates_path, rows)
    empty = sum(1 for texts in completions for text in texts if not text)
    lengths = [len(text.split()) for texts in completions for text in texts]
    stats = {
        "prompts": len(rows),
        "completions": len(lengths),
        "empty_completions": empty,
        "mean_words": sum(lengths) / max(1, len(lengths)),
    }
    write_resolved_recipe(output_dir / "recipe.yaml", STAGE, given, cfg, tracking_cfg)
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
        "generation": params,
        "prompts": {"source": cfg.prompts, "where": cfg.prompts_where},
        "stats": stats,
        "code_version": adapters.code_version(),
        "wandb_run": tracking.run_reference(run),
    }
    adapters.write_json_atomic(output_dir / "manifest.json", manifest_out)
    tracking.finish(run)
    if empty:
        print(f"workbench generate: warning: {empty} empty completion(s); `label push` refuses them")
    print(f"workbench generate: wrote {candidates_path} ({json.dumps(stats)})")
    return 0
