"""Reward-model variants judged on the very answers a pipeline run's eval judged: does a variant order them as the
gold rubric does more often than the run's own reward model?

    python bench/reward_on_eval.py --runs outputs/qs-seed38 outputs/qs-seed37 ... --variants fit_then_train_layer15
                                   [--work /tmp/reward-on-eval] [--out bench/results/reward-on-eval-<machine>.json]

For each finished run, the reward stage is trained again from the run's own recipe (recipes/reward.yaml: its labels,
its seed) with each variant's keys on top (VARIANTS), and `workbench reward score` scores the run's eval answers
(eval/samples.jsonl: SFT's, the RL policy's and best-of-4's answers to the held-out prompts). The baseline is the
run's own reward adapter scored the same way. Agreement is the eval's `reward_model_vs_gold`: of the answer pairs to
one prompt whose gold scores differ by at least 0.25, the share the reward model orders as the rubric does; split by
the rubric part that makes most of each pair's gap. Each variant's paired difference to the baseline is over the same
answer pairs, pooled over runs, with a bootstrap 95% interval over prompts. The reward models learn from the labelers'
rankings alone; the rubric is only the measuring stick.

Unlike bench/alignment.py's `reward` part (a fresh agreement set of SFT samples at T=1) this scores the answers the
eval reported on, the pairs of the quickstart's reward-model target. Finished trainings in `--work` are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from alignment_common import MIN_GOLD_GAP, prompt_difference, run, write_recipe

# each variant: recipe keys on top of the run's reward recipe
VARIANTS = {
    # the reward model on the base's first 15 decoder layers of 30 (the head reads layer 15)
    "layer15": {"reward_layer": 15},
    # the head fitted alone on the frozen features first (linear probe), then the run's training steps (LP-FT)
    "fit_then_train": {"linear_head_fit": True},
    "fit_then_train_layer15": {"reward_layer": 15, "linear_head_fit": True},
    # the fitted head alone, no training steps
    "fit_only_layer15": {"reward_layer": 15, "linear_head_fit": True, "train_after_head_fit": False},
}


def eval_candidates(run_dir: Path, target: Path) -> Path:
    """The run's eval answers as `workbench reward score` candidates: one row per prompt, its policies' answers."""
    rows: dict = {}
    for sample in map(json.loads, (run_dir / "eval" / "samples.jsonl").open()):
        row = rows.setdefault(sample["prompt_id"], {"prompt_id": sample["prompt_id"], "prompt": sample["prompt"]})
        row.setdefault("completions", []).append(sample["response"])
    target.write_text("".join(json.dumps(row) + "\n" for row in rows.values()))
    return target


def judged(run_dir: Path, scored: Path) -> tuple[list[tuple[str, float]], dict]:
    """(prompt_id, agreed) per answer pair of the eval's agreement rule, and the agreement split by rubric part."""
    from workbench.evaluation.metrics import agreement_by_part, agreement_outcomes

    scores = {}
    for row in map(json.loads, scored.open()):
        for text, score in zip(row["completions"], row["scores"]):
            scores[(row["prompt_id"], text)] = score
    samples = [
        sample | {"reward": scores[(sample["prompt_id"], sample["response"])]}
        for sample in map(json.loads, (run_dir / "eval" / "samples.jsonl").open())
    ]
    parts = agreement_by_part(samples, min_gap=MIN_GOLD_GAP)
    outcomes = [
        (f"{run_dir.name}:{prompt}", agreed) for prompt, agreed in agreement_outcomes(samples, min_gap=MIN_GOLD_GAP)
    ]
    return outcomes, {part: {"pairs": row["pairs"], "agreement": row["rate"]} for part, row in parts.items()}


def score(adapter: Path, candidates: Path, scored: Path) -> None:
    if not scored.exists():
        command = ["workbench", "reward", "score", "--adapter", str(adapter), "--input", str(candidates)]
        run(command + ["--output", str(scored), "--batch_size", "32"], scored.with_suffix(".log"))


def variant_row(run_dir: Path, work: Path, name: str, candidates: Path) -> dict:
    folder = work / run_dir.name / name
    folder.mkdir(parents=True, exist_ok=True)
    if name == "baseline":
        adapter, seconds = run_dir / "reward" / "adapter", None
        metrics = json.loads((run_dir / "reward" / "metrics.json").read_text())
    else:
        overrides = {**VARIANTS[name], "output_dir": str(folder / "reward"), "save_steps": 10_000}
        config = write_recipe(run_dir, "reward", overrides, folder / "reward.yaml")
        if not (folder / "reward" / "metrics.json").exists():
            print(f"bench/reward_on_eval.py: {run_dir.name} {name}", file=sys.stderr)
            took = run(["workbench", "reward", "--config", str(config), "--overwrite"], folder / "reward.log")
            (folder / "bench-seconds.json").write_text(json.dumps({"seconds": took}))
        adapter = folder / "reward" / "adapter"
        seconds = json.loads((folder / "bench-seconds.json").read_text())["seconds"]
        metrics = json.loads((folder / "reward" / "metrics.json").read_text())
    score(adapter, candidates, folder / "scored.jsonl")
    outcomes, parts = judged(run_dir, folder / "scored.jsonl")
    return {
        "run": str(run_dir),
        "variant": name,
        "overrides": VARIANTS.get(name, {}),
        "agreement": sum(agreed for _, agreed in outcomes) / len(outcomes),
        "pairs": len(outcomes),
        "agreement_by_part": parts,
        "held_out_accuracy": metrics.get("eval_accuracy"),
        "held_out_pairs": metrics.get("eval_pairs"),
        "stage_seconds": seconds,
        "outcomes": outcomes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished `workbench pipeline` run folders")
    parser.add_argument("--variants", nargs="+", required=True, choices=list(VARIANTS))
    parser.add_argument("--work", default="/tmp/reward-on-eval", help="scratch folder (reused: finished runs stay)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    work = Path(args.work)
    rows = []
    for run_dir in map(Path, args.runs):
        (work / run_dir.name).mkdir(parents=True, exist_ok=True)
        candidates = eval_candidates(run_dir, work / run_dir.name / "eval-candidates.jsonl")
        for name in ["baseline", *args.variants]:
            rows.append(variant_row(run_dir, work, name, candidates))
    summary = {}
    for name in args.variants:
        differences = []
        for mine in (r for r in rows if r["variant"] == name):
            theirs = next(r for r in rows if r["variant"] == "baseline" and r["run"] == mine["run"])
            differences += [(p, a - b) for (p, a), (_, b) in zip(mine["outcomes"], theirs["outcomes"])]
        summary[name] = {
            "agreement_per_run": [r["agreement"] for r in rows if r["variant"] == name],
            "baseline_per_run": [r["agreement"] for r in rows if r["variant"] == "baseline"],
            "paired_difference": prompt_difference(differences),
        }
    from bench_record import emit, machine, versions

    result = {
        "benchmark": "reward-on-eval",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "versions": versions("torch", "transformers", "trl", "peft"),
        "min_gold_gap": MIN_GOLD_GAP,
        "summary": summary,
        "rows": rows,
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
