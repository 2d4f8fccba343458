"""Active selection against random: the reward model's agreement with the gold rubric against the number of labels.

    python bench/active_labeling.py --run outputs/quickstart [--strategies random uncertainty diversity]
                                    [--seeds 0 1 2] [--batch 16] [--budget 64] [--pool 240] [--prompts 120]
                                    [--reward KEY=VALUE ...] [--work /tmp/active-labeling]
                                    [--out bench/results/active_labeling-<machine>.json]

The loop `label push --select N --strategy S` runs with labelers, played here by the run's simulated annotators:

1. The pool: `--pool` training prompts (bundled prompts, split train) with 4 candidates each from the run's SFT policy
   and generate recipe, what the pipeline pushes.
2. Per seed, the first `--batch` prompts are a random draw (no reward model exists yet), the same for every strategy.
3. The run's annotators (their number and noise; seeds as `Planner.annotator_seed` makes them from the bench seed,
   each record's noise drawn from its prompt id rather than its Argilla id) rank the chosen prompts' candidates by
   the gold rubric with noise (labeling.simulate.rank_record); their rankings
   become preference pairs through labeling.ranking_pairs.build_preferences with the run's `min_agreement`, what
   `label pull` runs.
4. The run's reward recipe (with `--reward` keys over it: another reward recipe on the same pool and labels) trains a
   reward model on every label so far (seed = the bench seed; max_steps scaled to the labeled prompts, the run's steps
   per prompt), which scores the pool's unlabeled prompts and the agreement set.
5. labeling.selection.select picks the next `--batch` prompts by the strategy (uncertainty: from that reward model's
   scores), and 3-5 repeat until `--budget` prompts are labeled.

Agreement: the run's held-out agreement set (bench/alignment.py: `--prompts` test prompts x 4 SFT samples at T=1,
never labeled) scored by each reward model; the share of its answer pairs with a gold gap >= 0.25 that the reward
model orders as the rubric does. The rubric only measures; the reward models learn from the rankings alone.

The JSON has every (strategy, seed, labels) row, and per strategy the mean curve, each point's paired difference to
random over the same pairs and seeds (bootstrap 95% interval over prompts), and the labels it needs to reach random's
agreement at the full budget (the issue's goal: at most half). Finished steps in `--work` are reused.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from alignment_common import agreement_set, gold_scores, outcomes, paired_difference, run, write_recipe  # noqa: E402

from labeling.selection import SCORED, STRATEGIES, candidate_diversity, select  # noqa: E402
from workbench.fileio import write_json_atomic, write_jsonl_atomic, write_text_atomic  # noqa: E402
from workbench.jsonl import read_jsonl  # noqa: E402


def pool_candidates(run_dir: Path, work: Path, pool: int, completions: int | None = None) -> list[dict]:
    """`pool` training prompts x the run's `num_completions` candidates (4), or `completions` of them (kept apart in
    `work`/pool<completions>), from the run's SFT policy and generate recipe (generated once)."""
    name = "pool" if completions is None else f"pool{completions}"
    target = work / name / "candidates.jsonl"
    if not target.exists():
        overrides = {"max_prompts": pool, "output_dir": str(target.parent)}
        overrides |= {} if completions is None else {"num_completions": completions}
        config = write_recipe(run_dir, "generate", overrides, work / f"{name}.yaml")
        print(f"bench/active_labeling.py: generating the pool ({pool} prompts)", file=sys.stderr)
        run(["workbench", "generate", "--config", str(config), "--overwrite"], work / f"{name}.log")
    return [row for _, row in read_jsonl(target)][:pool]


def simulated_records(rows: list[dict], pipeline: dict, seed: int) -> list[dict]:
    """The run's simulated annotators' rankings of `rows`, as Argilla records (REST form) for build_preferences."""
    from labeling import settings
    from labeling.simulate import rank_record
    from workbench.pipeline.plan import annotator_seed

    records = []
    for row in rows:
        responses = []
        for index in range(1, pipeline["annotators"] + 1):
            rng = random.Random(f"{annotator_seed(seed, index)}/{row['prompt_id']}")
            ranks = rank_record(row["prompt"], row["completions"], pipeline["annotator_noise"], rng)
            values = {settings.RANKING: {"value": settings.ranking_value(ranks)}}
            responses.append({"status": "submitted", "user_id": f"sim-{index}", "values": values})
        fields = {settings.PROMPT: row["prompt"]}
        fields |= {settings.response_name(i): text for i, text in enumerate(row["completions"])}
        records.append({"fields": fields, "responses": responses, "metadata": {"prompt_id": row["prompt_id"]}})
    return records


def train_step(
    run_dir: Path,
    work: Path,
    name: str,
    labeled: list[dict],
    pipeline: dict,
    seed: int,
    score_rows: list[dict],
    reward_keys: dict,
) -> tuple[Path, dict]:
    """A reward model on `labeled`'s rankings (the run's reward recipe, `reward_keys` over it), then its scores of
    `score_rows`; reused when already in `work` for the same labels and keys."""
    from labeling.ranking_pairs import build_preferences

    folder = work / name
    scored = folder / "scored.jsonl"
    if (folder / "bench-step.json").exists():  # reused only for the same labels and what it must score
        step = json.loads((folder / "bench-step.json").read_text())
        have = {row["prompt_id"] for _, row in read_jsonl(scored)}
        same_labels = step["prompt_ids"] == [row["prompt_id"] for row in labeled]
        same_keys = step.get("reward_keys", {}) == reward_keys
        if same_labels and same_keys and have >= {row["prompt_id"] for row in score_rows}:
            return scored, step
    folder.mkdir(parents=True, exist_ok=True)
    pairs = build_preferences(simulated_records(labeled, pipeline, seed), {}, min_agreement=pipeline["min_agreement"])
    write_jsonl_atomic(folder / "preferences.jsonl", pairs.rows)
    base = yaml.safe_load((run_dir / "recipes" / "reward.yaml").read_text())
    steps = max(2, math.ceil(base["max_steps"] * len(labeled) / pipeline["num_prompts"]))
    overrides = reward_keys | {"datasets": [{"path": str(folder / "preferences.jsonl")}], "max_steps": steps}
    overrides["seed"] = seed
    overrides |= {"output_dir": str(folder / "reward"), "save_steps": 10_000, "warmup_steps": min(2, steps - 1)}
    config = write_recipe(run_dir, "reward", overrides, folder / "reward.yaml")
    print(f"bench/active_labeling.py: {name}: {len(labeled)} prompts, {len(pairs.rows)} pairs", file=sys.stderr)
    seconds = run(["workbench", "reward", "--config", str(config), "--overwrite"], folder / "reward.log")
    write_jsonl_atomic(folder / "to-score.jsonl", score_rows)
    command = ["workbench", "reward", "score", "--adapter", str(folder / "reward" / "adapter")]
    command += ["--input", str(folder / "to-score.jsonl"), "--output", str(scored)]
    run(command + ["--batch_size", "32", "--overwrite"], folder / "score.log")
    step = {"labels": len(labeled), "pairs": len(pairs.rows), "steps": steps, "train_seconds": seconds}
    step["prompt_ids"] = [row["prompt_id"] for row in labeled]
    step["reward_keys"] = reward_keys
    write_json_atomic(folder / "bench-step.json", step)
    return scored, step


def curve(
    run_dir: Path, work: Path, strategy: str, seed: int, pool: list[dict], agreement: list[dict], args, pipeline: dict
) -> list[dict]:
    """One strategy's learning curve for one seed: a row per `--batch` labels up to `--budget`."""
    from labeling.selection import ranking_uncertainty

    gold = gold_scores(work / "agreement-set" / "candidates.jsonl")[: len(agreement)]
    labeled = select(pool, "random", args.batch, seed)  # the first batch: no reward model yet
    rows = []
    while True:
        n = len(labeled)
        name = f"initial-seed{seed}-n{n}" if n == args.batch else f"{strategy}-seed{seed}-n{n}"
        done = {row["prompt_id"] for row in labeled}
        unlabeled = [row for row in pool if row["prompt_id"] not in done]
        more = n < args.budget
        # the first step is shared by every strategy: it scores the pool when any of them chooses by scores
        needs_pool = bool(set(SCORED) & set(args.strategies)) if n == args.batch else strategy in SCORED
        to_score = agreement + (unlabeled if more and needs_pool else [])
        scored, step = train_step(run_dir, work, name, labeled, pipeline, seed, to_score, args.reward_keys)
        scored_rows = {row["prompt_id"]: row for _, row in read_jsonl(scored)}  # a step may have scored more
        agreement_scored = work / name / "agreement-scored.jsonl"
        write_jsonl_atomic(agreement_scored, [scored_rows[row["prompt_id"]] for row in agreement])
        agree = outcomes(agreement_scored, gold)
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "labels": n,
                "pairs": step["pairs"],
                "reward_steps": step["steps"],
                "agreement": sum(outcome for _, outcome in agree) / len(agree),
                "agreement_pairs": len(agree),
                "labeled_diversity": sum(candidate_diversity(r["completions"]) for r in labeled) / n,
                "train_seconds": step["train_seconds"],
                "outcomes": agree,
            }
        )
        print(f"bench/active_labeling.py: {strategy} seed {seed} n={n}: {rows[-1]['agreement']:.3f}", file=sys.stderr)
        if not more:
            return rows
        members = None
        if strategy in SCORED:
            members = {row["prompt_id"]: [scored_rows[row["prompt_id"]]["scores"]] for row in unlabeled}
        if strategy == "uncertainty":
            rows[-1]["pool_uncertainty_mean"] = sum(ranking_uncertainty(m) for m in members.values()) / len(members)
        labeled = labeled + select(unlabeled, strategy, min(args.batch, args.budget - n), seed * 7919 + n, members)


def summarise(rows: list[dict], strategies: list[str], budget: int) -> dict:
    """Per strategy: the mean curve, each point's paired difference to random, the labels to reach random's end."""
    summary = {}
    random_final = None
    if "random" in strategies:
        finals = [r["agreement"] for r in rows if r["strategy"] == "random" and r["labels"] == budget]
        random_final = sum(finals) / len(finals)
    for strategy in strategies:
        mine = [r for r in rows if r["strategy"] == strategy]
        points = {}
        for n in sorted({r["labels"] for r in mine}):
            at_n = [r for r in rows if r["labels"] == n]
            values = [r["agreement"] for r in mine if r["labels"] == n]
            points[n] = {"agreement_per_seed": values, "agreement_mean": sum(values) / len(values)}
            points[n]["pairs_per_seed"] = [r["pairs"] for r in mine if r["labels"] == n]
            if strategy != "random" and "random" in strategies:
                points[n]["difference_to_random"] = paired_difference(at_n, strategy, "outcomes", "random", "strategy")
        reached = [n for n, p in points.items() if random_final is not None and p["agreement_mean"] >= random_final]
        summary[strategy] = {
            "curve": points,
            "labels_to_reach_random_final": min(reached) if reached else None,
            "label_ratio_to_random": (min(reached) / budget) if reached else None,
        }
    return {"random_final_agreement": random_final, "strategies": summary}


def parse_reward_keys(pairs: list[str]) -> dict:
    """`--reward` KEY=VALUE items as a dict, each value read as YAML (15 -> 15, true -> True)."""
    keys = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--reward: expected KEY=VALUE; found {item!r}")
        keys[key] = yaml.safe_load(value)
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a pipeline run folder (its SFT adapter and recipes)")
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=16, help="prompts labeled per step")
    parser.add_argument("--budget", type=int, default=64, help="prompts labeled in all")
    parser.add_argument("--pool", type=int, default=240, help="training prompts to choose from")
    parser.add_argument("--prompts", type=int, default=120, help="held-out prompts in the agreement set")
    parser.add_argument(
        "--reward",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="reward recipe keys over the run's (values in YAML: reward_layer=15 linear_head_fit=true)",
    )
    parser.add_argument("--work", default="/tmp/active-labeling")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.budget % args.batch or args.budget > args.pool:
        raise SystemExit("--budget must be a multiple of --batch and at most --pool")
    args.reward_keys = parse_reward_keys(args.reward)
    run_dir, work = Path(args.run).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    started = time.perf_counter()

    pool = pool_candidates(run_dir, work, args.pool)
    agreement = [row for _, row in read_jsonl(agreement_set(run_dir, work, args.prompts))][: args.prompts]
    rows = []
    for seed in args.seeds:
        for strategy in args.strategies:
            rows += curve(run_dir, work, strategy, seed, pool, agreement, args, pipeline)

    import torch
    import transformers
    import trl

    result = {
        "bench": "active_labeling",
        "command": " ".join(["python", "bench/active_labeling.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "run": str(run_dir),
        "settings": settings(pool, agreement, pipeline, args) | {"reward_keys": args.reward_keys},
        **summarise(rows, args.strategies, args.budget),
    }
    emit(result, rows, time.perf_counter() - started, args.out)
    return 0


def settings(pool: list[dict], agreement: list[dict], pipeline: dict, args) -> dict:
    """What a curve depends on besides the run: the pool, the steps, the agreement set and the annotators."""
    return {
        "pool": len(pool),
        "batch": args.batch,
        "budget": args.budget,
        "agreement_prompts": len(agreement),
        "annotators": pipeline["annotators"],
        "annotator_noise": pipeline["annotator_noise"],
        "min_agreement": pipeline["min_agreement"],
    }


def emit(result: dict, rows: list[dict], seconds: float, out: str | None) -> None:
    """Print `result` with the rows and their outcomes (one line per row: they are for paired re-analysis, not for
    reading) and the seconds taken; also write it to `out` if given."""
    result = result | {"rows": [{k: v for k, v in row.items() if k != "outcomes"} for row in rows], "seconds": seconds}
    lines = [
        {"strategy": r["strategy"], "seed": r["seed"], "labels": r["labels"], "outcomes": r["outcomes"]} for r in rows
    ]
    outcomes = ",\n    ".join(json.dumps(line, separators=(",", ":")) for line in lines)
    text = json.dumps(result, indent=2)[:-2] + ',\n  "outcomes": [\n    ' + outcomes + "\n  ]\n}"
    print(text)
    if out:
        write_text_atomic(Path(out), text + "\n")


if __name__ == "__main__":
    sys.exit(main())
