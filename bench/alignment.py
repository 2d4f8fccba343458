"""Ablation of the alignment levers over seeds: what each does to the reward model's agreement with the gold rubric.

    python bench/alignment.py reward|ppo --run outputs/quickstart [--variants baseline init_sft ...] [--stage ppo]
                                         [--seeds 0 1 2] [--prompts N] [--work /tmp/alignment-bench]
                                         [--out bench/results/alignment-<part>-<machine>.json]
    python bench/alignment.py runs --run outputs/quickstart --others outputs/other-run ...

`reward` (bench/alignment_reward.py): the reward stage of a finished pipeline run (its recipes/reward.yaml, the
labelers' preference pairs, the SFT adapter) is trained again once per variant and seed, each variant a few recipe
keys on top of the run's recipe (VARIANTS). Every reward model then scores one fixed agreement set: `--prompts`
held-out prompts (bundled prompts, split test: never labeled, never trained on) with 4 answers each sampled from the
run's SFT policy at T=1, the answers PPO starts from. Agreement: of the answer pairs to one prompt whose gold-rubric
scores differ by at least 0.25, the share the reward model orders as the rubric does (the eval stage's
`reward_model_vs_gold`). The rubric is only the measuring stick here; the reward models learn from the labelers'
rankings alone.

The JSON gives every (variant, seed) row (agreement, the stage's held-out pairwise accuracy and mean margin on labeler
pairs, its training loss, train seconds) and, per variant, the paired difference to `baseline` over the same pairs and
seeds with a bootstrap 95% interval over prompts.

`ppo` (bench/alignment_ppo.py): PPO is trained again once per variant (PPO_VARIANTS) and seed from the run's SFT
policy and reward model; per seed, one eval answers `--prompts` (default 120) held-out prompts greedily with SFT and
that seed's variants. Rows: the gold win rate against SFT with its interval, the mean gold difference, the reward
model's win rate, KL per answer and per token; per variant, the paired gold difference to `baseline` over prompts,
pooled over seeds.

`runs` (bench/alignment_reward.py): whole pipeline runs side by side (say, 32, 64 and 128 labeled prompts from the
same SFT policy): each run's reward model on the same agreement set, its held-out accuracy, its eval's gold win rates
against SFT, stage times.

Reward rows also split the agreement by the rubric part that makes most of each pair's gold gap (`agreement_by_part`):
which of the labelers' reasons the reward model has picked up. Finished runs in `--work` are reused. Prints one JSON
object; `--out` also writes it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alignment_common import MIN_GOLD_GAP, agreement_set
from alignment_ppo import PPO_VARIANTS, ppo_result
from alignment_reward import VARIANTS, reward_part, runs_part


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["reward", "ppo", "runs"])
    parser.add_argument("--run", required=True, help="a finished `workbench pipeline` run folder")
    parser.add_argument("--others", nargs="*", default=[], help="runs: more finished runs to set beside --run")
    parser.add_argument("--variants", nargs="+", default=["baseline"], help="names from VARIANTS or PPO_VARIANTS")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--prompts", type=int, default=None, help="held-out prompts (default 48 reward, 120 ppo)")
    parser.add_argument("--work", default="/tmp/alignment-bench", help="scratch folder (reused: finished runs stay)")
    parser.add_argument("--stage", default="ppo", help="ppo: the run's RL recipe, recipes/<stage>.yaml (reinforce++)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    run_dir, work = Path(args.run), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    known = VARIANTS if args.part in ("reward", "runs") else PPO_VARIANTS
    unknown = sorted(set(args.variants) - set(known))
    if unknown:
        raise SystemExit(f"bench/alignment.py: unknown {args.part} variants {unknown}; known: {sorted(known)}")
    for needed in ("recipes/reward.yaml", "recipes/generate.yaml", "preferences/preferences.jsonl", "sft/adapter"):
        if not (run_dir / needed).exists():
            raise SystemExit(f"bench/alignment.py: --run {run_dir}: no {needed}; run `workbench pipeline` first")
    names = ["baseline"] + [v for v in args.variants if v != "baseline"]

    from ppo_memory import emit, machine

    result = {"benchmark": f"alignment-{args.part}", "command": "python " + " ".join(sys.argv), "run": str(run_dir)}
    if args.part == "ppo":
        result |= ppo_result(run_dir, work, names, args.seeds, args.prompts or 120, args.stage)
    elif args.part == "runs":
        prompts = args.prompts or 48
        candidates = agreement_set(run_dir, work, prompts)
        result["rows"] = runs_part([run_dir, *map(Path, args.others)], work, candidates)
        result["agreement_set"] = {"prompts": prompts, "answers_per_prompt": 4, "min_gold_gap": MIN_GOLD_GAP}
    else:
        result |= reward_part(run_dir, work, names, args.seeds, args.prompts or 48)
    result["machine"] = machine()
    result["versions"] = {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
