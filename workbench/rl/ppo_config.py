"""`PPOConfig`: the PPO stage's hyper-parameters and inputs (a recipe's keys), checked before any work.

Sizes are per process; defaults are TRL 1.12's where it had one. The loop that reads them is workbench/rl/trainer.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.errors import UserError
from workbench.rl.advantages import ESTIMATORS, GROUPED
from workbench.rl.kl import KL_ESTIMATORS

OPTIMIZERS = ("adamw_torch", "paged_adamw_8bit")
SCHEDULES = ("constant", "linear", "cosine")
VALUE_MODELS = ("adapter", "ref_features")


@dataclass
class PPOConfig:
    """PPO hyper-parameters and what to run on. Sizes are per process; defaults are TRL 1.12's where it had one."""

    sft_adapter: str | None = field(
        default=None, metadata={"help": "SFT adapter folder (a `workbench sft` output_dir/adapter): policy and ref."}
    )
    reward_adapter: str | None = field(
        default=None, metadata={"help": "Reward adapter folder (`workbench reward` output_dir/adapter)."}
    )
    policy_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Start the trained policy from this adapter instead of sft_adapter (a later labeling round "
            "continues the last round's policy); the reference, and so the KL, stays sft_adapter."
        },
    )
    prompts: list[dict] = field(
        default_factory=lambda: [{"path": "bundled:prompts", "where": {"split": "train"}}],
        metadata={"help": "Prompt datasets: a list of {path, where, max_samples, split}; rows need `prompt_column`."},
    )
    prompt_column: str = field(
        default="prompt", metadata={"help": "Column holding the prompt: chat messages, or a string (one user turn)."}
    )
    output_dir: str = field(default="outputs/ppo", metadata={"help": "Where adapter/, checkpoints and logs go."})
    run_name: str | None = field(default=None, metadata={"help": "W&B run name; default ppo-<output_dir name>."})
    seed: int = field(default=42, metadata={"help": "Seed for prompts order, sampling and minibatch shuffling."})
    total_steps: int = field(default=20, metadata={"help": "PPO steps; each is one rollout and its ppo_epochs."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per rollout (per process)."})
    rollouts_per_prompt: int = field(
        default=1,
        metadata={
            "help": "Responses sampled for each prompt (k): a rollout holds batch_size x k sequences. rloo, grpo and "
            "reinforce++_baseline compare each response with the others to the same prompt and need k >= 2."
        },
    )
    advantage_estimator: str = field(
        default="gae",
        metadata={
            "help": f"One of {', '.join(ESTIMATORS)}. gae is PPO with the value adapter as critic; the others are "
            "critic-free (workbench/rl/advantages.py): the value adapter is not loaded, saving its memory and its "
            "forward and backward passes."
        },
    )
    value_model: str = field(
        default="adapter",
        metadata={
            "help": "The critic (GAE only). adapter: its own LoRA adapter and scalar head, both started from the "
            "reward adapter, as TRL's separate value model: one more forward pass per rollout and a forward and "
            "backward per minibatch. ref_features: a scalar head (a copy of the reward head) on the final hidden "
            "states of the reference pass the rollout runs anyway; only the head learns, the value costs no pass."
        },
    )
    kl_loss: bool = field(
        default=False,
        metadata={
            "help": "Put the KL to the reference in the policy loss (kl_coef x mean per-token kl_estimator, GRPO's "
            "way; k3 is the usual estimator) instead of in the reward."
        },
    )
    mini_batch_size: int = field(
        default=4, metadata={"help": "Sequences per optimizer step; divides batch_size x rollouts_per_prompt."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per minibatch (mini_batch_size / this per forward pass)."}
    )
    forward_batch_size: int | None = field(
        default=None, metadata={"help": "Sequences per generate/forward call during the rollout; default batch_size."}
    )
    ppo_epochs: int = field(default=4, metadata={"help": "Passes over each rollout (TRL's num_ppo_epochs)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate for policy and value."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm to this."})
    optim: str = field(default="adamw_torch", metadata={"help": f"Optimizer: one of {', '.join(OPTIMIZERS)}."})
    lr_scheduler_type: str = field(
        default="constant",
        metadata={"help": f"Learning-rate schedule over all optimizer steps: one of {', '.join(SCHEDULES)}."},
    )
    warmup_steps: int = field(
        default=0, metadata={"help": "Optimizer steps of linear learning-rate warm-up from 0 (any schedule)."}
    )
    value_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the value adapter and head (OpenRLHF's critic_learning_rate); default "
            "learning_rate."
        },
    )
    value_max_grad_norm: float | None = field(
        default=None,
        metadata={
            "help": "Clip the value gradients to this norm and the policy's to max_grad_norm, each on its own; "
            "default: one global norm over both (TRL 1.12's)."
        },
    )
    critic_warmup_steps: int = field(
        default=0,
        metadata={
            "help": "First PPO steps in which only the value adapter learns (the policy is frozen and answers are "
            "still sampled), so the advantages are not noise when the policy starts moving (OpenRLHF's "
            "freezing_actor_steps)."
        },
    )
    use_score_scaling: bool = field(
        default=False,
        metadata={"help": "Divide reward-model scores by their running standard deviation (TRL <0.12's option)."},
    )
    use_score_norm: bool = field(
        default=False, metadata={"help": "With use_score_scaling: also subtract the running mean (normalise)."}
    )
    score_clip: float | None = field(
        default=None, metadata={"help": "Clip (scaled) scores to [-score_clip, score_clip] before the EOS penalty."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss."})
    cliprange: float = field(default=0.2, metadata={"help": "PPO policy ratio clip epsilon."})
    cliprange_value: float = field(default=0.2, metadata={"help": "Value clip range around the rollout values."})
    gamma: float = field(default=1.0, metadata={"help": "Discount factor."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda."})
    whiten_advantages: bool = field(default=True, metadata={"help": "Normalise advantages over each rollout."})
    kl_coef: float = field(default=0.05, metadata={"help": "KL penalty coefficient (initial one if adaptive_kl)."})
    kl_estimator: str = field(default="k1", metadata={"help": "Per-token KL estimator: k1 or k3 (or k2)."})
    adaptive_kl: bool = field(default=False, metadata={"help": "Adapt kl_coef towards kl_target (Ziegler et al.)."})
    kl_target: float = field(default=6.0, metadata={"help": "Adaptive KL: target summed KL per response."})
    kl_horizon: float = field(default=10000.0, metadata={"help": "Adaptive KL: horizon in samples."})
    max_new_tokens: int = field(default=48, metadata={"help": "Longest response, in tokens."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (log-probs use it too)."})
    top_k: int = field(
        default=0, metadata={"help": "Must stay 0: log-probs, KL and ratio assume the full softmax(logits / T)."}
    )
    top_p: float = field(default=1.0, metadata={"help": "Must stay 1.0, for the same reason as top_k."})
    max_prompt_length: int = field(default=256, metadata={"help": "Keep the last this many prompt tokens."})
    stop_tokens: list[str] | None = field(
        default=None, metadata={"help": "Tokens that end a response; default the tokenizer's EOS (chat end of turn)."}
    )
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Penalty for responses that hit max_new_tokens without a stop token."}
    )
    missing_eos_mode: str = field(
        default="subtract", metadata={"help": "subtract the penalty from the score, or replace the score by -penalty."}
    )
    empty_response_loss_coef: float = field(
        default=0.0,
        metadata={
            "help": "Add coef x the policy's probability of ending a response at once (its first token a stop "
            "token) to the policy loss: that probability exactly, where rollouts only sample it, so the policy cannot "
            "drift into empty answers that greedy decoding gives and rollouts have not yet drawn."
        },
    )
    empty_response_penalty: float | None = field(
        default=None,
        metadata={
            "help": "Score an empty response (nothing but whitespace before its stop token) -penalty, after score "
            "scaling: a reward model that never saw an empty answer cannot be trusted to rank one."
        },
    )
    reward_uncertainty_coef: float = field(
        default=0.0,
        metadata={
            "help": "Optimise the reward model's score minus this times its uncertainty, the standard deviation of "
            "the score under the head's Laplace posterior that the reward stage saved beside its adapter "
            "(workbench/modeling/reward_uncertainty.py): answers unlike any the labelers ranked are not trusted."
        },
    )
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    save_steps: int = field(default=10, metadata={"help": "Write checkpoint-<step>/ every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep only the newest this many checkpoints."})
    sample_rows: int = field(default=2, metadata={"help": "Prompt/response rows per step for the W&B samples table."})

    @property
    def critic(self) -> bool:
        """Whether the run trains a critic (GAE) or is critic-free."""
        return self.advantage_estimator == "gae"

    @property
    def value_on_ref_features(self) -> bool:
        """Whether the critic is a head on the reference pass's hidden states (no value adapter)."""
        return self.critic and self.value_model == "ref_features"

    @property
    def sequences_per_rollout(self) -> int:
        return self.batch_size * self.rollouts_per_prompt

    def check(self, inputs: bool = True) -> None:
        """Fail early, naming the key, on sizes and choices that cannot work (and on missing adapters if `inputs`)."""
        sizes = ("total_steps", "batch_size", "rollouts_per_prompt", "mini_batch_size", "gradient_accumulation_steps")
        for key in (*sizes, "ppo_epochs"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be a positive integer; got {getattr(self, key)}")
        if self.sequences_per_rollout % self.mini_batch_size:
            raise UserError(
                f"mini_batch_size ({self.mini_batch_size}) must divide batch_size x rollouts_per_prompt "
                f"({self.batch_size} x {self.rollouts_per_prompt})"
            )
        if self.advantage_estimator not in ESTIMATORS:
            raise UserError(f"advantage_estimator must be one of {ESTIMATORS}; got {self.advantage_estimator!r}")
        if self.advantage_estimator in GROUPED and self.rollouts_per_prompt < 2:
            raise UserError(
                f"advantage_estimator {self.advantage_estimator} compares responses to the same prompt: "
                f"rollouts_per_prompt must be >= 2; got {self.rollouts_per_prompt}"
            )
        if self.value_model not in VALUE_MODELS:
            raise UserError(f"value_model must be one of {VALUE_MODELS}; got {self.value_model!r}")
        for key in ("value_learning_rate", "value_max_grad_norm", "critic_warmup_steps") if not self.critic else ():
            if getattr(self, key):
                raise UserError(f"{key} is for the critic; advantage_estimator {self.advantage_estimator} has none")
        if not self.critic and self.value_model != "adapter":
            raise UserError(
                f"value_model is for the critic; advantage_estimator {self.advantage_estimator} has none "
                f"(got value_model {self.value_model!r})"
            )
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise UserError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide mini_batch_size "
                f"({self.mini_batch_size})"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise UserError(f"kl_estimator must be one of {KL_ESTIMATORS}; got {self.kl_estimator!r}")
        if self.optim not in OPTIMIZERS:
            raise UserError(f"optim must be one of {OPTIMIZERS}; got {self.optim!r}")
        if self.lr_scheduler_type not in SCHEDULES:
            raise UserError(f"lr_scheduler_type must be one of {SCHEDULES}; got {self.lr_scheduler_type!r}")
        if self.warmup_steps < 0 or self.critic_warmup_steps < 0:
            raise UserError(
                f"warmup_steps and critic_warmup_steps must be >= 0; got {self.warmup_steps}, "
                f"{self.critic_warmup_steps}"
            )
        if self.critic_warmup_steps >= self.total_steps:
            raise UserError(
                f"critic_warmup_steps ({self.critic_warmup_steps}) must be below total_steps ({self.total_steps}): "
                "the policy would never train"
            )
        for key in ("learning_rate", "value_learning_rate", "max_grad_norm", "value_max_grad_norm", "score_clip"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise UserError(f"{key} must be > 0; got {value}")
        if self.use_score_norm and not self.use_score_scaling:
            raise UserError("use_score_norm: true needs use_score_scaling: true (normalising is scaling and centring)")
        if not self.reward_uncertainty_coef >= 0:
            raise UserError(f"reward_uncertainty_coef must be >= 0; got {self.reward_uncertainty_coef}")
        if self.empty_response_loss_coef < 0:
            raise UserError(f"empty_response_loss_coef must be >= 0; got {self.empty_response_loss_coef}")
        if self.empty_response_penalty is not None and self.empty_response_penalty < 0:
            raise UserError(
                "empty_response_penalty must be >= 0 (an empty answer scores -penalty); "
                f"got {self.empty_response_penalty}"
            )
        if self.missing_eos_mode not in ("subtract", "replace"):
            raise UserError(f"missing_eos_mode must be subtract or replace; got {self.missing_eos_mode!r}")
        if self.top_k != 0 or self.top_p != 1.0:
            # Truncated sampling draws from another distribution than the one the old log-probs, the KL and the
            # ratio describe: the PPO maths would be wrong without a word. Refuse rather than mis-train.
            raise UserError(
                f"top_k must be 0 and top_p 1.0 for PPO rollouts (the log-probs, KL and ratio assume the full "
                f"softmax(logits / temperature)); got top_k {self.top_k}, top_p {self.top_p}"
            )
        if self.temperature <= 0 or self.max_new_tokens < 1 or self.save_steps < 1:
            raise UserError("temperature must be > 0, max_new_tokens and save_steps >= 1")
        for key in ("sft_adapter", "reward_adapter") if inputs else ():
            if not getattr(self, key):
                raise UserError(f"{key} is required: the folder a `workbench {key.split('_')[0]}` run wrote")
