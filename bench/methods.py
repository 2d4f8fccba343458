"""Alignment methods side by side on the same labels: PPO, RLOO, GRPO, REINFORCE++, RAFT and DPO from one pipeline
run each.

    python bench/methods.py --runs outputs/qs-fp32-seed0 outputs/qs-fp32-seed1 outputs/qs-fp32-seed2 \
        [--methods ppo rloo grpo reinforce++ raft dpo] [--out bench/results/methods-<machine>.json]

Each run is a finished `workbench pipeline` run folder (one seed of the quickstart, say). The bench runs the same
pipeline again with `--methods ...`: its finished stages (SFT, candidates, labels, reward model, and any method
already trained) are kept, each missing method trains from the run's own SFT policy, labels and reward model with
the same steps and sequences per step, and the eval answers the same held-out prompts with every method (the run's
eval recipe: greedy answers, best-of-N SFT samples as a reference row). Per method and run: the gold-rubric win rate
against SFT with its paired bootstrap interval, the mean gold difference, the reward model's win rate, KL to SFT per
answer and per token, the stage's wall time, CPU time and peak resident memory (pipeline.json). Per method: every
run's numbers and, against `--baseline` (ppo), the paired gold difference pooled over runs. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def train_methods(run_dir: Path, methods: list[str], own_recipes: dict[str, str]) -> None:
    """The run's own pipeline recipe with `methods`: only what is missing runs (then eval and report again). A method
    with its own stage recipe (dpo, raft) that the run's recipe does not name gets `own_recipes[method]` (the stages'
    defaults are a GPU's)."""
    import yaml

    recipe = run_dir / "recipe.yaml"
    if not recipe.exists() or not (run_dir / "pipeline.json").exists():
        raise SystemExit(f"bench/methods.py: {run_dir} is not a `workbench pipeline` run folder (no recipe.yaml)")
    command = ["workbench", "pipeline", "--config", str(recipe), "--methods", *methods]
    named = yaml.safe_load(recipe.read_text())
    for method, path in own_recipes.items():
        if method in methods and not named.get(f"{method}_recipe"):
            command += [f"--{method}_recipe", path]
    print(f"bench/methods.py: {' '.join(command)}", file=sys.stderr)
    done = subprocess.run(command, cwd=ROOT, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"bench/methods.py: the pipeline failed on {run_dir} (its logs/ folder says why)")


def eval_numbers(metrics: dict, name: str) -> dict:
    """Policy `name`'s numbers in an eval's metrics.json: gold win rate against the baseline with its paired interval,
    the mean gold difference with its interval, the reward model's win rate, KL to the reference per answer and per
    token, mean words, and how many answers are empty or loop."""
    gold, mine = metrics["win_rates"][name]["gold_rubric"], metrics["policies"][name]
    return {
        "gold_win_rate": gold["rate"],
        "gold_win_rate_ci95": gold["ci95"],
        "gold_difference": gold["difference"]["mean"],
        "gold_difference_ci95": gold["difference"]["ci95"],
        "reward_model_win_rate": metrics["win_rates"][name]["reward_model"]["rate"],
        "kl_per_answer": mine.get("kl_mean"),
        "kl_per_token": mine.get("kl_per_token_mean"),
        "words": mine.get("words_mean"),
        "empty": mine.get("empty"),
        "looping": mine.get("looping"),
    }


def rows_of(run_dir: Path, methods: list[str]) -> list[dict]:
    import yaml

    seed = yaml.safe_load((run_dir / "recipe.yaml").read_text()).get("seed", 0)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    gold_by_prompt: dict[str, dict] = {}
    for sample in map(json.loads, (run_dir / "eval" / "samples.jsonl").read_text().splitlines()):
        gold_by_prompt.setdefault(sample["policy"], {})[sample["prompt_id"]] = sample["gold"]
    rows = []
    for name in methods:
        stage = stages[name]
        rows.append(
            {
                "method": name,
                "run": str(run_dir),
                "seed": seed,
                **eval_numbers(metrics, name),
                "train_seconds": stage.get("seconds"),
                "train_cpu_seconds": stage.get("cpu_seconds"),
                "peak_rss_mb": stage.get("peak_rss_mb"),
                "recipe": yaml.safe_load((run_dir / "recipes" / f"{name}.yaml").read_text()),
                "gold_by_prompt": sorted(gold_by_prompt[name].items()),
            }
        )
    best = [n for n in metrics["win_rates"] if n.startswith("best_of_")]
    for name in best:  # the reference row: N SFT samples, the reward model picks
        gold = metrics["win_rates"][name]["gold_rubric"]
        rows.append({"method": name, "run": str(run_dir), "seed": seed, "gold_win_rate": gold["rate"]})
        rows[-1] |= {"gold_win_rate_ci95": gold["ci95"], "gold_difference": gold["difference"]["mean"]}
    return rows


def main() -> int:
    from alignment_common import paired_difference
    from ppo_memory import emit, machine

    from workbench.pipeline.pipeline_recipe import METHODS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished `workbench pipeline` run folders")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--baseline", default="ppo", help="the method the others are compared with, prompt by prompt")
    for method in ("dpo", "raft"):
        parser.add_argument(
            f"--{method}_recipe",
            default=f"recipes/smollm2-135m/{method}.yaml",
            help=f"for a run whose recipe names no {method}_recipe",
        )
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    methods = [m for m in METHODS if m in args.methods]
    rows = []
    for run_dir in map(Path, args.runs):
        train_methods(run_dir, methods, {"dpo": args.dpo_recipe, "raft": args.raft_recipe})
        rows += rows_of(run_dir, methods)
    summary = {}
    for name in sorted({r["method"] for r in rows}, key=lambda n: (n not in methods, n)):
        mine = [r for r in rows if r["method"] == name]
        summary[name] = {
            "seeds": [r["seed"] for r in mine],
            "gold_win_rate_per_seed": [r["gold_win_rate"] for r in mine],
            "gold_win_rate_ci95_per_seed": [r["gold_win_rate_ci95"] for r in mine],
            "gold_win_rate_mean": sum(r["gold_win_rate"] for r in mine) / len(mine),
        }
        if name in methods:
            summary[name] |= {
                f"{key}_per_seed": [r[key] for r in mine]
                for key in ("kl_per_answer", "kl_per_token", "train_seconds", "peak_rss_mb")
            }
        if name in methods and name != args.baseline and args.baseline in methods:
            trained = [r for r in rows if r["method"] in methods]  # best-of-N rows carry no per-prompt scores
            summary[name][f"gold_difference_to_{args.baseline}"] = paired_difference(
                trained, name, "gold_by_prompt", baseline=args.baseline, by="method"
            )
    result = {
        "benchmark": "methods",
        "command": "python " + " ".join(sys.argv),
        "methods": methods,
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "gold_by_prompt"} for r in rows],
        "machine": machine(),
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")},
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
