"""RAFT against the RL stage and best-of-N on finished quickstart runs: the same SFT policy, labels and reward model.

    python bench/raft_seeds.py --runs outputs/qs-seed5 outputs/qs-seed6 outputs/qs-seed7 outputs/qs-seed8 \
        [--recipe recipes/smollm2-135m/raft.yaml] [--work outputs/raft-seeds] [--out bench/results/raft-<machine>.json]

For each run folder (a finished `workbench pipeline` run): `workbench raft` with `--recipe` on the run's SFT and reward
adapters under the run's seed (into <work>/<run>/raft), then `workbench eval` with the run's own eval recipe and
policies SFT and RAFT only (greedy answers to the same held-out prompts; SFT's are the run's own, token for token).
Per run: RAFT's gold win rate against SFT with its paired bootstrap 95% interval, the mean gold difference and its
parts, KL to SFT, the stage's wall time; and prompt by prompt, RAFT's gold score minus each policy of the run's own
eval (its RL method, best-of-N), with a bootstrap interval over prompts, per run and pooled over runs. A run whose
<work> folder already holds a finished RAFT stage and eval is read, not trained again. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def gold_by_prompt(eval_dir: Path) -> dict[str, dict[str, float]]:
    """{policy: {prompt_id: gold score}} from an eval's samples.jsonl."""
    scores: dict[str, dict[str, float]] = {}
    for line in (eval_dir / "samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        scores.setdefault(sample["policy"], {})[sample["prompt_id"]] = sample["gold"]
    return scores


def run_seed(run_dir: Path, recipe: Path, work: Path) -> dict:
    import yaml
    from methods import eval_numbers

    seed = yaml.safe_load((run_dir / "recipe.yaml").read_text()).get("seed", 0)
    work.mkdir(parents=True, exist_ok=True)
    raft_dir, eval_dir = work / "raft", work / "eval"
    stage = yaml.safe_load(recipe.read_text())
    stage |= {"sft_adapter": str(run_dir / "sft" / "adapter"), "reward_adapter": str(run_dir / "reward" / "adapter")}
    stage |= {"seed": seed, "output_dir": str(raft_dir), "wandb_mode": "disabled"}
    evaluation = yaml.safe_load((run_dir / "recipes" / "eval.yaml").read_text())
    evaluation["policies"] = [
        {"name": "sft", "adapter": str(run_dir / "sft" / "adapter")},
        {"name": "raft", "adapter": str(raft_dir / "adapter")},
    ]
    evaluation |= {"best_of": 0, "output_dir": str(eval_dir), "wandb_mode": "disabled"}
    seconds = None
    for name, config, done in (
        ("raft", stage, raft_dir / "metrics.json"),
        ("eval", evaluation, eval_dir / "metrics.json"),
    ):
        if done.exists():
            continue
        path = work / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        start = time.monotonic()
        with open(work / f"{name}.log", "w") as log:
            command = [sys.executable, "-m", "workbench.cli", name, "--config", str(path)]
            if subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                raise SystemExit(f"bench/raft_seeds.py: {name} failed on {run_dir}; see {work / f'{name}.log'}")
        if name == "raft":
            seconds = time.monotonic() - start
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    own = gold_by_prompt(run_dir / "eval")
    raft_gold = gold_by_prompt(eval_dir)
    if raft_gold["sft"] != own["sft"]:
        raise SystemExit(f"bench/raft_seeds.py: SFT's answers differ from the run's own eval in {run_dir}")
    parts = metrics["win_rates"]["raft"]["gold_rubric"]["difference_by_part"]
    return {
        "run": str(run_dir),
        "seed": seed,
        **eval_numbers(metrics, "raft"),
        "gold_difference_by_part": {part: value["mean"] for part, value in parts.items()},
        "stage_seconds_this_run": seconds,
        "stage_metrics": json.loads((raft_dir / "metrics.json").read_text()),
        "run_eval_win_rates": {
            name: rates["gold_rubric"]["rate"]
            for name, rates in json.loads((run_dir / "eval" / "metrics.json").read_text())["win_rates"].items()
        },
        "gold_by_prompt": {"raft": raft_gold["raft"], **{k: v for k, v in own.items() if k != "sft"}},
    }


def main() -> int:
    from alignment_common import prompt_difference
    from bench_record import emit, machine, versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="finished `workbench pipeline` run folders")
    parser.add_argument("--recipe", default="recipes/smollm2-135m/raft.yaml", help="the raft recipe to run")
    parser.add_argument("--work", default="outputs/raft-seeds", help="where each run's RAFT stage and eval go")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    rows = [run_seed(Path(run), Path(args.recipe), Path(args.work) / Path(run).name) for run in args.runs]
    versus: dict[str, dict] = {}
    for other in sorted({name for row in rows for name in row["gold_by_prompt"] if name != "raft"}):
        pooled = []
        for row in rows:
            theirs = row["gold_by_prompt"].get(other)
            if theirs:
                mine = row["gold_by_prompt"]["raft"]
                differences = [(pid, mine[pid] - theirs[pid]) for pid in sorted(mine)]
                row.setdefault("raft_minus", {})[other] = prompt_difference(differences)
                pooled += differences
        versus[other] = prompt_difference(pooled) | {
            "seeds": [r["seed"] for r in rows if other in r["gold_by_prompt"]]
        }
    result = {
        "benchmark": "raft-seeds",
        "command": "python " + " ".join(sys.argv),
        "recipe": str(args.recipe),
        "eval": "the run's own eval recipe (120 held-out prompts, greedy), policies sft and raft; paired bootstrap "
        "95% intervals over prompts",
        "raft_minus_pooled": versus,
        "rows": [{k: v for k, v in r.items() if k != "gold_by_prompt"} for r in rows],
        "machine": machine(),
        "versions": versions("torch", "transformers", "trl", "peft"),
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
