"""Round 2's reward model warm-started from round 1's, against a fresh one: which agrees more with the gold rubric?

    python bench/reward_warm_start.py --runs outputs/rounds/two-s0 outputs/rounds/two-s1 outputs/rounds/two-s2 \
        [--work outputs/reward-warm-start] [--out bench/results/reward_warm_start-<machine>.json]

Each `--runs` folder is a finished two-round pipeline run (bench/rounds.py's `two-s<seed>`), whose `reward-r2` is the
fresh reward model the pipeline trains by default (a new LoRA and head on both rounds' labels). On the same labels,
recipe and seed this trains:

- `warm`: round 2's recipe started from round 1's reward model (`init_adapter`, the pipeline's `reward_warm_start`);
- `warm-half`: the same with half the steps (does a warm start save training time?).

Agreement is measured on the run's own held-out eval answers: per prompt, the SFT, round-1 and round-2 policies'
answers (`eval/samples.jsonl`; best-of-N is left out, since round 2's fresh reward model chose it), every pair whose
gold scores differ by 0.25 or more, scored by each reward model. The rubric only measures. The JSON has every
(variant, seed) row and each variant's paired difference to `fresh` over the same pairs (bootstrap 95% over prompts).
Finished trainings in `--work` are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from alignment_common import outcomes, paired_difference, per_variant, run, score_agreement_set  # noqa: E402

from workbench.fileio import write_jsonl_atomic  # noqa: E402

POLICIES = ("sft", "reinforce++", "reinforce++-r2")  # best_of_4 was picked by the fresh round-2 reward model
VARIANTS = ("fresh", "warm", "warm-half")


def eval_answers(run_dir: Path, target: Path) -> tuple[Path, list[list[float]]]:
    """The run's held-out eval answers as candidates (one row per prompt, POLICIES' answers) and their gold scores."""
    by_prompt: dict[str, dict] = {}
    for sample in map(json.loads, (run_dir / "eval" / "samples.jsonl").read_text().splitlines()):
        if sample["policy"] in POLICIES:
            row = by_prompt.setdefault(
                sample["prompt_id"], {"prompt_id": sample["prompt_id"], "prompt": sample["prompt"]}
            )
            row[sample["policy"]] = (sample["response"], sample["gold"])
    rows = [row for row in by_prompt.values() if all(policy in row for policy in POLICIES)]
    if not target.exists():
        candidates = [
            {"prompt_id": row["prompt_id"], "prompt": row["prompt"], "completions": [row[p][0] for p in POLICIES]}
            for row in rows
        ]
        write_jsonl_atomic(target, candidates)
    return target, [[row[p][1] for p in POLICIES] for row in rows]


def trained(run_dir: Path, work: Path, variant: str, seed: int) -> tuple[Path, float | None]:
    """The variant's reward adapter (trained here unless it is the run's own fresh one) and its training seconds."""
    if variant == "fresh":
        return run_dir / "reward-r2", None
    folder = work / f"{variant}-s{seed}"
    if not (folder / "metrics.json").exists():
        recipe = run_dir / "recipes" / "reward-r2.yaml"
        command = ["workbench", "reward", "--config", str(recipe), "--output_dir", str(folder), "--overwrite"]
        command += ["--init_adapter", str(run_dir / "reward" / "adapter"), "--wandb_mode", "disabled"]
        if variant == "warm-half":
            steps = json.loads((run_dir / "reward-r2" / "metrics.json").read_text())["global_step"]
            command += ["--max_steps", str(max(1, steps // 2))]
        print(f"bench/reward_warm_start.py: training {variant} seed {seed}", file=sys.stderr, flush=True)
        seconds = run(command, work / f"{variant}-s{seed}.log")
        (folder / "bench-seconds.json").write_text(json.dumps({"seconds": seconds}))
    return folder, json.loads((folder / "bench-seconds.json").read_text())["seconds"]


def main() -> int:
    from ppo_memory import emit, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="finished two-round runs (two-s<seed>)")
    parser.add_argument("--work", type=Path, default=Path("outputs/reward-warm-start"))
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    started = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for run_dir in args.runs:
        seed = yaml.safe_load((run_dir / "recipe.yaml").read_text()).get("seed", 0)  # the pipeline's resolved recipe
        candidates, gold = eval_answers(run_dir, args.work / f"answers-s{seed}.jsonl")
        for variant in VARIANTS:
            folder, seconds = trained(run_dir, args.work, variant, seed)
            scored = args.work / f"{variant}-s{seed}-scored.jsonl"
            score_agreement_set(folder / "adapter", candidates, scored)
            agree = outcomes(scored, gold)
            metrics = json.loads((folder / "metrics.json").read_text())
            rows.append(
                {
                    "variant": variant,
                    "seed": seed,
                    "run": str(run_dir),
                    "reward_model": str(folder),
                    "agreement": sum(outcome for _, outcome in agree) / len(agree),
                    "agreement_pairs": len(agree),
                    "steps": metrics.get("global_step"),
                    "held_out_accuracy": metrics.get("eval_accuracy"),
                    "held_out_pairs": metrics.get("eval_pairs"),
                    "train_seconds": seconds,
                    "outcomes": agree,
                }
            )
    summary = per_variant(rows, list(VARIANTS), "agreement", held_out="held_out_accuracy")
    for variant in VARIANTS[1:]:
        summary[variant]["difference_to_fresh"] = paired_difference(rows, variant, "outcomes", baseline="fresh")
    result = {
        "benchmark": "reward_warm_start",
        "command": "python " + " ".join(sys.argv),
        "machine": machine(),
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")},
        "answers": {"policies": list(POLICIES), "min_gold_gap": 0.25},
        "variants": summary,
        "rows": [{k: v for k, v in row.items() if k != "outcomes"} for row in rows],
        "outcomes": [{"variant": r["variant"], "seed": r["seed"], "outcomes": r["outcomes"]} for r in rows],
        "seconds": round(time.perf_counter() - started, 1),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
