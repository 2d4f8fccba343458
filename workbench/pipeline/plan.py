"""What each pipeline stage runs, on what, and which files say it is complete.

A stage is complete when every file in `outputs` exists (each stage writes its manifest or metrics last, atomically)
and the configuration it last completed with is the one it would run with now. Paths are relative to the current
directory, like every recipe's.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from labeling.selection import SCORED, STRATEGIES
from workbench.errors import UserError
from workbench.pipeline.pipeline_recipe import (
    LABELERS,
    METHODS,
    RECIPE_STAGES,
    RL_METHODS,
    recipe_of,
    round_stage,
    split_round,
    stages_of,
)

# Keys the pipeline wires between stages; an override of one would cut a stage off from its inputs or outputs.
WIRED = {
    "sft": {"output_dir"},
    "generate": {"output_dir", "adapter", "skip_prompts"},
    "reward": {"output_dir"},
    **{name: {"output_dir", "sft_adapter", "reward_adapter", "policy_adapter"} for name in (*RL_METHODS, "raft")},
    "dpo": {"output_dir", "sft_adapter", "datasets"},
    "eval": {"output_dir", "reward_adapter", "policies", "agreement_reward_adapters"},
}


def annotator_seed(seed: int, index: int) -> int:
    """Simulated annotator `index` (1-based)'s noise seed in a run with `seed`: distinct per annotator and seed."""
    return seed * 1000 + index


@dataclass
class Stage:
    name: str
    folder: Path  # where its outputs go (removed when the stage is forced)
    outputs: list[Path]
    config: dict  # what it runs with; a change since it completed makes it run again
    recipe: dict | None = None  # subprocess stages with a recipe: written to <run_dir>/recipes/<name>.yaml
    commands: list[list[str]] = field(default_factory=list)  # `workbench ...` argv lists, run in order
    resume_args: list[str] = field(default_factory=list)  # added when the stage runs again after a failure

    def complete(self, recorded_sha: str | None) -> bool:
        return all(path.exists() for path in self.outputs) and recorded_sha in (None, self.sha())

    def sha(self) -> str:
        text = json.dumps(self.config, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def user_name(text: str) -> str:
    """An Argilla-safe name (lowercase letters, digits, - and _) from a folder name."""
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-_") or "run"


class Planner:
    """Builds each stage from the pipeline recipe, the run folder and what earlier stages wrote."""

    def __init__(self, cfg, tracking_cfg, tracking_given: set[str], state: dict, recipe_path: Path | None):
        self.cfg, self.tracking, self.state = cfg, tracking_cfg, state
        self.tracking_given, self.recipe_path = tracking_given, recipe_path
        self.run = Path(cfg.run_dir)
        overrides = cfg.overrides or {}
        if not isinstance(overrides, dict):
            raise UserError(f"{self.where}: overrides must be a mapping of stage: {{key: value}}")
        for stage, keys in overrides.items():
            if stage not in RECIPE_STAGES:
                raise UserError(
                    f"{self.where}: overrides.{stage}: no such stage; stages with recipes: {RECIPE_STAGES}"
                )
            if not isinstance(keys, dict):
                raise UserError(f"{self.where}: overrides.{stage} must be a mapping of recipe keys; got {keys!r}")
            wired = sorted(WIRED[stage] & set(keys))
            if wired:
                raise UserError(
                    f"{self.where}: overrides.{stage}.{wired[0]}: the pipeline sets this to connect the stages "
                    f"(everything lives under run_dir: {self.run})"
                )
        methods = list(cfg.methods or [])
        unknown = [name for name in methods if name not in METHODS]
        if not methods or unknown or len(set(methods)) < len(methods):
            found = f"unknown {unknown[0]!r}" if unknown else "an empty list" if not methods else "a repeated one"
            raise UserError(f"{self.where}: methods: expected some of {', '.join(METHODS)}, each once; found {found}")
        if cfg.rounds < 1:
            raise UserError(f"{self.where}: rounds must be at least 1; got {cfg.rounds}")
        if cfg.rounds > 1 and "dpo" in methods:
            raise UserError(
                f"{self.where}: methods: dpo cannot continue across rounds (TRL's DPO reference is the adapter it "
                "starts from, so a later round's KL would not be to SFT); use ppo, rloo, grpo or reinforce++"
            )
        if cfg.rounds > 1 and cfg.num_prompts is None:
            raise UserError(f"{self.where}: rounds {cfg.rounds} needs num_prompts (each round takes the next ones)")
        self.stages = stages_of(methods, cfg.rounds)
        if cfg.labelers not in LABELERS:
            raise UserError(f"{self.where}: labelers must be one of {LABELERS}; got {cfg.labelers!r}")
        if cfg.annotators < 1:
            raise UserError(f"{self.where}: annotators must be at least 1; got {cfg.annotators}")
        if not 0.0 <= cfg.min_agreement <= 1.0:
            raise UserError(f"{self.where}: min_agreement must be between 0 and 1; got {cfg.min_agreement}")
        if cfg.selection not in STRATEGIES:
            raise UserError(f"{self.where}: selection must be one of {', '.join(STRATEGIES)}; got {cfg.selection!r}")
        if cfg.selection != "random" and cfg.label_prompts is None:
            raise UserError(
                f"{self.where}: selection {cfg.selection} chooses label_prompts of the num_prompts candidates; "
                "set label_prompts"
            )
        if cfg.selection in SCORED and not cfg.selection_reward_adapter and cfg.rounds == 1:
            raise UserError(
                f"{self.where}: selection {cfg.selection} needs selection_reward_adapter (a reward adapter folder "
                "that scores the candidates before they are pushed) or rounds > 1 (each later round's reward model)"
            )
        if cfg.selection_reward_adapter:
            from workbench.modeling.adapters import read_manifest

            read_manifest(cfg.selection_reward_adapter, "SEQ_CLS", f"{self.where}: selection_reward_adapter")
        if cfg.label_prompts is not None and cfg.num_prompts is not None and cfg.label_prompts > cfg.num_prompts:
            raise UserError(
                f"{self.where}: label_prompts {cfg.label_prompts} is more than the num_prompts {cfg.num_prompts} "
                "whose candidates it chooses from"
            )
        if cfg.reward_warm_start and "init_adapter" in (overrides.get("reward") or {}):
            raise UserError(
                f"{self.where}: overrides.reward.init_adapter: reward_warm_start sets it in every round after the "
                "first (the last round's reward model); use one or the other"
            )
        if cfg.rounds > 1 and "max_prompts" in (overrides.get("generate") or {}):
            raise UserError(
                f"{self.where}: overrides.generate.max_prompts: with rounds, num_prompts sets each round's prompts "
                "(round r takes the r-th num_prompts of them)"
            )

    @property
    def where(self) -> str:
        return str(self.recipe_path) if self.recipe_path else "the pipeline recipe"

    def path(self, *parts: str) -> Path:
        return self.run.joinpath(*parts)

    # ── recipes ──────────────────────────────────────────────────────────────────────────────────────────────────
    def recipe(self, name: str, owned: dict) -> dict:
        """Base recipe (`<name>_recipe`), then the pipeline's keys, then `overrides.<name>`. A critic-free RL method
        (rloo, grpo, reinforce++) builds on the ppo recipe and `overrides.ppo`, then its own keys (RL_METHODS)."""
        from workbench.recipe import load_recipe

        base_name, _ = split_round(name)  # a later round's stage takes its round-1 stage's recipe and overrides
        base_path = getattr(self.cfg, f"{recipe_of(name)}_recipe")
        recipe = {}
        if base_path:
            if not Path(base_path).is_file():
                raise UserError(f"{self.where}: {name}_recipe {base_path} does not exist")
            recipe = load_recipe(Path(base_path))
        tracking = {key: getattr(self.tracking, key) for key in self.tracking_given if key != "wandb_job_type"}
        recipe.update({**tracking, "wandb_group": self.state["wandb_group"], "wandb_job_type": name})
        recipe["seed"] = self.cfg.seed  # one seed reaches every stage (overrides.<stage>.seed still wins)
        recipe.update({key: value for key, value in owned.items() if value is not None})
        overrides = self.cfg.overrides or {}
        if RL_METHODS.get(base_name):  # a critic-free method: ppo's overrides, its keys, the rollout's sequences
            recipe.update(overrides.get("ppo") or {})
            k = RL_METHODS[base_name].get("rollouts_per_prompt", 1)
            recipe.update(RL_METHODS[base_name], batch_size=max(1, recipe.get("batch_size", 8) // k))
        recipe.update(overrides.get(base_name) or {})
        return recipe

    def header(self, name: str) -> str:
        command = recipe_of(name)
        base = getattr(self.cfg, f"{command}_recipe", None)
        sources = [f"{base} (base recipe)"] if base else [f"workbench {command} defaults"]
        base_name, _ = split_round(name)
        method_keys = RL_METHODS.get(base_name)
        keys = f" + the {base_name} method's keys (workbench/pipeline/pipeline_recipe.py)" if method_keys else ""
        sources.append(f"the pipeline keys{keys} and overrides.{base_name} of {self.where}")
        return (
            f"# workbench {command} --config {self.path('recipes', f'{name}.yaml')}\n"
            f"# Written by `workbench pipeline` from {' + '.join(sources)}; edit those, not this file.\n"
        )

    def _argilla_args(self) -> list[str]:
        return ["--home", self.cfg.argilla_home] if self.cfg.argilla_home else []

    def _dataset(self) -> tuple[str, str]:
        if self.cfg.argilla_dataset:
            return self.cfg.argilla_dataset, self.cfg.argilla_workspace
        candidates = self.path("generate", "candidates.jsonl")
        digest = hashlib.sha256(candidates.read_bytes()).hexdigest()[:8] if candidates.exists() else "pending"
        return f"{user_name(self.run.name)}-{digest}", self.cfg.argilla_workspace

    def annotator_seed(self, index: int) -> int:
        return annotator_seed(self.cfg.seed, index)

    def rankings_per_record(self) -> int:
        if self.cfg.rankings_per_record is not None:
            return self.cfg.rankings_per_record
        return self.cfg.annotators if self.cfg.labelers == "simulated" else 1

    # ── stages ───────────────────────────────────────────────────────────────────────────────────────────────────
    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise UserError(f"no pipeline stage {name!r} in this run; stages: {', '.join(self.stages)}")
        base, round_ = split_round(name)
        if base in (*RL_METHODS, "raft"):
            return self._rl(base, round_)
        if base in ("sft", "eval", "report"):
            return getattr(self, f"_{base}")()
        return getattr(self, f"_{base}")(round_)

    def policy_of(self, round_: int) -> Path:
        """The policy a round's candidates come from: SFT in round 1, then the last round's first method's."""
        return self.path("sft" if round_ == 1 else round_stage(self.methods_chosen()[0], round_ - 1), "adapter")

    def methods_chosen(self) -> list[str]:
        return [name for name in METHODS if name in self.stages]

    def reward_of(self, round_: int) -> Path:
        return self.path(round_stage("reward", round_), "adapter")

    def _with_recipe(
        self, name: str, owned: dict, outputs: list[str], resume: list[str], pinned: dict | None = None
    ) -> Stage:
        """A stage that runs `workbench <command> --config` with its recipe: `owned` keys under the overrides, the
        `pinned` ones over them."""
        folder = self.path(name)
        recipe = self.recipe(name, {**owned, "output_dir": str(folder)}) | (pinned or {})
        command = recipe_of(name)
        return Stage(
            name,
            folder,
            [folder / item for item in outputs],
            config=recipe,
            recipe=recipe,
            commands=[[command, "--config", str(self.path("recipes", f"{name}.yaml"))]],
            resume_args=resume,
        )

    def _sft(self) -> Stage:
        owned = {
            "model_name_or_path": self.cfg.model_name_or_path,
            "load_in_4bit": self.cfg.load_in_4bit,
            "max_steps": self.cfg.sft_max_steps,
        }
        return self._with_recipe("sft", owned, ["adapter/workbench.json", "metrics.json"], ["--resume"])

    def _generate(self, round_: int = 1) -> Stage:
        """K candidates for num_prompts training prompts; round r takes the r-th num_prompts of them, from the
        last round's policy."""
        owned = {
            "adapter": str(self.policy_of(round_)),
            "load_in_4bit": self.cfg.load_in_4bit,
            "max_prompts": self.cfg.num_prompts,
            "num_completions": self.cfg.num_candidates,
        }
        if round_ > 1:
            owned["skip_prompts"] = (round_ - 1) * self.cfg.num_prompts
        name = round_stage("generate", round_)
        return self._with_recipe(name, owned, ["candidates.jsonl", "manifest.json"], ["--overwrite"])

    def _push(self, round_: int = 1) -> Stage:
        """The round's candidates (or `label_prompts` of them, chosen by `selection`) into the Argilla dataset as
        round `round_`; first scored by a reward model when there is one (round 1: `selection_reward_adapter`; later
        rounds: the last round's), whose ranking becomes each record's suggestion."""
        dataset, workspace = self._dataset()
        cfg = self.cfg
        need = self.rankings_per_record()
        folder = self.path(round_stage("labels", round_))
        candidates = str(self.path(round_stage("generate", round_), "candidates.jsonl"))
        command = ["label", "push", "--candidates", candidates]
        command += ["--dataset", dataset, "--workspace", workspace, "--min_submitted", str(need)]
        config = {"dataset": dataset, "workspace": workspace, "min_submitted": need}
        if round_ > 1:
            command += ["--round", str(round_)]
            config["round"] = round_
        commands = []
        scorer = str(self.reward_of(round_ - 1)) if round_ > 1 else cfg.selection_reward_adapter
        if scorer:
            scores = str(folder / "scores.jsonl")
            commands.append(
                ["reward", "score", "--adapter", scorer, "--input", candidates, "--output", scores, "--overwrite"]
            )
            command += ["--suggestions", scores]
            config["scored_by"] = scorer
        if cfg.label_prompts is not None:  # only then in the config: a run without selection keeps its hash
            # with no reward model yet (round 1 without selection_reward_adapter), uncertainty and spread start at
            # random
            strategy = "random" if cfg.selection in SCORED and not scorer else cfg.selection
            command += ["--select", str(cfg.label_prompts), "--strategy", strategy, "--seed", str(cfg.seed)]
            config |= {"label_prompts": cfg.label_prompts, "selection": strategy, "seed": cfg.seed}
        commands.append(command + self._argilla_args())
        name = round_stage("push", round_)
        return Stage(name, folder, [folder / "push.json"], config, None, commands)

    def _label(self, round_: int = 1) -> Stage:
        dataset, workspace = self._dataset()
        cfg = self.cfg
        config = {"dataset": dataset, "labelers": cfg.labelers, "annotators": cfg.annotators}
        if round_ > 1:
            config["round"] = round_
        commands = []
        if cfg.labelers == "simulated":
            config |= {"noise": cfg.annotator_noise, "seed": cfg.seed}
            for index in range(1, cfg.annotators + 1):
                commands.append(
                    ["label", "simulate", "--dataset", dataset, "--workspace", workspace]
                    + ["--annotator", f"{user_name(self.run.name)}-{index}", "--noise", str(cfg.annotator_noise)]
                    + ["--seed", str(self.annotator_seed(index)), *self._argilla_args()]
                )
        else:
            config["labels_needed"] = cfg.labels_needed
        folder = self.path(round_stage("labels", round_))
        return Stage(round_stage("label", round_), folder, [folder / "labels.json"], config, None, commands)

    def _pull(self, round_: int = 1) -> Stage:
        """Every round's rankings so far (the whole dataset) as preference pairs."""
        dataset, workspace = self._dataset()
        folder = self.path(round_stage("preferences", round_))
        command = ["label", "pull", "--dataset", dataset, "--workspace", workspace, "--output", str(folder)]
        command += ["--min_agreement", str(self.cfg.min_agreement)]
        if self.cfg.rounds > 1:  # round r's labels are rounds 1..r, even when it runs again after a later push
            command += ["--max_round", str(round_)]
        command += ["--overwrite", "--wandb_group", self.state["wandb_group"], *self._argilla_args()]
        for key in ("wandb_project", "wandb_mode"):
            if key in self.tracking_given:
                command += [f"--{key}", str(getattr(self.tracking, key))]
        outputs = [folder / "manifest.json", folder / "preferences.jsonl"]
        config = {"dataset": dataset, "workspace": workspace, "min_agreement": self.cfg.min_agreement}
        if round_ > 1:
            config["round"] = round_
        return Stage(round_stage("pull", round_), folder, outputs, config, None, [command])

    def _reward(self, round_: int = 1) -> Stage:
        """A reward model on every round's labels so far: a fresh adapter, or with reward_warm_start (rounds > 1)
        the last round's reward model continued."""
        owned = {
            "model_name_or_path": self.cfg.model_name_or_path,
            "load_in_4bit": self.cfg.load_in_4bit,
            "datasets": [{"path": str(self.path(round_stage("preferences", round_), "preferences.jsonl"))}],
            "sft_adapter": str(self.path("sft", "adapter")),
            "max_steps": self.cfg.reward_max_steps,
        }
        pinned = None
        if self.cfg.reward_warm_start and round_ > 1:  # init_from_sft, if set, starts round 1 only
            pinned = {"init_adapter": str(self.reward_of(round_ - 1)), "init_from_sft": False}
        name = round_stage("reward", round_)
        return self._with_recipe(name, owned, ["adapter/workbench.json", "metrics.json"], ["--resume"], pinned)

    def _rl(self, method: str, round_: int = 1) -> Stage:
        """ppo, or a critic-free method (rloo, grpo, reinforce++): `workbench ppo` on the SFT and the round's reward
        adapter; a later round's policy continues from the method's last one, its reference stays SFT. raft: `workbench
        raft` on the same adapters, a later round's continuing the same way."""
        owned = {
            "sft_adapter": str(self.path("sft", "adapter")),
            "reward_adapter": str(self.reward_of(round_)),
            "load_in_4bit": self.cfg.load_in_4bit,
            "total_steps": self.cfg.ppo_steps if method in RL_METHODS else None,
        }
        if round_ > 1:
            owned["policy_adapter"] = str(self.path(round_stage(method, round_ - 1), "adapter"))
        name = round_stage(method, round_)
        return self._with_recipe(name, owned, ["adapter/workbench.json", "metrics.json"], ["--resume"])

    def _dpo(self, round_: int = 1) -> Stage:  # round 1 only: a run with rounds > 1 refuses dpo
        owned = {
            "sft_adapter": str(self.path("sft", "adapter")),
            "datasets": [{"path": str(self.path("preferences", "preferences.jsonl"))}],
            "load_in_4bit": self.cfg.load_in_4bit,
            "max_steps": self.cfg.dpo_max_steps,
        }
        return self._with_recipe("dpo", owned, ["adapter/workbench.json", "metrics.json"], ["--resume"])

    def methods(self) -> list[str]:
        """Every method stage of every round, in order (`reinforce++`, then `reinforce++-r2`, ...)."""
        return [name for name in self.stages if split_round(name)[0] in METHODS]

    def _eval(self) -> Stage:
        """SFT against every round's policies, judged by the gold rubric and the last round's reward model."""
        owned = {
            "policies": [{"name": "base", "adapter": None}] * self.cfg.eval_base
            + [{"name": "sft", "adapter": str(self.path("sft", "adapter"))}]
            + [{"name": name, "adapter": str(self.path(name, "adapter"))} for name in self.methods()],
            "reward_adapter": str(self.reward_of(self.cfg.rounds)),
            # every earlier round's reward model: its agreement with the gold rubric on the same answers
            "agreement_reward_adapters": [
                {"name": round_stage("reward", r), "adapter": str(self.reward_of(r))}
                for r in range(1, self.cfg.rounds)
            ]
            or None,
            "max_prompts": self.cfg.eval_prompts,
        }
        return self._with_recipe("eval", owned, ["metrics.json", "report.md"], ["--overwrite"])

    def _report(self) -> Stage:
        return Stage("report", self.path("plots"), [self.path("report.md")], {"always": True})

    def write_recipe(self, stage: Stage) -> Path:
        from workbench.fileio import write_text_atomic

        path = self.path("recipes", f"{stage.name}.yaml")
        write_text_atomic(path, self.header(stage.name) + yaml.safe_dump(stage.recipe, sort_keys=False))
        return path
