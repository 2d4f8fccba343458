"""The PPO loop on one quantized base: rollout, rewards with a KL penalty, GAE, clipped updates, checkpoints.

Why our own loop: TRL deleted its PPOTrainer (moved to trl.experimental in 1.10, removed in 1.13, huggingface/trl PR
#7020; see DESIGN.md), and it never ran policy, reference, value and reward as adapters of one base. The algorithm
follows TRL 1.12's PPOTrainer (trl/experimental/ppo/ppo_trainer.py) step for step; the pure pieces live in
workbench/rl/ (kl, gae, losses, rewards, buffer), the model-facing rollout in workbench/rl/rollout.py, checkpoints in
workbench/rl/checkpoint.py.

Devices come from accelerate: every process holds the whole quantized base and its adapters on its own device,
samples its own share of the prompts, and gradients are averaged across processes before each optimizer step (no
DDP wrapper: DDP's hooks would only see the forward pass of one adapter at a time).
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from workbench.errors import UserError
from workbench.modeling import adapters
from workbench.rl import checkpoint as ckpt
from workbench.rl.gae import compute_gae, whiten
from workbench.rl.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController, per_token_kl
from workbench.rl.losses import clipped_policy_loss, clipped_value_loss, explained_variance
from workbench.rl.masked import masked_mean, masked_sum
from workbench.rl.rewards import apply_missing_eos_penalty, per_token_rewards
from workbench.rl.rollout import POLICY, VALUE, GenerationSettings, collect, response_logprobs, response_values

OPTIMIZERS = ("adamw_torch", "paged_adamw_8bit")


@dataclass
class PPOConfig:
    """PPO hyper-parameters and what to run on. Sizes are per process; defaults are TRL 1.12's where it had one."""

    sft_adapter: str | None = field(
        default=None, metadata={"help": "SFT adapter folder (a `workbench sft` output_dir/adapter): policy and ref."}
    )
    reward_adapter: str | None = field(
        default=None, metadata={"help": "Reward adapter folder (`workbench reward` output_dir/adapter)."}
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
    mini_batch_size: int = field(default=4, metadata={"help": "Samples per optimizer step; divides batch_size."})
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
    top_k: int = field(default=0, metadata={"help": "Top-k sampling; 0 turns it off (PPO wants the full policy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling; 1.0 turns it off."})
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
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations in backward."})
    save_steps: int = field(default=10, metadata={"help": "Write checkpoint-<step>/ every this many steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Keep only the newest this many checkpoints."})
    sample_rows: int = field(default=2, metadata={"help": "Prompt/response rows per step for the W&B samples table."})
    resume: bool = field(default=False, metadata={"help": "Continue exactly from the last checkpoint in output_dir."})
    overwrite: bool = field(default=False, metadata={"help": "Start afresh even if output_dir holds checkpoints."})

    def check(self) -> None:
        """Fail early, naming the key, on sizes and choices that cannot work."""
        for key in ("total_steps", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs"):
            if getattr(self, key) < 1:
                raise UserError(f"{key} must be a positive integer; got {getattr(self, key)}")
        if self.batch_size % self.mini_batch_size:
            raise UserError(f"mini_batch_size ({self.mini_batch_size}) must divide batch_size ({self.batch_size})")
        if self.mini_batch_size % self.gradient_accumulation_steps:
            raise UserError(
                f"gradient_accumulation_steps ({self.gradient_accumulation_steps}) must divide mini_batch_size "
                f"({self.mini_batch_size})"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise UserError(f"kl_estimator must be one of {KL_ESTIMATORS}; got {self.kl_estimator!r}")
        if self.optim not in OPTIMIZERS:
            raise UserError(f"optim must be one of {OPTIMIZERS}; got {self.optim!r}")
        if self.missing_eos_mode not in ("subtract", "replace"):
            raise UserError(f"missing_eos_mode must be subtract or replace; got {self.missing_eos_mode!r}")
        if self.temperature <= 0 or self.max_new_tokens < 1 or self.save_steps < 1:
            raise UserError("temperature must be > 0, max_new_tokens and save_steps >= 1")
        for key in ("sft_adapter", "reward_adapter"):
            if not getattr(self, key):
                raise UserError(f"{key} is required: the folder a `workbench {key.split('_')[0]}` run wrote")


class PromptStream:
    """Prompts in a seeded order, reshuffled every epoch; its position is part of the checkpoint.

    Each step takes the next `batch_size x world` prompts; process `rank` keeps its slice of them.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.rank, self.world = size, seed, rank, world
        self.epoch, self.position = 0, 0

    def _order(self) -> list[int]:
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()

    def next_batch(self, batch_size: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < batch_size * self.world:
            order = self._order()
            take = min(batch_size * self.world - len(taken), self.size - self.position)
            taken += order[self.position : self.position + take]
            self.position += take
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
        return taken[self.rank * batch_size : (self.rank + 1) * batch_size]

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "size": self.size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        if state["size"] != self.size or state["seed"] != self.seed:
            raise UserError(f"the checkpoint saw {state['size']} prompts (seed {state['seed']}); now {self.size}")
        self.epoch, self.position = state["epoch"], state["position"]


def disable_dropout(model) -> None:
    """Dropout off everywhere (TRL's disable_dropout): the rollout's log-probs and values must be reproducible in the
    update, or PPO's ratio starts away from 1 for no reason."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def trained_tensors(model) -> dict[str, torch.nn.Parameter]:
    """Every tensor PPO trains: the policy LoRA, the value LoRA and the value head (by adapter name)."""
    pattern = re.compile(rf"\.({POLICY}|{VALUE})(\.|$)")
    found = {n: p for n, p in model.named_parameters() if p.is_floating_point() and pattern.search(n)}
    for name in (POLICY, VALUE):
        if not any(re.search(rf"\.{name}(\.|$)", n) for n in found):
            raise UserError(f"no trainable tensors for adapter {name!r}: attach it before building the PPO trainer")
    return found


def build_optimizer(parameters, config: PPOConfig):
    parameters = list(parameters)
    if config.optim == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)


def stop_token_ids(tokenizer, names: list[str] | None) -> list[int]:
    names = names or [tokenizer.eos_token]
    vocab = tokenizer.get_vocab()
    unknown = [n for n in names if n not in vocab]
    if unknown:
        raise UserError(f"stop_tokens {unknown} are not single tokens of this tokenizer's vocabulary")
    return [vocab[n] for n in names]


class PPOTrainer:
    """One PPO step at a time (`step()`), with exact `save()` / `resume()`. The model is a PeftModel carrying the
    adapters `policy` (trainable), `ref` (frozen), `reward` (frozen, with head) and `value` (trainable, with head)."""

    def __init__(self, model, tokenizer, prompts: list[list[dict]], config: PPOConfig, accelerator) -> None:
        config.check()
        self.model, self.tokenizer, self.prompts, self.config = model, tokenizer, prompts, config
        self.accelerator = accelerator
        self.device = accelerator.device
        disable_dropout(model)
        self.tensors = trained_tensors(model)
        self.optimizer = build_optimizer(self.tensors.values(), config)
        if config.adaptive_kl:
            self.kl_controller = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(config.kl_coef)
        self.minibatch_generator = torch.Generator().manual_seed(config.seed)
        rank, world = accelerator.process_index, accelerator.num_processes
        self.stream = PromptStream(len(prompts), config.seed, rank, world)
        self.generation = GenerationSettings(
            config.max_new_tokens,
            config.temperature,
            config.top_k,
            config.top_p,
            config.max_prompt_length,
            stop_token_ids(tokenizer, config.stop_tokens),
        )
        self.step_count, self.episodes = 0, 0
        self.history: list[dict] = []
        self.samples: list[list] = []

    # ── one step ──────────────────────────────────────────────────────────────────────────────────────────────────
    def step(self) -> dict:
        config, started = self.config, time.perf_counter()
        prompts = [self.prompts[i] for i in self.stream.next_batch(config.batch_size)]
        self.model.eval()
        rollout = collect(
            self.model,
            self.tokenizer,
            prompts,
            self.generation,
            self.device,
            config.forward_batch_size or len(prompts),
        )
        rollout_seconds = time.perf_counter() - started
        batch, mask = rollout.batch, rollout.batch.response_mask
        scores = apply_missing_eos_penalty(
            batch.scores, rollout.ended, config.missing_eos_penalty, config.missing_eos_mode
        )
        kl = per_token_kl(batch.logprobs, batch.ref_logprobs, mask, config.kl_estimator)
        token_rewards = per_token_rewards(scores, kl, mask, self.kl_controller.value)
        gae = compute_gae(token_rewards.rewards, batch.values, mask, config.gamma, config.lam)
        advantages = whiten(gae.advantages, mask) if config.whiten_advantages else gae.advantages
        batch = dataclasses.replace(batch, rewards=token_rewards.rewards, advantages=advantages, returns=gae.returns)

        updates = self.update(batch)

        gather = self.accelerator.gather
        kl_per_response = gather(masked_sum(kl, mask, dim=1))
        non_score = gather(masked_sum(token_rewards.kl_penalty, mask, dim=1))
        raw_scores, penalised = gather(batch.scores), gather(scores)
        lengths = gather(mask.sum(dim=1).float())
        self.kl_controller.update(kl_per_response.mean().item(), len(kl_per_response))
        self.step_count += 1
        self.episodes += len(kl_per_response)
        seconds = time.perf_counter() - started
        metrics = {
            "step": self.step_count,
            "episodes": self.episodes,
            "reward/mean": raw_scores.mean().item(),
            "reward/std": raw_scores.std().item() if len(raw_scores) > 1 else 0.0,
            "reward/penalised_mean": penalised.mean().item(),
            "objective/kl": kl_per_response.mean().item(),
            "objective/kl_coef": self.kl_controller.value,
            "objective/non_score_reward": non_score.mean().item(),
            "objective/rlhf_reward": (penalised + non_score).mean().item(),
            "policy/entropy": masked_mean(rollout.entropy, mask).item(),
            "value/explained_variance": explained_variance(batch.values, gae.returns, mask).item(),
            "response/length": lengths.mean().item(),
            "response/ended_fraction": gather(rollout.ended.float()).mean().item(),
            **updates,
            "perf/rollout_seconds": rollout_seconds,
            "perf/step_seconds": seconds,
            "perf/tokens_per_second": lengths.sum().item() / seconds,
        }
        self.history.append(metrics)
        rows = zip(prompts[: config.sample_rows], rollout.responses, batch.scores.tolist())
        self.samples += [[self.step_count, prompt[-1]["content"], response, score] for prompt, response, score in rows]
        return metrics

    def update(self, batch) -> dict:
        """ppo_epochs passes over shuffled minibatches; each minibatch is one optimizer step over its micro-batches."""
        config, model = self.config, self.model
        micro_size = config.mini_batch_size // config.gradient_accumulation_steps
        stats: dict[str, list[float]] = defaultdict(list)
        model.train()  # dropout is off (disable_dropout); train mode only lets gradient checkpointing work
        for _ in range(config.ppo_epochs):
            for minibatch in batch.minibatches(config.mini_batch_size, self.minibatch_generator):
                self.optimizer.zero_grad(set_to_none=True)
                for start in range(0, len(minibatch), micro_size):
                    rows = torch.arange(start, start + micro_size, device=minibatch.query_ids.device)
                    part = minibatch.select(rows).trimmed()
                    inputs = (part.query_ids, part.query_mask, part.response_ids, part.response_mask)
                    with adapters.use_adapter(model, POLICY):
                        logprobs, _ = response_logprobs(model, *inputs, config.temperature)
                        policy = clipped_policy_loss(
                            logprobs, part.logprobs, part.advantages, part.response_mask, config.cliprange
                        )
                        self.accelerator.backward(policy.loss / config.gradient_accumulation_steps)
                    with adapters.use_adapter(model, VALUE):
                        values = response_values(model, *inputs)
                        value = clipped_value_loss(
                            values, part.values, part.returns, part.response_mask, config.cliprange_value
                        )
                        self.accelerator.backward(config.vf_coef * value.loss / config.gradient_accumulation_steps)
                    stats["policy/loss"].append(policy.loss.item())
                    stats["policy/clip_fraction"].append(policy.clip_fraction.item())
                    stats["policy/approx_kl"].append(policy.approx_kl.item())
                    stats["value/loss"].append(value.loss.item())
                    stats["value/clip_fraction"].append(value.clip_fraction.item())
                self._average_gradients()
                grad_norm = torch.nn.utils.clip_grad_norm_(list(self.tensors.values()), config.max_grad_norm)
                stats["grad_norm"].append(grad_norm.item())
                self.optimizer.step()
        model.eval()
        return {name: sum(values) / len(values) for name, values in stats.items()}

    def _average_gradients(self) -> None:
        if self.accelerator.num_processes == 1:
            return
        for parameter in self.tensors.values():
            if parameter.grad is None:
                parameter.grad = torch.zeros_like(parameter)
            parameter.grad.copy_(self.accelerator.reduce(parameter.grad, reduction="mean"))

    # ── checkpoints ───────────────────────────────────────────────────────────────────────────────────────────────
    def state_dict(self) -> dict:
        return {
            "step": self.step_count,
            "episodes": self.episodes,
            "kl_controller": self.kl_controller.state_dict(),
            "prompt_stream": self.stream.state_dict(),
            "history": self.history,
            "samples": self.samples,
        }

    def save(self, output_dir) -> None:
        self.accelerator.wait_for_everyone()
        ckpt.save_checkpoint(
            output_dir,
            self.step_count,
            {name: p.data for name, p in self.tensors.items()},
            self.optimizer,
            self.state_dict(),
            {"minibatch": self.minibatch_generator},
            rank=self.accelerator.process_index,
            is_main=self.accelerator.is_main_process,
            keep=self.config.save_total_limit,
        )
        self.accelerator.wait_for_everyone()

    def resume(self, checkpoint) -> None:
        tensors = {name: p.data for name, p in self.tensors.items()}
        state = ckpt.load_checkpoint(
            checkpoint,
            tensors,
            self.optimizer,
            {"minibatch": self.minibatch_generator},
            self.accelerator.process_index,
        )
        self.step_count, self.episodes = state["step"], state["episodes"]
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.stream.load_state_dict(state["prompt_stream"])
        self.history, self.samples = state["history"], state["samples"]

    def summary(self) -> dict:
        """First vs last steps' mean reward and KL (averaged over up to 3 steps each), for metrics.json."""
        if not self.history:
            return {}
        window = max(1, min(3, math.ceil(len(self.history) / 2)))
        first, last = self.history[:window], self.history[-window:]

        def mean(rows, key):
            return sum(r[key] for r in rows) / len(rows)

        return {
            "steps": self.step_count,
            "reward_first": mean(first, "reward/mean"),
            "reward_last": mean(last, "reward/mean"),
            "kl_last": mean(last, "objective/kl"),
            "kl_max": max(r["objective/kl"] for r in self.history),
        }
