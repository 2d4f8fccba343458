"""Preference datasets for the reward and DPO stages: TRL's preference format, checked, with where each dataset came
from, and the recipe keys that name them (`PreferenceDataConfig`).

A row holds `chosen` and `rejected` (message lists or strings), usually a `prompt` (explicit prompt; without it the
prompt is implicit in both conversations) and optionally a `margin` (how much better `chosen` is). This is what
`workbench label pull` writes and what TRL's `RewardTrainer` and `DPOTrainer` read as is. The dataset specs are the
SFT mixture's (`path`, `split`, `where`, `weight`, `max_samples`, ...), minus the templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench.data import formats
from workbench.data.mixture import DatasetSpec, load_raw, mixture_counts, select_rows, take_rows
from workbench.errors import UserError

REQUIRED = ("chosen", "rejected")


@dataclass
class PreferenceDataConfig:
    """The preference pairs a stage trains on and the ones it holds out (reward, DPO)."""

    datasets: list[dict] = field(
        default_factory=lambda: [{"path": "bundled:preferences", "where": {"split": "train"}}],
        metadata={
            "help": "Preference datasets (prompt, chosen, rejected, optional margin), a weighted mixture: a list of "
            "{path, weight, split, where, max_samples}. path: a .jsonl/.json/.parquet/.csv file, a save_to_disk "
            "folder (e.g. from `workbench label pull`), bundled:NAME, or a hub id."
        },
    )
    eval_datasets: list[dict] | None = field(
        default=None, metadata={"help": "Held-out preference datasets (same form); accuracy is reported on them."}
    )
    eval_split_size: float = field(
        default=0.1,
        metadata={
            "help": "If no eval_datasets: hold out this fraction of the training pairs (or this many, if >= 1), "
            "whole prompts at a time so that no answer is on both sides."
        },
    )
    mixture_size: int | None = field(default=None, metadata={"help": "Pairs in the training mixture (default: all)."})


def load_train_and_eval(config: PreferenceDataConfig, seed: int, **margins):
    """(train, eval or None, kind, sources): `datasets`, and `eval_datasets` or else a held-out split of whole
    prompts. `margins`: load_preferences' use_margin / margin_scale."""
    train, kind, sources = load_preferences(config.datasets, "datasets", seed, total=config.mixture_size, **margins)
    held_out = None
    if config.eval_datasets:
        held_out, _, eval_sources = load_preferences(config.eval_datasets, "eval_datasets", seed, **margins)
        sources += [dict(source, role="eval") for source in eval_sources]
    elif config.eval_split_size > 0:
        train, held_out = held_out_split(train, config.eval_split_size, seed)
    return train, held_out, kind, sources


SIDECARS = ("manifest.json", "workbench.json")  # lineage files `label pull` (or a person) leaves beside the data


def _kind(value, where: str) -> str:
    if isinstance(value, str):
        return "standard"
    if isinstance(value, list):
        for turn in value:
            if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
                raise UserError(f"{where}: every message needs `role` and `content`; got {turn!r}")
        return "conversational"
    raise UserError(f"{where}: expected a string or a list of {{role, content}} messages; got {type(value).__name__}")


def check_rows(dataset, where: str) -> str:
    """Every row non-empty and of one kind (all conversational or all strings); returns that kind."""
    columns = [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
    kinds = set()
    for index, row in enumerate(dataset.select_columns(columns), start=1):  # rows counted from 1, as lines are
        for column in columns:
            if not row[column]:
                raise UserError(f"{where}: column {column!r} is empty in row {index}")
            kinds.add(_kind(row[column], f"{where} row {index} column {column!r}"))
        if "chosen" in row and row["chosen"] == row["rejected"]:
            raise UserError(f"{where}: row {index} has the same answer as chosen and rejected; a pair needs two")
    if len(kinds) > 1:
        raise UserError(f"{where}: mixes message lists and plain strings across prompt/chosen/rejected; use one")
    return kinds.pop()


def sidecar_manifest(path: str) -> dict | None:
    """The lineage file beside a local dataset (labeling round, Argilla dataset, ...), if one is there."""
    from workbench.tracking import without_secrets

    local = Path(path).expanduser()
    if not local.exists():
        return None
    folders = [local, local.parent] if local.is_dir() else [local.parent]
    for folder in folders:
        for name in SIDECARS:
            candidate = folder / name
            if candidate.is_file():
                try:
                    content = json.loads(candidate.read_text())
                except json.JSONDecodeError as error:
                    raise UserError(f"{candidate} is not valid JSON: {error}") from error
                return {"file": str(candidate.resolve()), "content": without_secrets(content)}
    return None


def load_one(spec: DatasetSpec, where: str, use_margin: bool):
    dataset = load_raw(spec, where)
    formats.check_columns(dataset.column_names, list(REQUIRED), where)
    dataset = select_rows(dataset, spec, where)
    kind = check_rows(dataset, where)
    keep = [c for c in ("prompt", "chosen", "rejected") if c in dataset.column_names]
    has_margin = use_margin and "margin" in dataset.column_names
    if has_margin:
        bad = [i for i, m in enumerate(dataset["margin"]) if not isinstance(m, (int, float)) or isinstance(m, bool)]
        if bad:
            raise UserError(f"{where}: column 'margin' must hold numbers; row(s) {bad[:5]} do not")
        keep.append("margin")
    return dataset.select_columns(keep), kind, has_margin


def held_out_split(dataset, test_size: float, seed: int, where: str = "eval_split_size"):
    """(train, eval) with every pair of one prompt on the same side.

    The pairs of one ranking share their answers, so a row split would put the same texts on both sides and
    overstate held-out accuracy. Whole prompts are drawn (seeded) until the eval side holds `test_size` of the rows
    (a fraction < 1) or that many rows (>= 1). Without a `prompt` column the rows are split.
    """
    import random
    from collections import Counter

    wanted = test_size * len(dataset) if test_size < 1 else test_size
    if "prompt" not in dataset.column_names:
        split = dataset.train_test_split(test_size=test_size if test_size < 1 else int(test_size), seed=seed)
        return split["train"], split["test"]
    keys = [json.dumps(prompt, sort_keys=True) for prompt in dataset["prompt"]]
    sizes = Counter(keys)
    prompts = sorted(sizes)
    random.Random(seed).shuffle(prompts)
    held, count = set(), 0
    for prompt in prompts:
        if count >= wanted:
            break
        held.add(prompt)
        count += sizes[prompt]
    if len(held) == len(prompts):
        raise UserError(
            f"{where}: holding out {test_size} of {len(dataset)} pairs takes all {len(prompts)} prompts; "
            "lower it or give eval_datasets"
        )
    train = [i for i, key in enumerate(keys) if key not in held]
    return dataset.select(train), dataset.select([i for i, key in enumerate(keys) if key in held])


def load_preferences(
    raw_specs: list,
    key: str,
    seed: int,
    *,
    use_margin: bool = True,
    margin_scale: float = 1.0,
    total: int | None = None,
):
    """The recipe's preference datasets as one shuffled `Dataset`, its kind, and a lineage record per dataset."""
    import datasets

    if not raw_specs:
        raise UserError(f"recipe key `{key}` is empty: list at least one preference dataset (path: ...)")
    specs = [DatasetSpec.from_recipe(raw, f"{key}[{i}]") for i, raw in enumerate(raw_specs)]
    for i, spec in enumerate(specs):
        if spec.template or spec.prompt_template:
            raise UserError(f"{key}[{i}]: templates are for SFT data; preference data needs chosen/rejected columns")
    loaded = [load_one(spec, f"{key}[{i}] ({spec.path})", use_margin) for i, spec in enumerate(specs)]
    kinds = {kind for _, kind, _ in loaded}
    if len(kinds) > 1:
        raise UserError(f"{key}: mixes conversational and plain-string preference datasets; use one kind")
    prompts = {"prompt" in ds.column_names for ds, _, _ in loaded}
    if len(prompts) > 1:
        raise UserError(f"{key}: some datasets have a `prompt` column and some do not; give every one a prompt")
    with_margin = any(has for _, _, has in loaded)
    parts = []
    for ds, _, has in loaded:
        if with_margin and not has:  # a mixture needs the column everywhere: no margin means margin 0
            ds = ds.add_column("margin", [0.0] * len(ds))
        if with_margin:
            ds = ds.cast_column("margin", datasets.Value("float64"))
            ds = ds.map(lambda row: {"margin": row["margin"] * margin_scale})
        parts.append(ds)
    if len(parts) == 1 and total is None:
        dataset = parts[0].shuffle(seed=seed)
    else:
        counts = mixture_counts([len(ds) for ds in parts], [s.weight for s in specs], total)
        taken = [take_rows(ds, count, seed + i) for i, (ds, count) in enumerate(zip(parts, counts))]
        dataset = datasets.concatenate_datasets(taken).shuffle(seed=seed)
    local = [Path(spec.path).expanduser() for spec in specs]
    sources = [
        {
            "kind": "dataset",
            "path": spec.path,
            "resolved_path": str(path.resolve()) if path.exists() else None,
            "where": spec.where,
            "rows": len(ds),
            "labeling": sidecar_manifest(spec.path),
        }
        for spec, path, (ds, _, _) in zip(specs, local, loaded)
    ]
    return dataset, kinds.pop(), sources
