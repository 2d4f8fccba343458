"""bench/alignment.py's `reward` and `runs` parts: the reward-model variants (VARIANTS, recipe keys on top of a run's
reward recipe), each trained again from a finished run's labels and scored on the held-out agreement set, the seeds
as an ensemble and as one weight-averaged adapter; and whole runs set side by side."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml
from alignment_common import (
    MIN_GOLD_GAP,
    agreement_by_part,
    agreement_set,
    gold_scores,
    outcomes,
    paired_difference,
    per_variant,
    prompt_difference,
    run,
    score_agreement_set,
    write_recipe,
)

PAIRS_MIN_AGREEMENT = "pairs_min_agreement"  # not a recipe key: the run's rankings are aggregated again (repulled)
# each variant: recipe keys applied on top of the run's reward recipe; (key, factor): factor x the run's value of key
VARIANTS = {
    "baseline": {},
    "init_sft": {"init_from_sft": True},
    "no_margin": {"use_margin": False},
    "lr_2e-4": {"learning_rate": 2.0e-4},
    "lr_1e-3": {"learning_rate": 1.0e-3},  # twice the quickstart's 5e-4: 20 steps may be too few to learn topicality
    "rank_64": {"lora_r": 64, "lora_alpha": 128},  # 4x the adapter's rank at the same alpha / r
    "steps_x2": {"max_steps": ("max_steps", 2)},  # twice the run's steps (twice the time)
    # each ranking's pairs as one batch element, every answer scored once; 4 rankings (<= 16 answers) per step cost
    # what 8 pairs (16 answers) did, and the same steps see more pairs (measured 1.9x pairs/s in the quickstart)
    "rankings": {"group_rankings": True, "per_device_train_batch_size": 4},
    "rankings_half": {"group_rankings": True, "per_device_train_batch_size": 4, "max_steps": ("max_steps", 0.5)},
    "pairs": {"group_rankings": False, "per_device_train_batch_size": 8},  # the reverse, for a run that groups
    # the same rankings, every pair two of three annotators ordered alike (the run pulled with min_agreement 1.0):
    # ~1.5x the pairs, the added ones closer and noisier; margins and agreement stay on every pair. Measured on 3
    # runs: 0.704 against 0.713 (bench/results/alignment-reward-majority-cpu-2core.json)
    "majority": {PAIRS_MIN_AGREEMENT: 0.6},
    # the length term without the head's decorrelation from length (ODIN's loss term, length_decorrelation)
    "no_decorrelation": {"length_decorrelation": 0.0},
    # the decorrelation with the head's norm floored at an RMS score difference of 1 (length_term.py): it does not
    # push a fresh head's small scores about
    "decorrelation_floor": {"length_decorrelation_floor": 1.0},
    # three off-topic pairs per prompt (each against a different other prompt's best answer) instead of one: the
    # head orders the eval's on-topic pairs as gold does in only 0.42-0.52 of them at annotator noise 0.4
    "off_topic_x3": {"off_topic_pairs_per_prompt": 3},
}


def repulled(run_dir: Path, work: Path, min_agreement: float) -> Path:
    """The run's rankings (preferences/agreement.jsonl: every annotator's ranking of every record) aggregated again
    with `min_agreement` by labeling.ranking_pairs.build_preferences, what `workbench label pull` runs: the same
    labels through another filter, without the Argilla server."""
    from labeling import settings
    from labeling.ranking_pairs import build_preferences
    from workbench.fileio import write_jsonl_atomic
    from workbench.jsonl import read_jsonl

    target = work / f"{run_dir.name}-pairs-min-agreement-{min_agreement:g}.jsonl"
    if target.exists():
        return target
    candidates = {row["prompt_id"]: row for _, row in read_jsonl(run_dir / "generate" / "candidates.jsonl")}
    records = []
    for _, row in read_jsonl(run_dir / "preferences" / "agreement.jsonl"):
        candidate = candidates[row["prompt_id"]]
        answers = {settings.response_name(i): text for i, text in enumerate(candidate["completions"])}
        responses = [
            {"status": "submitted", "user_id": name, "values": {settings.RANKING: {"value": [
                {"value": option, "rank": rank} for option, rank in ranking.items()
            ]}}}
            for name, ranking in row["rankings"].items()
        ]  # fmt: skip
        fields = {settings.PROMPT: candidate["prompt"], **answers}
        records.append({"fields": fields, "responses": responses, "metadata": {"prompt_id": row["prompt_id"]}})
    write_jsonl_atomic(target, build_preferences(records, {}, min_agreement=min_agreement).rows)
    return target


def train_and_score(run_dir: Path, work: Path, name: str, seed: int, candidates: Path, gold: list) -> dict:
    folder = work / f"{name}-seed{seed}"
    overrides = {**VARIANTS[name], "seed": seed, "output_dir": str(folder), "save_steps": 10_000}
    if PAIRS_MIN_AGREEMENT in overrides:
        pairs = repulled(run_dir, work, overrides.pop(PAIRS_MIN_AGREEMENT))
        overrides["datasets"] = [{"path": str(pairs)}]
    config = write_recipe(run_dir, "reward", overrides, work / f"{name}-seed{seed}.yaml")
    if not (folder / "metrics.json").exists():
        print(f"bench/alignment.py: training {name} seed {seed}", file=sys.stderr)
        seconds = run(["workbench", "reward", "--config", str(config), "--overwrite"], work / f"{name}-seed{seed}.log")
        (folder / "bench-seconds.json").write_text(json.dumps({"seconds": seconds}))
    scored = folder / "agreement-scored.jsonl"
    score_agreement_set(folder / "adapter", candidates, scored)
    metrics = json.loads((folder / "metrics.json").read_text())
    agree = outcomes(scored, gold)
    return {
        "variant": name,
        "seed": seed,
        "overrides": VARIANTS[name],
        "agreement": sum(outcome for _, outcome in agree) / len(agree),
        "agreement_pairs": len(agree),
        "agreement_by_part": agreement_by_part(candidates, scored),
        "held_out_accuracy": metrics.get("eval_accuracy"),
        "held_out_pairs": metrics.get("eval_pairs"),
        "held_out_mean_margin": metrics.get("eval_mean_margin"),
        "train_loss": metrics.get("train_loss"),
        "train_seconds": json.loads((folder / "bench-seconds.json").read_text())["seconds"],
        "outcomes": agree,
    }


def ensemble(work: Path, name: str, seeds: list[int], rows: list[dict], gold: list, candidates: Path) -> dict:
    """The variant's seeds as one ensemble reward model (each answer's mean score over the members, as `workbench
    reward score` with several adapters scores it): its agreement, and the paired difference to its members' mean
    agreement over the same answer pairs, with a bootstrap 95% interval over prompts. Ensembles are a lever of the
    issue: a member's idiosyncratic errors average out, at the cost of one training and one scoring pass per member.
    `weight_averaged`: the members' weights averaged into one adapter (`workbench reward average`, WARM), scored
    once: its agreement and its paired differences to the members' mean and to the score ensemble."""
    files = [work / f"{name}-seed{seed}" / "agreement-scored.jsonl" for seed in seeds]
    members = [list(map(json.loads, path.open())) for path in files]
    averaged = work / f"{name}-ensemble-scored.jsonl"
    with averaged.open("w") as out:
        for answers in zip(*members):
            mean = [sum(values) / len(values) for values in zip(*(a["scores"] for a in answers))]
            out.write(json.dumps({**answers[0], "scores": mean}) + "\n")
    agree = outcomes(averaged, gold)
    single = [r["outcomes"] for r in rows if r["variant"] == name]
    members_mean = [(prompt_id, sum(o[k][1] for o in single) / len(single)) for k, (prompt_id, _) in enumerate(agree)]

    def difference(mine: list, theirs: list) -> dict:
        return prompt_difference([(q, a - b) for (q, a), (_, b) in zip(mine, theirs)])

    # the same members' weights averaged into one adapter (`workbench reward average`): one scoring pass, not K
    folder = work / f"{name}-averaged-seeds{'-'.join(map(str, seeds))}"
    if not (folder / "adapter" / "workbench.json").exists():
        command = ["workbench", "reward", "average", "--output", str(folder / "adapter"), "--overwrite"]
        command += [arg for seed in seeds for arg in ("--adapter", str(work / f"{name}-seed{seed}" / "adapter"))]
        folder.mkdir(parents=True, exist_ok=True)
        run(command, folder / "average.log")
    scored = folder / "agreement-scored.jsonl"
    score_agreement_set(folder / "adapter", candidates, scored)
    weights = outcomes(scored, gold)
    return {
        "members": seeds,
        "agreement": sum(o for _, o in agree) / len(agree),
        "members_mean_agreement": sum(r["agreement"] for r in rows if r["variant"] == name) / len(single),
        "difference_to_members": difference(agree, members_mean),
        "weight_averaged": {
            "agreement": sum(o for _, o in weights) / len(weights),
            "agreement_by_part": agreement_by_part(candidates, scored),
            "difference_to_members": difference(weights, members_mean),
            "difference_to_score_ensemble": difference(weights, agree),
        },
    }


def reward_part(run_dir: Path, work: Path, names: list[str], seeds: list[int], prompts: int) -> dict:
    """Each reward variant and seed trained again from the run's labels and scored on the agreement set: every row,
    per variant the paired difference to baseline and, with several seeds, the seeds as one ensemble."""
    candidates = agreement_set(run_dir, work, prompts)
    gold = gold_scores(candidates)
    rows = [train_and_score(run_dir, work, n, s, candidates, gold) for s in seeds for n in names]
    summary = per_variant(rows, names, "agreement", held_out_accuracy="held_out_accuracy")
    for name in names[1:]:
        summary[name]["difference_to_baseline"] = paired_difference(rows, name, "outcomes")
    if len(seeds) > 1:
        for name in names:
            summary[name]["ensemble"] = ensemble(work, name, seeds, rows, gold, candidates)
    return {
        "variants": {n: VARIANTS[n] for n in names},
        "seeds": seeds,
        "agreement_set": {
            "prompts": prompts,
            "answers_per_prompt": 4,
            "pairs": rows[0]["agreement_pairs"],
            "min_gold_gap": MIN_GOLD_GAP,
        },
        "summary": summary,
        "rows": [{k: v for k, v in r.items() if k != "outcomes"} for r in rows],
    }


def runs_part(run_dirs: list[Path], work: Path, candidates: Path) -> list[dict]:
    """Whole pipeline runs side by side (e.g. more labeled prompts): each run's reward model on the agreement set,
    its reward stage's held-out accuracy, and its eval's gold win rates against SFT as the run's report gives them."""
    from labeling import rubric

    gold = gold_scores(candidates)
    rows = []
    for run_dir in run_dirs:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text())
        scored = work / f"run-{run_dir.name}-agreement-scored.jsonl"
        score_agreement_set(run_dir / "reward" / "adapter", candidates, scored)
        agree = outcomes(scored, gold)
        reward = json.loads((run_dir / "reward" / "metrics.json").read_text())
        eval_file = run_dir / "eval" / "metrics.json"  # a run stopped after its reward stage has none
        evaluation = json.loads(eval_file.read_text()) if eval_file.exists() else {"policies": {}, "win_rates": {}}
        stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
        wins = {
            name: {k: by["gold_rubric"][k] for k in ("rate", "ci95", "n", "difference")}
            for name, by in evaluation["win_rates"].items()
        }
        rows.append(
            {
                "run": str(run_dir),
                "seed": recipe.get("seed", 0),
                "num_prompts": recipe["num_prompts"],
                "reward_overrides": recipe.get("overrides", {}).get("reward", {}),
                "preference_pairs": len((run_dir / "preferences" / "preferences.jsonl").read_text().splitlines()),
                "agreement": sum(o for _, o in agree) / len(agree),
                "agreement_pairs": len(agree),
                "agreement_by_part": agreement_by_part(candidates, scored),
                "held_out_accuracy": reward.get("eval_accuracy"),
                "held_out_pairs": reward.get("eval_pairs"),
                "eval_reward_model_vs_gold": evaluation.get("reward_model_vs_gold", {}).get("rate"),
                "eval_gold_win_rates_vs_sft": wins,
                "eval_gold_means": {n: p.get("gold_mean") for n, p in evaluation["policies"].items()},
                "stage_seconds": {n: round(s["seconds"]) for n, s in stages.items() if "seconds" in s},
                "rubric": rubric.RUBRIC_VERSION,
            }
        )
        if len(rows) > 1:
            rows[-1]["eval_gold_difference_to_first_run"] = gold_difference(run_dirs[0], run_dir)
    return rows


def gold_difference(first: Path, other: Path) -> dict:
    """Per alignment method both runs' evals have: the mean over prompts of (this run's gold score - the first run's)
    with a bootstrap 95% interval over prompts, and whether the two runs' SFT answers were the same (the runs share
    their SFT policy when they differ only after it)."""
    from workbench.evaluation.metrics import bootstrap_interval
    from workbench.jsonl import read_jsonl

    samples = [
        {(r["policy"], r["prompt_id"]): r for _, r in read_jsonl(run / "eval" / "samples.jsonl")}
        for run in (first, other)
    ]
    found = {}
    for policy in sorted({p for p, _ in samples[1]} & {p for p, _ in samples[0]}):
        prompts = sorted(prompt for p, prompt in samples[1] if p == policy and (p, prompt) in samples[0])
        differences = [samples[1][(policy, q)]["gold"] - samples[0][(policy, q)]["gold"] for q in prompts]
        found[policy] = {
            "prompts": len(prompts),
            "mean": sum(differences) / len(differences),
            "ci95": bootstrap_interval(differences),
            "same_answers": sum(
                samples[1][(policy, q)]["response"] == samples[0][(policy, q)]["response"] for q in prompts
            ),
        }
    return found
