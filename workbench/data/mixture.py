"""Load SFT datasets from a recipe: local files, saved datasets, bundled data or hub ids, as a weighted mixture.

Several instruction datasets mixed by weight is the usual guard against catastrophic forgetting in multi-task SFT.
TRL's `DatasetMixtureConfig` mixes by fraction but cannot template columns or reconcile unlike formats, so the specs
here add `template`, `prompt_template`/`completion_template` and `where` (row filter) and convert before mixing.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, fields
from pathlib import Path

from workbench.data import formats
from workbench.errors import UserError
from workbench.jsonl import read_jsonl

LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


@dataclass
class DatasetSpec:
    """One dataset of a mixture (a mapping under `datasets:` or `eval_datasets:` in a recipe)."""

    path: str
    name: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None
    weight: float = 1.0
    where: dict | None = None
    template: str | None = None
    prompt_template: str | None = None
    completion_template: str | None = None
    max_samples: int | None = None

    @classmethod
    def from_recipe(cls, raw, where: str) -> DatasetSpec:
        if isinstance(raw, str):
            raw = {"path": raw}
        if not isinstance(raw, dict) or "path" not in raw:
            raise UserError(f"{where}: a dataset entry needs at least `path`; got {raw!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UserError(f"{where}: unknown dataset key(s) {unknown}; expected some of {sorted(known)}")
        spec = cls(**raw)
        if spec.weight <= 0:
            raise UserError(f"{where}: weight must be > 0; got {spec.weight}")
        if bool(spec.prompt_template) != bool(spec.completion_template):
            raise UserError(f"{where}: give prompt_template and completion_template together")
        if spec.template and spec.prompt_template:
            raise UserError(f"{where}: give either template or prompt_template/completion_template, not both")
        return spec


def load_raw(spec: DatasetSpec, where: str):
    import datasets

    if spec.path.startswith("bundled:"):
        from workbench.data.bundled import bundled_path

        return datasets.load_dataset("json", data_files=str(bundled_path(spec.path.removeprefix("bundled:"))))["train"]
    local = Path(spec.path).expanduser()
    try:
        if local.is_dir() and any((local / name).exists() for name in ("dataset_info.json", "dataset_dict.json")):
            loaded = datasets.load_from_disk(str(local))
            return loaded[spec.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if local.is_file():
            builder = LOCAL_BUILDERS.get(local.suffix)
            if builder is None:
                raise UserError(f"{where}: cannot read {local.suffix} files; use one of {sorted(LOCAL_BUILDERS)}")
            try:
                return datasets.load_dataset(builder, data_files=str(local))["train"]
            except Exception:
                if local.suffix == ".jsonl":  # the line that broke it, numbered as an editor shows it
                    read_jsonl(local)
                raise
        if spec.path.startswith((".", "/", "~")) or local.suffix in LOCAL_BUILDERS:
            # a file name, never a Hub id: say it is missing rather than "couldn't reach ... on the Hub"
            raise UserError(f"{where}: dataset file {spec.path} does not exist (looked at {local.absolute()})")
        return datasets.load_dataset(spec.path, name=spec.name, data_files=spec.data_files, split=spec.split)
    except UserError:
        raise
    except Exception as error:  # datasets raises many types; the user needs the path and the reason
        raise UserError(f"{where}: could not load dataset {spec.path!r}: {error}") from error


def select_rows(dataset, spec: DatasetSpec, where: str):
    """The rows `spec` keeps: those whose columns equal `spec.where`, then the first `max_samples` (none: an error)."""
    if spec.where:
        formats.check_columns(dataset.column_names, list(spec.where), where)
        wanted = dict(spec.where)
        dataset = dataset.filter(lambda row: all(row[k] == v for k, v in wanted.items()))
    if len(dataset) == 0:
        raise UserError(f"{where}: dataset {spec.path!r} has no rows (after `where: {spec.where}`)")
    if spec.max_samples is not None:
        dataset = dataset.select(range(min(spec.max_samples, len(dataset))))
    return dataset


def load_one(spec: DatasetSpec, where: str):
    """One dataset in TRL format (messages, prompt/completion or text), checked, with its kind."""
    dataset = select_rows(load_raw(spec, where), spec, where)
    if spec.template or spec.prompt_template:
        needed = formats.template_columns(spec.template or "") + formats.template_columns(spec.prompt_template or "")
        needed += formats.template_columns(spec.completion_template or "")
        formats.check_columns(dataset.column_names, needed, where)
        args = (spec.template, spec.prompt_template, spec.completion_template, where)
        dataset = dataset.map(lambda row: formats.templated_row(row, *args), remove_columns=dataset.column_names)
    kind = formats.detect_kind(dataset.column_names, where)
    keep = {"messages": ["messages"], "prompt_completion": ["prompt", "completion"], "text": ["text"]}[kind]
    dataset = dataset.select_columns(keep)
    if kind == "messages":
        for index, row in enumerate(dataset, start=1):
            formats.check_messages(row["messages"], f"{where} row {index}")
    for column in keep:
        empty = [i for i, value in enumerate(dataset[column], start=1) if not value]
        if empty:
            raise UserError(f"{where}: column {column!r} is empty in row(s) {empty[:5]} (counted from 1)")
    return dataset, kind


def mixture_counts(sizes: list[int], weights: list[float], total: int | None) -> list[int]:
    """Rows to take from each dataset so that shares follow the weights.

    With no `total`, the mixture is the largest one that needs no row twice (TRL's rule); with a `total`, small
    datasets are repeated as needed (upsampling).
    """
    shares = [w / sum(weights) for w in weights]
    if total is None:
        total = math.floor(min(size / share for size, share in zip(sizes, shares)))
    return [max(1, round(share * total)) for share in shares]


def take_rows(dataset, count: int, seed: int):
    shuffled = dataset.shuffle(seed=seed)
    repeats, remainder = divmod(count, len(shuffled))
    indices = list(range(len(shuffled))) * repeats + list(range(remainder))
    return shuffled.select(indices)


def build_mixture(raw_specs: list, tokenizer, seed: int, key: str, total: int | None = None):
    """Load and mix the recipe's datasets; unlike formats are rendered to text with the chat template."""
    import datasets

    if not raw_specs:
        raise UserError(f"recipe key `{key}` is empty: list at least one dataset (path: ...)")
    specs = [DatasetSpec.from_recipe(raw, f"{key}[{i}]") for i, raw in enumerate(raw_specs)]
    loaded = [load_one(spec, f"{key}[{i}] ({spec.path})") for i, spec in enumerate(specs)]
    kinds = {kind for _, kind in loaded}
    if len(kinds) > 1:
        # Rendering drops the assistant/completion mask: the whole text is then learnt. Say so.
        print(f"workbench: {key} mixes formats {sorted(kinds)}; rendering all to text with the chat template")
        loaded = [
            (
                ds.map(
                    lambda row, k=kind: {"text": formats.to_text(row, k, tokenizer)}, remove_columns=ds.column_names
                ),
                "text",
            )
            for ds, kind in loaded
        ]
    if len(loaded) == 1 and total is None:
        return loaded[0][0].shuffle(seed=seed), loaded[0][1]
    counts = mixture_counts([len(ds) for ds, _ in loaded], [s.weight for s in specs], total)
    parts = [take_rows(ds, count, seed + i) for i, ((ds, _), count) in enumerate(zip(loaded, counts))]
    return datasets.concatenate_datasets(parts).shuffle(seed=seed), loaded[0][1]


def fingerprint(*parts) -> str:
    """A short content fingerprint of datasets (their rows), recorded in adapter manifests."""
    digest = hashlib.sha256()
    for dataset in parts:
        if dataset is None:
            continue
        for batch in dataset.flatten_indices().data.to_batches():
            digest.update(batch.serialize())
    return "sha256:" + digest.hexdigest()[:16]
