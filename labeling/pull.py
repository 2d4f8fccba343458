"""`workbench label pull --dataset NAME --output DIR`: submitted rankings back as a preference dataset.

Ranks are read from the REST API (the SDK drops them: argilla-io/argilla#5712), page by page; drafts and discarded
responses are ignored; several annotators are aggregated per pair (`--aggregation majority`, the default, or `borda`;
see labeling/aggregate.py); ties give no pair; `--min_agreement 1` keeps only the pairs every annotator of the record
ranked the same way. The output folder, written whole or not at all, holds:

- `preferences.jsonl`: prompt, chosen, rejected (TRL conversational format), margin, prompt_id, annotators, agreement;
  `trl.RewardTrainer` reads it as is (`datasets.load_dataset("json", data_files=...)`);
- `agreement.jsonl`: per prompt, the annotators, their rankings, Kendall's W and the number of pairs;
- `manifest.json`: the Argilla dataset, annotators, counts, rounds, aggregation, Krippendorff's alpha;
- `wandb/`: the W&B run (offline unless WANDB_API_KEY is set) with counts, agreement and a table of pairs.

An existing output folder is kept unless `--overwrite` is given: nothing already pulled is lost.
"""

from __future__ import annotations

import argparse
import datetime as dt
from pathlib import Path
from types import SimpleNamespace

from workbench.errors import UserError
from workbench.fileio import atomic_directory, write_json_atomic, write_jsonl_atomic

from . import api, settings
from .aggregate import METHODS
from .ranking_pairs import Preferences, build_preferences
from .simulate import is_simulated

TABLE_ROWS = 200


def manifest_for(prefs: Preferences, client, dataset, method: str, min_agreement: float = 0.0) -> dict:
    return {
        "argilla": {
            "url": client.api_url,
            "workspace": dataset.workspace.name,
            "dataset": dataset.name,
            "dataset_id": str(dataset.id),
        },
        "aggregation": method,
        "min_agreement": min_agreement,
        "annotators": [
            {"username": name, "submitted": count, "simulated": is_simulated(name)}
            for name, count in sorted(prefs.submitted_by.items())
        ],
        "rounds": sorted(prefs.rounds),
        "counts": {
            "records": prefs.records,
            "records_ranked": prefs.records_ranked,
            "submitted": prefs.responses["submitted"],
            "drafts_ignored": prefs.responses["draft"],
            "discarded_ignored": prefs.responses["discarded"],
            "pairs": len(prefs.rows),
            "pairs_below_agreement": prefs.pairs_below_agreement,
            "pairs_identical_texts": prefs.pairs_identical,
        },
        "agreement": {"krippendorff_alpha_ordinal": prefs.alpha, "mean_kendalls_w": prefs.mean_kendalls_w},
        "files": {"preferences": "preferences.jsonl", "agreement": "agreement.jsonl"},
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_output(output: Path, prefs: Preferences, manifest: dict, overwrite: bool) -> None:
    """Write the three files into a staging folder, then put it in place of `output` in one rename."""
    with atomic_directory(output) as staging:
        write_jsonl_atomic(staging / "preferences.jsonl", prefs.rows)
        write_jsonl_atomic(staging / "agreement.jsonl", prefs.per_prompt)
        write_json_atomic(staging / "manifest.json", manifest)
        if output.exists() and not overwrite:  # checked before pulling too; a folder that appeared meanwhile is kept
            raise UserError(f"{output} exists; pass --overwrite to replace it")


def log_to_wandb(output: Path, prefs: Preferences, manifest: dict, tracking) -> dict | None:
    from workbench import tracking as wb

    run = wb.start_run("label-pull", tracking, output, f"label-pull-{manifest['argilla']['dataset']}", manifest)
    if run is None:
        return None
    import wandb

    agreement = {k: v for k, v in manifest["agreement"].items() if v is not None}
    run.log(
        {
            **{f"counts/{k}": v for k, v in manifest["counts"].items()},
            **{f"agreement/{k}": v for k, v in agreement.items()},
        }
    )
    table = wandb.Table(columns=["prompt_id", "prompt", "chosen", "rejected", "margin", "agreement", "annotators"])
    for row in prefs.rows[:TABLE_ROWS]:
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in row["prompt"])
        table.add_data(
            row["prompt_id"],
            prompt,
            row["chosen"][0]["content"],
            row["rejected"][0]["content"],
            row["margin"],
            row["agreement"],
            ", ".join(row["annotators"]),
        )
    run.log({"preference_pairs": table})
    reference = wb.run_reference(run)
    wb.finish(run)
    return reference


def pull(
    client,
    dataset,
    output: Path,
    method: str = "majority",
    overwrite: bool = False,
    tracking=None,
    min_agreement: float = 0.0,
    max_round: int | None = None,
    records: list[dict] | None = None,
) -> dict:
    """Every submitted ranking of `dataset` (with `max_round`: of its rounds up to that one) as preference pairs;
    from `records` when given (a snapshot the caller already read), else read page by page."""
    from tqdm import tqdm

    if settings.dataset_k(dataset) == 0:
        raise UserError(f"dataset {dataset.name} has no {settings.RANKING!r} question over response fields")
    names = api.usernames(client)
    if records is None:
        total = api.get_json(client, f"/api/v1/datasets/{dataset.id}/progress")["total"]
        records = tqdm(
            api.iter_records(client, dataset.id), total=total, desc=f"pulling {dataset.name}", unit="record"
        )
    if max_round is not None:  # a labeling round's pull: later rounds' records are not its labels
        records = (r for r in records if (r.get("metadata") or {}).get("round", 1) <= max_round)
    prefs = build_preferences(records, names, method, min_agreement)
    manifest = manifest_for(prefs, client, dataset, method, min_agreement)
    manifest["max_round"] = max_round
    write_output(output, prefs, manifest, overwrite)
    if tracking is not None:
        manifest["wandb_run"] = log_to_wandb(output, prefs, manifest, tracking)
        write_json_atomic(output / "manifest.json", manifest)
    return manifest


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench label pull", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Argilla dataset name")
    parser.add_argument("--workspace", default=None, help="its workspace (when the name is not unique)")
    parser.add_argument("--output", required=True, help="folder for preferences.jsonl, agreement.jsonl, manifest")
    parser.add_argument("--aggregation", choices=METHODS, default="majority", help="how annotators are combined")
    parser.add_argument(
        "--min_agreement",
        type=float,
        default=0.0,
        help="keep a pair only when at least this fraction of the record's annotators agree (1 = unanimous)",
    )
    parser.add_argument(
        "--max_round", type=int, default=None, help="only records of labeling rounds up to this one (default: all)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.add_argument("--wandb_project", default="alignment-workbench", help="W&B project")
    parser.add_argument("--wandb_group", default=None, help="W&B group")
    parser.add_argument(
        "--wandb_mode", default="auto", help="auto (offline without WANDB_API_KEY), online, offline, disabled"
    )
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_agreement <= 1.0:
        raise UserError(
            f"--min_agreement must be between 0 and 1 (a fraction of annotators); got {args.min_agreement}"
        )
    if args.max_round is not None and args.max_round < 1:
        raise UserError(f"--max_round must be at least 1; got {args.max_round}")
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise UserError(f"{output} exists; pass --overwrite to replace it (nothing was pulled)")
    tracking = SimpleNamespace(
        wandb_project=args.wandb_project,
        wandb_group=args.wandb_group,
        wandb_job_type="label-pull",
        wandb_mode=args.wandb_mode,
        wandb_tags=None,
    )

    from .connection import connect

    client = connect(home=args.home)
    dataset = api.find_dataset(client, args.dataset, args.workspace)
    manifest = pull(
        client, dataset, output, args.aggregation, args.overwrite, tracking, args.min_agreement, args.max_round
    )
    counts, agreement = manifest["counts"], manifest["agreement"]
    alpha, w = agreement["krippendorff_alpha_ordinal"], agreement["mean_kendalls_w"]
    print(
        f"{counts['pairs']} preference pair(s) ({counts['pairs_below_agreement']} below --min_agreement left out) "
        f"from {counts['records_ranked']}/{counts['records']} ranked record(s), "
        f"{counts['submitted']} submitted ranking(s) by {len(manifest['annotators'])} annotator(s) "
        f"({counts['drafts_ignored']} draft(s), {counts['discarded_ignored']} discarded ignored); "
        f"Krippendorff's alpha {'-' if alpha is None else f'{alpha:.3f}'}, "
        f"mean Kendall's W {'-' if w is None else f'{w:.3f}'}; written to {output}"
    )
    return 0
