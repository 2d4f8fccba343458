"""`workbench reward score --adapter DIR --input FILE --output scored.jsonl`: a reward adapter scores completions.

Input rows (JSONL/JSON/Parquet/CSV, a `save_to_disk` folder or a hub id), by columns:
  prompt + completions  candidates (`workbench generate`): adds `scores` (one per completion), `ranking`
                        (completion indices, best first) — what `label push --suggestions` shows labelers as a
                        suggestion — and `uncertainty` (labeling/selection.py: what `push --strategy uncertainty`
                        sends first);
  prompt + completion   adds `score`;
  chosen + rejected     preference pairs (prompt optional): adds `score_chosen`, `score_rejected`, and prints
                        pairwise accuracy, mean margin and calibration.
Every row also gets `reward_model` (the adapter folder) and `agent` (its name in a suggestion). `--adapter` given
several times scores with an ensemble: `scores` (`score`, `score_chosen`, ...) are the members' means,
`member_scores` (`member_score`, `member_score_chosen`, ...) each member's, and a candidates row's `uncertainty`
counts the members' disagreement too. The output is written atomically. Texts are
tokenized as TRL's RewardTrainer tokenizes them for training (the chat template over prompt + completion).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from workbench.errors import UserError


def _jobs(rows: list[dict], columns: list[str], where: str):
    """(row, field, index) of every text to score, and the token-free description of the input kind."""
    if "completions" in columns and "prompt" in columns:
        return "candidates", [(r, "scores", k) for r, row in enumerate(rows) for k in range(len(row["completions"]))]
    if "completion" in columns and "prompt" in columns:
        return "completions", [(r, "score", None) for r in range(len(rows))]
    if "chosen" in columns and "rejected" in columns:
        return "preferences", [(r, f, None) for r in range(len(rows)) for f in ("score_chosen", "score_rejected")]
    raise UserError(
        f"{where}: expected columns prompt+completions (candidates), prompt+completion, or chosen+rejected; "
        f"the data has {columns}"
    )


def _text(row: dict, field: str, index):
    if field == "scores":
        return row.get("prompt"), row["completions"][index]
    if field == "score":
        return row.get("prompt"), row["completion"]
    return row.get("prompt"), row["chosen" if field == "score_chosen" else "rejected"]


def _agent_name(adapters: list[str]) -> str:
    """A suggestion's agent: the reward run's folder name (`outputs/run/reward/adapter` → `run/reward`), or the
    ensemble's members joined by `+`."""
    names = []
    for adapter in adapters:
        path = Path(adapter).resolve()
        path = path.parent if path.name == "adapter" else path
        names.append(f"{path.parent.name}/{path.name}")
    return "+".join(names)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench reward score", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--adapter",
        required=True,
        action="append",
        help="reward adapter folder (output_dir/adapter); repeat: ensemble",
    )
    parser.add_argument("--input", required=True, help="candidates, prompt/completion or preference rows")
    parser.add_argument("--output", required=True, help="where to write the scored rows (.jsonl)")
    parser.add_argument("--batch_size", type=int, default=8, help="sequences per forward pass")
    parser.add_argument("--split", default="train", help="split to read from a dataset folder or hub id")
    parser.add_argument("--base_model", default=None, help="base checkpoint (default: the one in the manifest)")
    parser.add_argument("--device_map", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--calibration_bins", type=int, default=10, help="confidence bins for preference rows")
    parser.add_argument("--overwrite", action="store_true", help="replace --output when it exists already")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.suffix != ".jsonl":
        raise UserError(f"--output {output} must be a .jsonl file")
    if output.exists() and not args.overwrite:
        raise UserError(f"--output {output}: expected a new file, found one already written; pass --overwrite")
    if args.batch_size < 1:
        raise UserError(f"--batch_size must be >= 1; got {args.batch_size}")

    from labeling.selection import ranking_uncertainty
    from workbench.data.mixture import DatasetSpec, load_raw
    from workbench.evaluation.pairwise import pairwise_metrics
    from workbench.fileio import write_jsonl_atomic
    from workbench.modeling import adapters
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.reward_model import load_reward_model, score_sequences
    from workbench.modeling.tokens import reward_input_ids

    where = f"--input {args.input}"
    dataset = load_raw(DatasetSpec(path=args.input, split=args.split), where)
    rows = dataset.to_list()
    kind, jobs = _jobs(rows, dataset.column_names, where)
    model_args = ModelArguments(model_name_or_path=args.base_model, device_map=args.device_map)

    seconds = 0.0  # scoring only, not loading
    members = []  # one list of scores per reward model, in job order
    for adapter in args.adapter:
        model, tokenizer, _ = load_reward_model(adapter, model_args)
        sequences = [reward_input_ids(tokenizer, *_text(rows[r], field, k)) for r, field, k in jobs]
        # a row's candidates (or chosen and rejected) share its prompt's tokens: run them once per row
        groups = None if kind == "completions" else [r for r, _, _ in jobs]
        started = time.perf_counter()
        with adapters.folded_for_inference(model):  # float32 CPU base: the LoRA folded in, weights restored after
            members.append(score_sequences(model, sequences, tokenizer.pad_token_id, args.batch_size, groups))
        seconds += time.perf_counter() - started
        del model
    for job, (r, field, k) in enumerate(jobs):
        value = sum(member[job] for member in members) / len(members)
        if field == "scores":
            rows[r].setdefault("scores", [None] * len(rows[r]["completions"]))[k] = value
            if len(members) > 1:
                slots = rows[r].setdefault("member_scores", [[None] * len(rows[r]["completions"]) for _ in members])
                for m, member in enumerate(members):
                    slots[m][k] = member[job]
        else:
            rows[r][field] = value
            if len(members) > 1:
                rows[r][f"member_{field}"] = [member[job] for member in members]
    names = [str(Path(adapter).resolve()) for adapter in args.adapter]
    for row in rows:
        if kind == "candidates":
            row["ranking"] = sorted(range(len(row["scores"])), key=lambda i: -row["scores"][i])
            row["uncertainty"] = ranking_uncertainty(row.get("member_scores") or [row["scores"]])
        row["reward_model"] = names[0] if len(names) == 1 else names
        row["agent"] = _agent_name(args.adapter)
    write_jsonl_atomic(output, rows)

    summary = {
        "rows": len(rows),
        "kind": kind,
        "sequences": len(jobs),
        "reward_models": len(members),
        "seconds": seconds,
    }
    if kind == "preferences":
        metrics = pairwise_metrics(
            [row["score_chosen"] - row["score_rejected"] for row in rows], args.calibration_bins
        )
        summary.update({k: v for k, v in metrics.items() if k != "calibration"})
    print(f"workbench reward score: wrote {output}")
    print(json.dumps(summary, indent=2))
    return 0
