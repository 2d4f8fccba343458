"""Two labeling rounds against one, with the same total labels and RL steps: does on-policy labeling help?

    python bench/rounds.py --work outputs/rounds --seeds 0 1 2 [--prompts 64] [--rl_steps 12] \
        [--out bench/results/rounds-<machine>.json]

For each seed, two `workbench pipeline` runs of the quickstart recipe (simulated labelers, everything else as
recipes/quickstart.yaml):

- `one`: 1 round, `--prompts` prompts ranked, the RL method trained `--rl_steps` steps;
- `two`: 2 rounds of `--prompts`/2 prompts each (round 2's candidates come from round 1's policy), the RL method
  `--rl_steps`/2 steps a round, the policy continuing from round 1's; round 2's reward model learns from both rounds.

Both runs of a seed share the SFT policy (same seed, same recipe) and the eval's held-out prompts, so their final
policies (`reinforce++` and `reinforce++-r2`) are compared prompt by prompt: gold-rubric win rate against SFT per seed
with its interval, and the paired mean gold difference two − one over prompts and seeds with a bootstrap interval.
Also per run: the final reward model's agreement with the gold rubric, KL to SFT, and wall time. Finished runs are
kept (re-running resumes). Prints one JSON object.
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

RECIPE = "recipes/quickstart.yaml"


def run_pipeline(run_dir: Path, seed: int, rounds: int, prompts: int, rl_steps: int) -> None:
    command = ["workbench", "pipeline", "--config", RECIPE, "--run_dir", str(run_dir), "--seed", str(seed)]
    command += ["--rounds", str(rounds), "--num_prompts", str(prompts // rounds)]
    command += ["--ppo_steps", str(rl_steps // rounds), "--wandb_mode", "disabled"]
    print(f"bench/rounds.py: {' '.join(command)}", file=sys.stderr, flush=True)
    if subprocess.run(command, cwd=ROOT, env=os.environ).returncode != 0:
        raise SystemExit(f"bench/rounds.py: the pipeline failed on {run_dir} (its logs/ folder says why)")


def row_of(run_dir: Path, variant: str, seed: int, policy: str) -> dict:
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
    gold_by_prompt = {}
    for sample in map(json.loads, (run_dir / "eval" / "samples.jsonl").read_text().splitlines()):
        if sample["policy"] == policy:
            gold_by_prompt[sample["prompt_id"]] = sample["gold"]
    gold = metrics["win_rates"][policy]["gold_rubric"]
    mine = metrics["policies"][policy]
    return {
        "variant": variant,
        "seed": seed,
        "run": str(run_dir),
        "policy": policy,
        "gold_win_rate": gold["rate"],
        "gold_win_rate_ci95": gold["ci95"],
        "gold_difference_to_sft": gold["difference"]["mean"],
        "gold_difference_to_sft_ci95": gold["difference"]["ci95"],
        "reward_model_vs_gold": (metrics.get("reward_model_vs_gold") or {}).get("rate"),
        "kl_per_answer": mine.get("kl_mean"),
        "kl_per_token": mine.get("kl_per_token_mean"),
        "pipeline_seconds": round(sum(s.get("seconds") or 0 for s in stages.values()), 1),
        "gold_by_prompt": sorted(gold_by_prompt.items()),
    }


def main() -> int:
    from alignment_common import paired_difference
    from ppo_memory import emit, machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the run folders (one-s<seed>, two-s<seed>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=64, help="prompts ranked in all (two rounds: half each)")
    parser.add_argument("--rl_steps", type=int, default=12, help="RL steps in all (two rounds: half each)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.prompts % 2 or args.rl_steps % 2:
        raise SystemExit("bench/rounds.py: --prompts and --rl_steps must be even (two rounds take half each)")
    rows = []
    for seed in args.seeds:
        for variant, rounds, policy in (("one", 1, "reinforce++"), ("two", 2, "reinforce++-r2")):
            run_dir = Path(args.work) / f"{variant}-s{seed}"
            run_pipeline(run_dir, seed, rounds, args.prompts, args.rl_steps)
            rows.append(row_of(run_dir, variant, seed, policy))
    summary = {
        variant: {
            "seeds": [r["seed"] for r in rows if r["variant"] == variant],
            **{
                f"{key}_per_seed": [r[key] for r in rows if r["variant"] == variant]
                for key in ("gold_win_rate", "gold_win_rate_ci95", "reward_model_vs_gold", "kl_per_token")
            },
        }
        for variant in ("one", "two")
    }
    for seed in args.seeds:  # paired over prompts: both runs of a seed answered the same held-out prompts
        one, two = ([p for p, _ in r["gold_by_prompt"]] for r in rows if r["seed"] == seed)
        if one != two:
            raise SystemExit(f"bench/rounds.py: seed {seed}'s two runs evaluated different prompts")
    summary["two_minus_one_gold"] = paired_difference(rows, "two", "gold_by_prompt", baseline="one")
    result = {
        "benchmark": "rounds",
        "command": "python " + " ".join(sys.argv),
        "setup": {"recipe": RECIPE, "prompts": args.prompts, "rl_steps": args.rl_steps},
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "gold_by_prompt"} for r in rows],
        "machine": machine(),
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")},
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
