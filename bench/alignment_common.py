"""What every alignment bench shares: running a workbench command into a log, a run's recipe with overrides, the
held-out agreement set and its gold scores, the reward model's agreement with the gold rubric, and paired differences
with bootstrap intervals over prompts. bench/alignment.py (its reward, ppo and runs parts), active_labeling.py,
reward_warm_start.py, rounds.py and raft_seeds.py import these."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

MIN_GOLD_GAP = 0.25


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"bench/alignment.py: {' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return time.perf_counter() - started


def write_recipe(run_dir: Path, stage: str, overrides: dict, path: Path) -> Path:
    """The run's recipe for `stage` with `overrides` (a (key, factor) value: factor x the run's `key`), no W&B."""
    recipe = yaml.safe_load((run_dir / "recipes" / f"{stage}.yaml").read_text())
    for key, value in overrides.items():
        recipe[key] = type(recipe[value[0]])(recipe[value[0]] * value[1]) if isinstance(value, tuple) else value
    recipe["wandb_mode"] = "disabled"
    recipe.pop("wandb_group", None)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def agreement_set(run_dir: Path, work: Path, prompts: int) -> Path:
    """Held-out prompts x 4 SFT samples at T=1, generated once per run and kept in `work`."""
    target = work / "agreement-set" / "candidates.jsonl"
    if target.exists():
        return target
    overrides = dict(prompts="bundled:prompts", prompts_where={"split": "test"}, max_prompts=prompts)
    overrides |= dict(num_completions=4, temperature=1.0, top_p=1.0, top_k=0, dtype="float32")
    config = write_recipe(run_dir, "generate", overrides | {"output_dir": str(target.parent)}, work / "agreement.yaml")
    print(f"bench/alignment.py: generating the agreement set ({prompts} prompts x 4)", file=sys.stderr)
    run(["workbench", "generate", "--config", str(config), "--overwrite"], work / "agreement-set.log")
    return target


def gold_scores(candidates: Path) -> list[list[float]]:
    """The gold-rubric score of every answer in the agreement set, row by row."""
    from labeling import rubric

    rows = map(json.loads, candidates.read_text().splitlines())
    return [[rubric.score(row["prompt"], text) for text in row["completions"]] for row in rows]


def outcomes(scored: Path, gold: list[list[float]]) -> list[tuple[str, float]]:
    """(prompt_id, agreed) for every answer pair whose gold scores differ by MIN_GOLD_GAP or more (the eval's rule)."""
    from workbench.evaluation.metrics import agreement_outcomes

    rows = map(json.loads, scored.read_text().splitlines())
    samples = [
        {"prompt_id": row["prompt_id"], "reward": reward, "gold": value}
        for row, golds in zip(rows, gold)
        for reward, value in zip(row["scores"], golds)
    ]
    return agreement_outcomes(samples, min_gap=MIN_GOLD_GAP)


def agreement_by_part(candidates: Path, scored: Path) -> dict:
    """Agreement split by the rubric part that makes most of each pair's gold gap (a diagnosis of what the reward
    model has learned: finished answers, length, repetition, staying on topic): the eval's own split
    (workbench.evaluation.metrics.agreement_by_part) over the agreement set."""
    from labeling import rubric
    from workbench.evaluation.metrics import agreement_by_part as split

    samples = [
        {"prompt_id": index, "reward": reward, "gold": rubric.score(row["prompt"], text)}
        | {"gold_parts": rubric.points(row["prompt"], text)}
        for index, (row, scores) in enumerate(zip(map(json.loads, candidates.open()), map(json.loads, scored.open())))
        for text, reward in zip(row["completions"], scores["scores"])
    ]
    return {
        part: {"pairs": row["pairs"], "agreement": row["rate"]}
        for part, row in split(samples, min_gap=MIN_GOLD_GAP).items()
    }


def score_agreement_set(adapter: Path, candidates: Path, scored: Path) -> None:
    if not scored.exists():
        command = ["workbench", "reward", "score", "--adapter", str(adapter), "--input", str(candidates)]
        run(command + ["--output", str(scored), "--batch_size", "32"], scored.with_suffix(".log"))


def paired_difference(rows: list[dict], name: str, key: str, baseline: str = "baseline", by: str = "variant") -> dict:
    """`name` minus `baseline` (values of `row[by]`) over the same items (`row[key]`: (prompt_id, value) pairs in a
    fixed order) and the seeds both ran: the pooled mean, and a bootstrap 95% interval over prompts of each prompt's
    mean difference."""
    by_seed = {(r[by], r["seed"]): r[key] for r in rows}
    seeds = sorted(s for v, s in by_seed if v == name and (baseline, s) in by_seed)
    differences = [
        (prompt_id, mine - theirs)
        for seed in seeds
        for (prompt_id, mine), (_, theirs) in zip(by_seed[(name, seed)], by_seed[(baseline, seed)])
    ]
    if not differences:
        return {"seeds": [], "mean": None, "ci95": [None, None]}
    return {"seeds": seeds, **prompt_difference(differences)}


def prompt_difference(differences: list[tuple[str, float]]) -> dict:
    """(prompt_id, difference) items, a prompt possibly several times (several seeds or answer pairs): the pooled
    mean, and a bootstrap 95% interval over prompts of each prompt's mean difference."""
    from workbench.evaluation.metrics import bootstrap_interval

    per_prompt: dict[str, list[float]] = {}
    for prompt_id, difference in differences:
        per_prompt.setdefault(prompt_id, []).append(difference)
    values = [sum(v) / len(v) for v in per_prompt.values()]
    return {
        "mean": sum(d for _, d in differences) / len(differences),
        "ci95": bootstrap_interval(values),
        "prompts": len(values),
    }


def per_variant(rows: list[dict], names: list[str], key: str, **more: str) -> dict:
    """Per variant: every seed's `key` (and the `more` keys) and the mean of `key` over seeds."""
    summary = {}
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        summary[name] = {
            f"{key}_per_seed": [r[key] for r in mine],
            f"{key}_mean": sum(r[key] for r in mine) / len(mine),
        }
        summary[name] |= {f"{label}_per_seed": [r[field] for r in mine] for label, field in more.items()}
    return summary
