"""Prompts for every stage that samples from a policy (generate, PPO, eval): rows `{prompt_id, prompt}`, checked.

A recipe names them as one dataset or a list of datasets, each a path (bundled:NAME, a .jsonl/.json/.parquet/.csv
file, a save_to_disk folder or a hub id) or a mapping `{path, where, max_samples, split}` as in the SFT mixture. A
prompt cell is chat messages or a plain string (one user turn).
"""

from __future__ import annotations

from workbench.data import formats
from workbench.data.mixture import DatasetSpec, load_raw
from workbench.errors import UserError
from workbench.modeling.tokens import as_messages


def load_prompts(
    source,
    key: str = "prompts",
    *,
    where: dict | None = None,
    limit: int | None = None,
    skip: int = 0,
    column: str = "prompt",
    need_ids: bool = True,
) -> list[dict]:
    """Prompt rows {prompt_id, prompt (messages)} in dataset order.

    `where`: row filter for datasets that give none of their own; `skip`: leave out the first this many prompts;
    `limit`: at most this many prompts in all (after `skip`);
    `need_ids`: every dataset must have a unique `prompt_id` column (candidates and eval samples are joined on it),
    otherwise rows without one are numbered `<dataset index>-<row>`.
    """
    specs = source if isinstance(source, list) else [source]
    if not specs or source in (None, ""):
        raise UserError(f"recipe key `{key}` is empty: name at least one prompt dataset (path: ...)")
    rows: list[dict] = []
    seen: set[str] = set()
    for index, raw in enumerate(specs):
        name = f"{key}[{index}]" if isinstance(source, list) else key
        spec = DatasetSpec.from_recipe(raw, name)
        filters = spec.where if spec.where is not None else where
        located = f"{name} ({spec.path})"
        dataset = load_raw(spec, located)
        ids = "prompt_id" in dataset.column_names
        needed = [*(["prompt_id"] if need_ids else []), column, *(filters or {})]
        formats.check_columns(dataset.column_names, needed, located)
        taken = 0
        for number, row in enumerate(dataset, start=1):
            if any(row[k] != v for k, v in (filters or {}).items()):
                continue
            if spec.max_samples is not None and taken >= spec.max_samples:
                break
            prompt_id = str(row["prompt_id"]) if ids else f"{index}-{number}"
            if prompt_id in seen:
                raise UserError(f"{located} row {number}: duplicate prompt_id {prompt_id!r}")
            seen.add(prompt_id)
            prompt = as_messages(row[column], f"{located} row {number} (prompt_id {prompt_id})")
            rows.append({"prompt_id": prompt_id, "prompt": prompt})
            taken += 1
    total = len(rows)
    rows = rows[skip:]
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        skipped = f" and skipping the first {skip} of {total}" if skip else ""
        raise UserError(f"{key}: no prompts left after the row filters ({where or 'none'}){skipped}")
    return rows
