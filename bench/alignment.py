"""Ablation of the alignment levers over seeds: what each does to the reward model's agreement with the gold rubric.

    python bench/alignment.py reward|ppo --run outputs/quickstart [--variants baseline init_sft ...] [--stage ppo]
                                         [--seeds 0 1 2] [--prompts N] [--work /tmp/alignment-bench]
                                         [--out bench/results/alignment-<part>-<machine>.json]
    python bench/alignment.py runs --run outputs/quickstart --others outputs/other-run ...

`reward`: the reward stage of a finished pipeline run (its recipes/reward.yaml, the labelers' preference pairs, the
SFT adapter) is trained again once per variant and seed, each variant a few recipe keys on top of the run's recipe
(VARIANTS below). Every reward model then scores one fixed agreement set: `--prompts` held-out prompts (bundled
prompts, split test: never labeled, never trained on) with 4 answers each sampled from the run's SFT policy at T=1,
the answers PPO starts from. Agreement: of the answer pairs to one prompt whose gold-rubric scores differ by at least
0.25, the share the reward model orders as the rubric does (the eval stage's `reward_model_vs_gold`). The rubric is
only the measuring stick here; the reward models learn from the labelers' rankings alone.

The JSON gives every (variant, seed) row (agreement, the stage's held-out pairwise accuracy and mean margin on labeler
pairs, its training loss, train seconds) and, per variant, the paired difference to `baseline` over the same pairs and
seeds with a bootstrap 95% interval over prompts.

`ppo`: PPO is trained again once per variant (PPO_VARIANTS) and seed from the run's SFT policy and reward model; per
seed, one eval answers `--prompts` (default 120) held-out prompts greedily with SFT and that seed's variants. Rows:
the gold win rate against SFT with its interval, the mean gold difference, the reward model's win rate, KL per
answer and per token; per variant, the paired gold difference to `baseline` over prompts, pooled over seeds.

`runs`: whole pipeline runs side by side (say, 32, 64 and 128 labeled prompts from the same SFT policy): each run's
reward model on the same agreement set, its held-out accuracy, its eval's gold win rates against SFT, stage times.

Reward rows also split the agreement by the rubric part that makes most of each pair's gold gap (`agreement_by_part`):
which of the labelers' reasons the reward model has picked up. Finished runs in `--work` are reused. Prints one JSON
object; `--out` also writes it.
"""

from __future__ import annotations

import argparse
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

from workbench.pipeline.pipeline_recipe import CRITIC_FREE  # noqa: E402  the pipeline's own critic-free keys

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
# PPO variants: keys on top of the run's ppo recipe (the run's SFT and reward adapters stay)
PPO_CRITIC = {
    "advantage_estimator": "gae",
    "critic_warmup_steps": 2,
    "value_learning_rate": ("learning_rate", 4),
    "value_max_grad_norm": 1.0,
}
PPO_VARIANTS = {
    "baseline": {},
    # running score normalisation and clipping, 2 value-only steps, the value at 4x the policy's learning rate with
    # its own gradient clipping
    "levers": {
        "use_score_scaling": True,
        "use_score_norm": True,
        "score_clip": 3.0,
        "critic_warmup_steps": 2,
        "value_learning_rate": ("learning_rate", 4),
        "value_max_grad_norm": 1.0,
    },
    "score_norm": {"use_score_scaling": True, "use_score_norm": True, "score_clip": 3.0},
    "critic_warmup": {
        "critic_warmup_steps": 2,
        "value_learning_rate": ("learning_rate", 4),
        "value_max_grad_norm": 1.0,
    },
    # no extra penalty for an unfinished answer: the reward model alone says how much finishing is worth (with the
    # penalty, PPO's answers fell to ~13 words where the labelers' rubric wants 15 or more). Measured on two pipeline
    # runs: +0.11 and -0.16 mean gold score, pooled -0.02 [-0.09, +0.04] (bench/results/alignment-ppo-eos-*.json)
    "eos_off": {"missing_eos_penalty": None},
    # critic-free estimators (workbench/rl/advantages.py): the same 8 sequences per step as PPO's batch of 8, as
    # k responses to each of 8 / k prompts; no value adapter, so no value passes and no critic levers
    "rloo_k2": {**CRITIC_FREE, "advantage_estimator": "rloo", "rollouts_per_prompt": 2, "batch_size": 4},
    "rloo_k4": {**CRITIC_FREE, "advantage_estimator": "rloo", "rollouts_per_prompt": 4, "batch_size": 2},
    "grpo_k4": {**CRITIC_FREE, "advantage_estimator": "grpo", "rollouts_per_prompt": 4, "batch_size": 2},
    "reinforce++": {**CRITIC_FREE, "advantage_estimator": "reinforce++"},
    # 4x the KL coefficient: at pipeline seed 10 REINFORCE++ (kl_coef 0.05, 0.36 nats per token) traded staying on
    # topic, which its reward model cannot see, for finishing (gold win 0.488); does a tighter leash keep it? On the
    # quickstart's REINFORCE++ at pipeline seeds 8, 9, 10 (--stage reinforce++): gold win 0.412 / 0.629 / 0.571
    # against 0.617 / 0.667 / 0.488, pooled gold difference -0.14 [-0.20, -0.08]; not adopted
    # (bench/results/alignment-kl-cpu-2core.json)
    "kl_x4": {"kl_coef": ("kl_coef", 4)},
    # twice the prompts a rollout: the score normalisation and advantage whitening see twice the samples, and on a
    # CPU sampling 16 answers costs little more than 8 (a decoding step is ~0.06 s plus ~4 ms an answer). Does one
    # PPO run become less of a draw? 20 steps of 16 (320 rollouts) against the quickstart's 32 of 8 (256): at
    # pipeline seed 28, PPO seeds 0 and 1, gold win 0.717 / 0.733 against 0.500 / 0.796, at 1.2x the stage's time
    "batch16": {"batch_size": 16, "total_steps": 20},
    # 16 steps of 16: the same 256 rollouts (with the 2 value-only warm-up steps, 112 policy optimizer steps of 4
    # against 120). At pipeline seeds 28 and 29, PPO seeds 0 and 1: 0.688 / 0.804 / 0.767 / 0.692 against 0.500 /
    # 0.796 / 0.762 / 0.742, paired gold +0.04 [-0.01, +0.09], 0.6x the KL per token, 6-18% less time; the
    # quickstart's since (bench/results/alignment-ppo-batch-cpu-2core.json)
    "batch16_steps16": {"batch_size": 16, "total_steps": 16},
    # the learning rate decayed linearly to 0 over the run's optimizer steps (TRL's PPO default) instead of constant:
    # the late steps, where a draw's KL to SFT can jump (pipeline seed 33: 3 -> 9 nats over the last 4 of 16 steps,
    # gold win 0.529), move the policy less. At pipeline seeds 33 (PPO seeds 33 and 0), 28 and 32: gold win 0.654 /
    # 0.588 / 0.683 / 0.671 against 0.529 / 0.675 / 0.662 / 0.775, at about half the KL; the spread narrows but
    # the pooled paired gold is -0.06 [-0.12, -0.01]; not adopted
    # (bench/results/alignment-ppo-lr-schedule-cpu-2core.json)
    "lr_linear": {"lr_scheduler_type": "linear"},
    # PPO on a quickstart run (--stage reinforce++): the ppo recipe's critic and its levers, the value adapter as the
    # critic or a head on the reference pass's hidden states (value_model ref_features: no value passes)
    "ppo": PPO_CRITIC,
    "ppo_ref_features": {**PPO_CRITIC, "value_model": "ref_features"},
}
MIN_GOLD_GAP = 0.25


def run(command: list[str], log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"bench/alignment.py: {' '.join(command)} failed ({done.returncode}):\n" + "\n".join(tail))
    return time.perf_counter() - started


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


def write_recipe(run_dir: Path, stage: str, overrides: dict, path: Path) -> Path:
    """The run's recipe for `stage` with `overrides` (a (key, factor) value: factor x the run's `key`), no W&B."""
    recipe = yaml.safe_load((run_dir / "recipes" / f"{stage}.yaml").read_text())
    for key, value in overrides.items():
        recipe[key] = type(recipe[value[0]])(recipe[value[0]] * value[1]) if isinstance(value, tuple) else value
    recipe["wandb_mode"] = "disabled"
    recipe.pop("wandb_group", None)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def ppo_part(run_dir: Path, work: Path, names: list[str], seeds: list[int], prompts: int, stage: str = "ppo") -> dict:
    """Each PPO variant and seed from the run's SFT policy and reward model, then per seed one eval of that seed's
    variants and the SFT policy on the same held-out prompts (greedy, the run's eval recipe without best-of-N).
    `stage`: the run's RL recipe the variants change (recipes/<stage>.yaml: ppo, or reinforce++ in the quickstart)."""
    from methods import eval_numbers

    sft = {"name": "sft", "adapter": str(run_dir / "sft" / "adapter")}
    rows, sft_gold = [], None
    for seed in seeds:
        policies = [sft]
        for name in names:
            folder = work / f"ppo-{name}-seed{seed}"
            overrides = {**PPO_VARIANTS[name], "seed": seed, "output_dir": str(folder)}
            config = write_recipe(run_dir, stage, overrides, work / f"ppo-{name}-seed{seed}.yaml")
            if not (folder / "metrics.json").exists():
                print(f"bench/alignment.py: PPO {name} seed {seed}", file=sys.stderr)
                command = ["workbench", "ppo", "--config", str(config), "--overwrite"]
                seconds = run(command, work / f"ppo-{name}-seed{seed}.log")
                (folder / "bench-seconds.json").write_text(json.dumps({"seconds": seconds}))
            policies.append({"name": f"{name}-seed{seed}", "adapter": str(folder / "adapter")})
        folder = work / f"eval-seed{seed}-{'-'.join(names)}"
        overrides = dict(policies=policies, best_of=0, max_prompts=prompts, output_dir=str(folder))
        config = write_recipe(run_dir, "eval", overrides, work / f"{folder.name}.yaml")
        if not (folder / "metrics.json").exists():
            print(
                f"bench/alignment.py: eval of seed {seed}: {len(policies)} policies, {prompts} prompts",
                file=sys.stderr,
            )
            run(["workbench", "eval", "--config", str(config), "--overwrite"], work / f"{folder.name}.log")
        metrics = json.loads((folder / "metrics.json").read_text())
        sft_gold = metrics["policies"]["sft"].get("gold_mean")
        gold_by_prompt = {}
        for sample in map(json.loads, (folder / "samples.jsonl").read_text().splitlines()):
            gold_by_prompt.setdefault(sample["policy"], {})[sample["prompt_id"]] = sample["gold"]
        for name in names:
            trained = work / f"ppo-{name}-seed{seed}"
            policy = f"{name}-seed{seed}"
            rows.append(
                {
                    "variant": name,
                    "seed": seed,
                    "overrides": PPO_VARIANTS[name],
                    **eval_numbers(metrics, policy),
                    "train": json.loads((trained / "metrics.json").read_text())["summary"],
                    "train_seconds": json.loads((trained / "bench-seconds.json").read_text())["seconds"],
                    "gold_by_prompt": sorted(gold_by_prompt[policy].items()),
                }
            )
    settings = metrics["settings"]
    return {
        "eval": {"prompts": settings["prompts"], "decoding": settings["decoding"]},
        "sft_gold_mean": sft_gold,
        "rows": rows,
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
        result |= {"variants": {n: PPO_VARIANTS[n] for n in names}, "seeds": args.seeds, "stage": args.stage}
        result |= ppo_part(run_dir, work, names, args.seeds, args.prompts or 120, args.stage)
        more = dict(gold_win_rate_ci95="gold_win_rate_ci95", kl_per_answer="kl_per_answer")
        result["summary"] = per_variant(result["rows"], names, "gold_win_rate", **more)
        for name in names[1:]:
            result["summary"][name]["gold_difference_to_baseline"] = paired_difference(
                result["rows"], name, "gold_by_prompt"
            )
        result["rows"] = [{k: v for k, v in r.items() if k != "gold_by_prompt"} for r in result["rows"]]
    elif args.part == "runs":
        prompts = args.prompts or 48
        candidates = agreement_set(run_dir, work, prompts)
        result["rows"] = runs_part([run_dir, *map(Path, args.others)], work, candidates)
        result["agreement_set"] = {"prompts": prompts, "answers_per_prompt": 4, "min_gold_gap": MIN_GOLD_GAP}
    else:
        prompts = args.prompts or 48
        candidates = agreement_set(run_dir, work, prompts)
        gold = gold_scores(candidates)
        rows = [train_and_score(run_dir, work, n, s, candidates, gold) for s in args.seeds for n in names]
        summary = per_variant(rows, names, "agreement", held_out_accuracy="held_out_accuracy")
        for name in names[1:]:
            summary[name]["difference_to_baseline"] = paired_difference(rows, name, "outcomes")
        if len(args.seeds) > 1:
            for name in names:
                summary[name]["ensemble"] = ensemble(work, name, args.seeds, rows, gold, candidates)
        result |= {
            "variants": {n: VARIANTS[n] for n in names},
            "seeds": args.seeds,
            "agreement_set": {
                "prompts": prompts,
                "answers_per_prompt": 4,
                "pairs": rows[0]["agreement_pairs"],
                "min_gold_gap": MIN_GOLD_GAP,
            },
            "summary": summary,
            "rows": [{k: v for k, v in r.items() if k != "outcomes"} for r in rows],
        }
    result["machine"] = machine()
    result["versions"] = {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
