"""`workbench eval --config recipes/<model>/eval.yaml`: compare policies (e.g. base, SFT, PPO) on held-out prompts.

All policies sit on ONE base as named adapters (the bare base is a policy too), with the reward adapter and its head
beside them (workbench/evaluation/policies.py). Each answers every prompt once (greedy, or seeded sampling) through
workbench/modeling/generation.py. Per policy: mean reward by the reward model, mean gold-rubric score
(labeling/rubric.py, which the reward model never saw directly), KL to the reference policy (summed per-token
log-ratio over each answer's tokens), answer length; and each policy's win rate against a baseline policy, by the
reward model and by the rubric (ties count half).

Output folder: `metrics.json`, `samples.jsonl` (one row per prompt and policy), `report.md`, PNG plots
(`reward_distribution.png`, `gold_distribution.png`, `win_rates.png`), `recipe.yaml`, `wandb/` (offline runs).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError

STAGE = "eval"
FINISHED = ["metrics.json"]


@dataclass
class EvalConfig:
    """Which policies to compare, on which prompts, judged by what."""

    policies: list[dict] = field(
        default_factory=list,
        metadata={"help": "Policies: a list of {name, adapter}; adapter null (or omitted) is the bare base model."},
    )
    reward_adapter: str | None = field(
        default=None, metadata={"help": "Reward adapter (`workbench reward` output_dir/adapter); names the base."}
    )
    agreement_reward_adapters: list[dict] | None = field(
        default=None,
        metadata={
            "help": "More reward models, a list of {name, adapter}, whose agreement with the gold rubric is measured "
            "on the same answers (`reward_models_vs_gold`; the pipeline's earlier rounds'); they judge nothing else."
        },
    )
    reference: str | None = field(
        default=None, metadata={"help": "Policy the KL is measured against; default the first whose stage is sft."}
    )
    baseline: str | None = field(default=None, metadata={"help": "Policy win rates are against; default reference."})
    gold_rubric: bool = field(default=True, metadata={"help": "Also judge by the gold rubric (labeling/rubric.py)."})
    best_of: int = field(
        default=0,
        metadata={
            "help": "N > 1 adds a reference row `best_of_N`: N sampled answers of the reference policy, the reward "
            "model picks one. It tells a weak reward model (best-of-N does not beat the reference by gold) from a "
            "policy that does not optimise it (best-of-N does, the aligned policy does not)."
        },
    )
    best_of_temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of best-of-N's candidates (top_k/top_p off)."}
    )
    prompts: str = field(
        default="bundled:prompts", metadata={"help": "Prompts: bundled:prompts, a file or a save_to_disk folder."}
    )
    prompts_where: dict | None = field(
        default_factory=lambda: {"split": "test"}, metadata={"help": "Keep prompt rows whose columns equal these."}
    )
    max_prompts: int | None = field(default=None, metadata={"help": "Use at most this many prompts (the first)."})
    seed: int = field(default=0, metadata={"help": "Sampling seed: every policy samples under the same seeds."})
    batch_size: int = field(default=8, metadata={"help": "Sequences per generate/forward call."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where the report and metrics are written."})
    run_name: str | None = field(default=None, metadata={"help": "W&B run name; default eval-<output_dir name>."})

    def check(self) -> list[dict]:
        """The policies as {name, adapter, stage}, checked; fills in reference and baseline."""
        from workbench.evaluation.policies import REWARD
        from workbench.modeling import adapters

        if not self.reward_adapter:
            raise UserError("reward_adapter is required: the reward model judges the answers")
        adapters.read_manifest(self.reward_adapter, "SEQ_CLS", "reward_adapter")
        if not isinstance(self.policies, list) or not self.policies:
            raise UserError("policies must be a non-empty list of {name, adapter}")
        policies, names = [], set()
        for index, item in enumerate(self.policies):
            if not isinstance(item, dict) or not item.get("name") or set(item) - {"name", "adapter"}:
                raise UserError(f"policies[{index}] must be {{name, adapter}}; got {item!r}")
            name, adapter = str(item["name"]), item.get("adapter")
            if name in names or name == REWARD:
                raise UserError(f"policies[{index}]: name {name!r} is taken (names are unique; `reward` is reserved)")
            names.add(name)
            where = f"policies[{index}] ({name}):"
            manifest = None if adapter is None else adapters.read_manifest(adapter, "CAUSAL_LM", where)
            stage = "base" if manifest is None else manifest.stage
            path = None if adapter is None else str(adapter)
            # runs_as: the adapter name the policy answers under (best-of-N answers with its reference's adapter)
            policies.append({"name": name, "adapter": path, "stage": stage, "runs_as": name})
        if self.reference is None:
            self.reference = next((p["name"] for p in policies if p["stage"] == "sft"), policies[0]["name"])
        self.baseline = self.baseline or self.reference
        for key in ("reference", "baseline"):
            if getattr(self, key) not in names:
                raise UserError(f"{key} {getattr(self, key)!r} is not one of the policies {sorted(names)}")
        judge_names = {Path(self.reward_adapter).parent.name}  # the main reward model's name in the results
        for index, item in enumerate(self.agreement_reward_adapters or []):
            if not isinstance(item, dict) or set(item) != {"name", "adapter"} or not item["name"]:
                raise UserError(f"agreement_reward_adapters[{index}] must be {{name, adapter}}; got {item!r}")
            if item["name"] in judge_names:
                raise UserError(
                    f"agreement_reward_adapters[{index}]: name {item['name']!r} is taken (the reward_adapter's run "
                    "folder or an earlier entry); names are unique"
                )
            judge_names.add(item["name"])
            adapters.read_manifest(item["adapter"], "SEQ_CLS", f"agreement_reward_adapters[{index}]")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be a positive integer; got {self.batch_size}")
        if self.best_of < 0 or self.best_of == 1 or self.best_of_temperature <= 0:
            raise UserError(
                f"best_of must be 0 (off) or at least 2, best_of_temperature > 0; got {self.best_of}, "
                f"{self.best_of_temperature}"
            )
        if self.best_of:
            name = f"best_of_{self.best_of}"
            if name in names:
                raise UserError(f"policies: the name {name!r} is taken by the best-of-N row (best_of: {self.best_of})")
            reference = next(p for p in policies if p["name"] == self.reference)
            policies.append({**reference, "name": name, "stage": "best_of_n"})
        return policies


def parse(argv: list[str]):
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.generation import Sampling
    from workbench.output_dir import OverwriteArguments
    from workbench.recipe import RecipeParser
    from workbench.tracking import TrackingConfig

    parser = RecipeParser(
        [EvalConfig, Sampling, ModelArguments, OverwriteArguments, TrackingConfig],
        "workbench eval",
        dict(max_new_tokens=64, temperature=0.0),
        model_groups=("device",),
        unread_why="eval loads the base named in the reward adapter's manifest, in the reward stage's precision",
    )
    return (*parser.parse(argv), parser.given)


def main(argv: list[str]) -> int:
    cfg, sampling, model_args, run_args, tracking_cfg, given = parse(argv)
    configs = (cfg, sampling, model_args, tracking_cfg)
    policies = cfg.check()
    sampling.check()
    output_dir = Path(cfg.output_dir)

    from labeling import rubric
    from workbench import tracking
    from workbench.data.prompts import load_prompts
    from workbench.evaluation import eval_report as report
    from workbench.evaluation import metrics as measures
    from workbench.evaluation import policies as scoring
    from workbench.fileio import write_json_atomic, write_jsonl_atomic
    from workbench.modeling import adapters
    from workbench.modeling.generation import Sampling, generate_completions
    from workbench.modeling.loading import Quantization
    from workbench.output_dir import prepare_output_dir
    from workbench.recipe import resolved_recipe, write_resolved_recipe

    prepare_output_dir(output_dir, run_args, STAGE, FINISHED)
    write_resolved_recipe(output_dir / "recipe.yaml", STAGE, given, *configs)

    # ── prompts and the one base carrying every policy ─────────────────────────────────────────────────────────
    rows = load_prompts(cfg.prompts, "prompts", where=cfg.prompts_where, limit=cfg.max_prompts)
    prompts = [row["prompt"] for row in rows]
    judges_only = cfg.agreement_reward_adapters or []
    model, tokenizer = scoring.load(cfg.reward_adapter, policies, model_args, [j["adapter"] for j in judges_only])
    base = model.workbench_base
    names = [p["name"] for p in policies]
    print(f"workbench eval: {len(rows)} prompts; policies {names} on one base ({base.name_or_path})")
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, cfg.run_name, resolved_recipe(given, *configs))

    # ── answers: every policy under the same seeds ───────────────────────────────────────────────────────────────
    answers, known_rewards = {}, {}
    for policy in policies:
        with scoring.active(model, policy["runs_as"], policy["adapter"]):
            if policy["stage"] == "best_of_n":
                candidates = Sampling(sampling.max_new_tokens, cfg.best_of_temperature)
                texts = generate_completions(
                    model, tokenizer, prompts, cfg.best_of, candidates, cfg.batch_size, cfg.seed, progress=False
                )
                picked = scoring.best_by_reward(model, tokenizer, prompts, texts, cfg.batch_size)
                answers[policy["name"]], known_rewards[policy["name"]] = picked
            else:
                texts = generate_completions(
                    model, tokenizer, prompts, 1, sampling, cfg.batch_size, cfg.seed, progress=False
                )
                answers[policy["name"]] = [t[0] for t in texts]
        print(f"workbench eval: {policy['name']} answered")

    # ── judge: reward model, gold rubric, log-ratio to the reference ─────────────────────────────────────────────
    # greedy answers are scored under the policy's own distribution (temperature 1)
    temperature = sampling.temperature if sampling.temperature > 0 else 1.0
    samples = scoring.judge(
        model,
        tokenizer,
        rows,
        answers,
        policies,
        cfg.reference,
        gold=cfg.gold_rubric,
        batch_size=cfg.batch_size,
        temperature=temperature,
        known_rewards=known_rewards,
    )

    # ── metrics ──────────────────────────────────────────────────────────────────────────────────────────────────
    judges = ["reward_model", "gold_rubric"] if cfg.gold_rubric else ["reward_model"]
    per_policy, win_rates = measures.compare(samples, names, cfg.baseline, judges)
    settings = {
        "prompts": len(rows),
        "prompt_source": f"{cfg.prompts} where {cfg.prompts_where}",
        "reference": cfg.reference,
        "baseline": cfg.baseline,
        "reward_adapter": str(Path(cfg.reward_adapter).resolve()),
        "base_model": base.name_or_path,
        "base_content_hash": base.content_hash,
        "quantization": Quantization(**base.quantization).describe(),
        "max_new_tokens": sampling.max_new_tokens,
        "decoding": "greedy" if sampling.temperature == 0 else f"sampled at T={sampling.temperature}, seed {cfg.seed}",
        "logprob_temperature": temperature,
        "gold": rubric.RUBRIC_VERSION if cfg.gold_rubric else None,
    }
    if cfg.best_of:
        # its answers are scored under the reference's log-probs (KL 0 in the table); the true KL of best-of-N to
        # its sampler is at most log N - (N - 1) / N (Beirami et al. 2024)
        n = cfg.best_of
        settings["best_of"] = {"n": n, "temperature": cfg.best_of_temperature, "kl_bound": math.log(n) - (n - 1) / n}
    metrics = {
        "settings": settings,
        "policies": {p["name"]: {**p, **per_policy[p["name"]]} for p in policies},
        "win_rates": win_rates,
    }
    if cfg.gold_rubric:
        metrics["reward_model_vs_gold"] = measures.judge_agreement(samples)
        metrics["reward_model_vs_gold"]["by_part"] = measures.agreement_by_part(samples)
        reward_manifest = adapters.read_manifest(cfg.reward_adapter, "SEQ_CLS", "reward_adapter")
        length_weight = reward_manifest.extra.get("length_term")
        if length_weight is not None:  # trained with a length term: the whole model, head + w * tokens / 10
            with_term = measures.with_length_term(samples, length_weight)
            metrics["reward_model_with_length_term_vs_gold"] = measures.judge_agreement(with_term)
            metrics["reward_model_with_length_term_vs_gold"]["by_part"] = measures.agreement_by_part(with_term)
            metrics["reward_model_with_length_term_vs_gold"]["length_weight"] = length_weight
        if judges_only:  # each reward model on the same answers: the main one's numbers, then the others'
            per_model = {Path(cfg.reward_adapter).parent.name: metrics["reward_model_vs_gold"]}
            prompts_of, answers_of = [s["prompt"] for s in samples], [s["response"] for s in samples]
            for index, other in enumerate(judges_only):
                judge = scoring.judge_name(index)
                scores = scoring.reward_scores(model, tokenizer, prompts_of, answers_of, cfg.batch_size, judge)
                rescored = [{**s, "reward": score} for s, score in zip(samples, scores)]
                per_model[other["name"]] = measures.judge_agreement(rescored)
                per_model[other["name"]]["by_part"] = measures.agreement_by_part(rescored)
            metrics["reward_models_vs_gold"] = per_model

    # ── outputs: samples, metrics, plots, report, W&B ────────────────────────────────────────────────────────────
    write_jsonl_atomic(output_dir / "samples.jsonl", samples)
    plots = report.write_plots(output_dir, samples, names, win_rates, cfg.baseline)
    report.write_report(output_dir / "report.md", metrics, samples, {k: p.name for k, p in plots.items()})
    metrics["wandb_run"] = tracking.run_reference(run)
    write_json_atomic(output_dir / "metrics.json", metrics)  # last: the stage is finished once it exists
    if run is not None:
        import wandb

        columns = ["prompt_id", "prompt", "policy", "response", "reward", "gold", "kl", "tokens"]
        table = wandb.Table(columns=columns)
        for s in samples:
            table.add_data(*[s["prompt"][-1]["content"] if c == "prompt" else s[c] for c in columns])
        flat = {f"eval/{n}/{k}": v for n, row in metrics["policies"].items() for k, v in row.items() if "_" in k}
        flat |= {f"eval/win_rate/{n}/{j}": r["rate"] for n, rates in win_rates.items() for j, r in rates.items()}
        run.log({**flat, "samples": table, **{f"plots/{k}": wandb.Image(str(p)) for k, p in plots.items()}})
        run.summary.update(flat)
    tracking.finish(run)
    print(f"workbench eval: report in {output_dir / 'report.md'}")
    print(json.dumps({"policies": metrics["policies"], "win_rates": win_rates}, indent=2))
    return 0
