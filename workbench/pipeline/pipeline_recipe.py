"""The pipeline recipe: a few keys per stage, optional per-stage recipes, and overrides merged into them.

Each stage's recipe is built as: the stage recipe named by `<stage>_recipe` (or the stage's defaults), then the keys
the pipeline owns (paths inside the run folder, the base model, the W&B group, the size keys below), then
`overrides.<stage>`. It is written to `<run_dir>/recipes/<stage>.yaml` and run as `workbench <stage> --config` it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Every stage a run can have, in order: the labels, then one stage per alignment method (`methods`), then eval.
# push/label/pull talk to Argilla; report is built in-process from the others' outputs.
BEFORE_METHODS = ("sft", "generate", "push", "label", "pull", "reward")
METHODS = ("ppo", "rloo", "grpo", "reinforce++", "raft", "dpo")
AFTER_METHODS = ("eval", "report")
STAGES = (*BEFORE_METHODS, *METHODS, *AFTER_METHODS)
RECIPE_STAGES = ("sft", "generate", "reward", *METHODS, "eval")
LABELERS = ("simulated", "human")

# A later labeling round repeats these and the methods: its candidates come from the last round's policy.
ROUND_STAGES = ("generate", "push", "label", "pull", "reward")

# The critic-free RL methods run `workbench ppo` on the ppo recipe with these keys (workbench/rl/advantages.py),
# k responses to each of batch_size / k prompts: the same sequences per step as the recipe's PPO, and no critic.
CRITIC_FREE = {
    "critic_warmup_steps": 0,
    "value_learning_rate": None,
    "value_max_grad_norm": None,
    "value_model": "adapter",  # the default: no critic to choose
}
RL_METHODS = {
    "ppo": {},  # the ppo recipe as it is (its own advantage_estimator)
    "rloo": {**CRITIC_FREE, "advantage_estimator": "rloo", "rollouts_per_prompt": 2},
    "grpo": {**CRITIC_FREE, "advantage_estimator": "grpo", "rollouts_per_prompt": 4, "kl_loss": True},
    "reinforce++": {**CRITIC_FREE, "advantage_estimator": "reinforce++"},
}


def round_stage(name: str, round_: int) -> str:
    """A stage's name in labeling round `round_`: round 1 keeps the plain name (`reward`), later ones add `-r<N>`
    (`reward-r2`, `reinforce++-r2`)."""
    return name if round_ == 1 else f"{name}-r{round_}"


def split_round(stage: str) -> tuple[str, int]:
    """`reward-r2` → (`reward`, 2); `reward` → (`reward`, 1)."""
    match = re.fullmatch(r"(.+)-r(\d+)", stage)
    return (match.group(1), int(match.group(2))) if match else (stage, 1)


def stages_of(methods, rounds: int = 1) -> tuple[str, ...]:
    """A run's stages in order, with its `methods` in METHODS' order; rounds 2.. repeat ROUND_STAGES and the
    methods before the one eval."""
    chosen = [name for name in METHODS if name in methods]
    stages = [*BEFORE_METHODS, *chosen]
    for round_ in range(2, rounds + 1):
        stages += [round_stage(name, round_) for name in (*ROUND_STAGES, *chosen)]
    return (*stages, *AFTER_METHODS)


def recipe_of(stage: str) -> str:
    """The stage recipe (and `workbench` command) a stage runs: the critic-free methods run the ppo one; a later
    round's stage runs its round-1 stage's."""
    base, _ = split_round(stage)
    return "ppo" if base in RL_METHODS else base


@dataclass
class PipelineConfig:
    """The whole loop in one recipe: SFT, generate, label in Argilla, reward, PPO, eval, report."""

    run_dir: str = field(
        default="outputs/quickstart", metadata={"help": "Run folder: one sub-folder per stage, logs/, report.md."}
    )
    model_name_or_path: str = field(
        default="smollm2-135m-instruct",
        metadata={"help": "Base model for every stage: a local checkpoint, a hub id or an alias (tiny-llama)."},
    )
    load_in_4bit: bool | None = field(
        default=None,
        metadata={
            "help": "Hold the base in 4-bit (QLoRA) in sft, generate, reward and ppo; null: each stage recipe's own "
            "setting. eval loads the base as the reward adapter's manifest records it."
        },
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "One seed for the whole run: every stage's `seed` (SFT data order, candidate sampling, reward "
            "data split and order, PPO rollouts, eval sampling) and the simulated annotators' noise derive from it."
        },
    )
    sft_recipe: str | None = field(default=None, metadata={"help": "Base recipe for the sft stage (optional)."})
    generate_recipe: str | None = field(default=None, metadata={"help": "Base recipe for generate (optional)."})
    reward_recipe: str | None = field(default=None, metadata={"help": "Base recipe for reward (optional)."})
    ppo_recipe: str | None = field(
        default=None, metadata={"help": "Base recipe for ppo, and for rloo, grpo and reinforce++ (optional)."}
    )
    raft_recipe: str | None = field(default=None, metadata={"help": "Base recipe for raft (optional)."})
    dpo_recipe: str | None = field(default=None, metadata={"help": "Base recipe for dpo (optional)."})
    methods: list[str] = field(
        default_factory=lambda: ["ppo"],
        metadata={
            "help": "Alignment methods trained from the same labels, each a stage (run_dir/<method>) and a row of "
            "the eval: ppo (the ppo recipe), rloo, grpo, reinforce++ (the ppo recipe with that critic-free "
            "advantage estimator, k responses per prompt, no value adapter), raft (rejection-sampling fine-tuning: "
            "SFT on the reward model's best of N answers), dpo (TRL's DPOTrainer on the pulled pairs)."
        },
    )
    eval_recipe: str | None = field(default=None, metadata={"help": "Base recipe for eval (optional)."})
    overrides: dict | None = field(
        default=None,
        metadata={"help": "Per-stage recipe keys that win over everything: {sft: {learning_rate: 1e-4}, ppo: {...}}."},
    )
    rounds: int = field(
        default=1,
        metadata={
            "help": "Labeling rounds. Round r+1 generates candidates for the next num_prompts training prompts from "
            "round r's policy (the first method's), pushes them to the same Argilla dataset as round r+1, trains "
            "a reward model on every round's labels and continues each method from its round-r policy (the "
            "reference stays SFT); one eval compares every round's policies. Stages of round r > 1: <stage>-r<r>."
        },
    )
    sft_max_steps: int | None = field(default=None, metadata={"help": "SFT optimizer steps (sft max_steps)."})
    num_prompts: int | None = field(default=None, metadata={"help": "Prompts to generate candidates for."})
    num_candidates: int | None = field(default=None, metadata={"help": "K: candidates per prompt to rank."})
    label_prompts: int | None = field(
        default=None,
        metadata={
            "help": "How many of the prompts' candidates go to the labelers, chosen by `selection` "
            "(`label push --select`); default every prompt."
        },
    )
    selection: str = field(
        default="random",
        metadata={
            "help": "How `label_prompts` are chosen (labeling/selection.py): random; diversity (the candidates that "
            "differ most); uncertainty (those `selection_reward_adapter` is least sure how to order); spread (those "
            "it tells apart most)."
        },
    )
    selection_reward_adapter: str | None = field(
        default=None,
        metadata={
            "help": "A reward adapter (a finished reward stage's adapter/) that scores the candidates before the "
            "push: needed by selection uncertainty and spread; its ranking becomes each record's suggestion to the "
            "labelers."
        },
    )
    labelers: str = field(
        default="simulated",
        metadata={
            "help": "simulated: `label simulate` annotators rank by the gold rubric with noise; human: create "
            "annotator logins, print the UI address and wait until enough records are ranked."
        },
    )
    annotators: int = field(default=3, metadata={"help": "Number of annotators (simulated or human logins)."})
    annotator_noise: float = field(
        default=0.5, metadata={"help": "Simulated annotators: std-dev of the noise on rubric scores."}
    )
    rankings_per_record: int | None = field(
        default=None,
        metadata={
            "help": "Rankings each record needs (Argilla min_submitted); default all annotators if simulated, 1"
        },
    )
    labels_needed: int | None = field(
        default=None, metadata={"help": "Human labelers: completed records to wait for; default every record."}
    )
    argilla_home: str | None = field(
        default=None,
        metadata={
            "help": "Embedded Argilla home (default ~/.cache/workbench/argilla); ignored when "
            "ARGILLA_API_URL and ARGILLA_API_KEY point at another Argilla."
        },
    )
    argilla_port: int = field(default=6900, metadata={"help": "Port of the embedded Argilla, when it must start."})
    argilla_workspace: str = field(default="workbench", metadata={"help": "Argilla workspace of the dataset."})
    argilla_dataset: str | None = field(
        default=None, metadata={"help": "Argilla dataset name; default <run folder name>-<hash of the candidates>."}
    )
    min_agreement: float = field(
        default=0.0,
        metadata={
            "help": "Pull: keep a preference pair only when at least this fraction of its record's annotators "
            "ranked it the same way (1 = unanimous; 0 = every majority pair)."
        },
    )
    reward_max_steps: int | None = field(default=None, metadata={"help": "Reward model steps (reward max_steps)."})
    reward_warm_start: bool = field(
        default=False,
        metadata={
            "help": "With rounds: start round r's reward model from round r-1's (its LoRA and score head, the reward "
            "stage's init_adapter) instead of a fresh one; it still learns from every round's labels for "
            "reward_max_steps. Round 1 starts as the reward recipe says (fresh, or init_from_sft). Off by default: "
            "bench/reward_warm_start.py measured no gain in agreement with the gold rubric over a fresh model."
        },
    )
    ppo_steps: int | None = field(
        default=None, metadata={"help": "RL steps of ppo, rloo, grpo and reinforce++ (their total_steps)."}
    )
    dpo_max_steps: int | None = field(default=None, metadata={"help": "DPO optimizer steps (dpo max_steps)."})
    eval_prompts: int | None = field(default=None, metadata={"help": "Held-out prompts the eval stage answers."})
    eval_base: bool = field(
        default=True,
        metadata={
            "help": "Eval compares the bare base model too (a third policy to answer and score; SFT's own held-out "
            "loss against the base's is in the SFT stage's metrics either way)."
        },
    )
    force: list[str] = field(
        default_factory=list,
        metadata={"help": "Re-run these stages (and every later one) even if complete; `--force` alone: all."},
    )
