"""The PPO loop on one quantized base: rollout, rewards with a KL penalty, GAE, clipped updates, checkpoints.

Why our own loop: TRL deleted its PPOTrainer (moved to trl.experimental in 1.10, removed in 1.13, huggingface/trl PR
#7020; docs/ARCHITECTURE.md), and it never ran policy, reference, value and reward as adapters of one base. The
algorithm follows TRL 1.12's PPOTrainer (trl/experimental/ppo/ppo_trainer.py) step for step; the pure pieces live in
workbench/rl/ (kl, gae, losses, rewards, buffer), the hyper-parameters in workbench/rl/ppo_config.py, the rollout in
workbench/rl/rollout.py, checkpoints in workbench/rl/checkpoint.py. With a critic-free `advantage_estimator` (RLOO,
GRPO, REINFORCE++: workbench/rl/advantages.py) the same loop samples k responses per prompt, runs without the value
adapter, and its clipped updates are OpenRLHF's for those estimators.

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
from contextlib import nullcontext

import torch

from workbench.errors import UserError
from workbench.modeling import adapters, heads
from workbench.modeling.generation import Sampling, stop_token_ids
from workbench.modeling.single_base import POLICY, REWARD, VALUE, response_logprobs, response_values
from workbench.rl import checkpoint as ckpt
from workbench.rl.advantages import critic_free_advantages
from workbench.rl.gae import compute_gae, whiten
from workbench.rl.kl import AdaptiveKLController, FixedKLController, per_token_kl
from workbench.rl.losses import clipped_policy_loss, clipped_value_loss, explained_variance
from workbench.rl.masked import masked_mean, masked_sum
from workbench.rl.phase_timer import PhaseTimer
from workbench.rl.ppo_config import PPOConfig
from workbench.rl.rewards import (
    apply_empty_response_penalty,
    apply_missing_eos_penalty,
    per_token_rewards,
)
from workbench.rl.rollout import collect
from workbench.rl.score_scaling import RunningMoments, scale_scores


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


def adapter_tensors(model, name: str) -> dict[str, torch.nn.Parameter]:
    """The float tensors of adapter `name` (its LoRA, and its head for the value)."""
    pattern = re.compile(rf"\.{name}(\.|$)")
    found = {n: p for n, p in model.named_parameters() if p.is_floating_point() and pattern.search(n)}
    if not found:
        raise UserError(f"no trainable tensors for adapter {name!r}: attach it before building the PPO trainer")
    return found


def build_optimizer(policy, value, config: PPOConfig):
    """AdamW over the policy's parameter group, then the value's (at value_learning_rate if given) when there is a
    critic."""
    groups = [{"params": list(policy), "lr": config.learning_rate}]
    if config.critic:
        groups.append({"params": list(value), "lr": config.value_learning_rate or config.learning_rate})
    if config.optim == "paged_adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.PagedAdamW8bit(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)


def optimizer_steps(config: PPOConfig) -> int:
    """Optimizer steps in the whole run: one per minibatch, ppo_epochs passes per PPO step."""
    return config.total_steps * config.ppo_epochs * (config.sequences_per_rollout // config.mini_batch_size)


def build_scheduler(optimizer, config: PPOConfig):
    """transformers' schedule `lr_scheduler_type` with `warmup_steps`, stepped after every optimizer step."""
    from transformers import get_scheduler

    name = "constant_with_warmup" if config.lr_scheduler_type == "constant" else config.lr_scheduler_type
    return get_scheduler(
        name, optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=optimizer_steps(config)
    )


class PPOTrainer:
    """One PPO step at a time (`step()`), with exact `save()` / `resume()`. The model is a PeftModel carrying the
    adapters `policy` (trainable), `ref` (frozen), `reward` (frozen, with head) and, with a critic (GAE), `value`
    (trainable, with head)."""

    def __init__(self, model, tokenizer, prompts: list[list[dict]], config: PPOConfig, accelerator) -> None:
        config.check()
        self.model, self.tokenizer, self.prompts, self.config = model, tokenizer, prompts, config
        self.accelerator = accelerator
        self.device = accelerator.device
        disable_dropout(model)
        self.policy_tensors = adapter_tensors(model, POLICY)
        self.value_tensors = adapter_tensors(model, VALUE) if config.critic else {}
        self.tensors = {**self.policy_tensors, **self.value_tensors}
        self.optimizer = build_optimizer(self.policy_tensors.values(), self.value_tensors.values(), config)
        self.scheduler = build_scheduler(self.optimizer, config)
        self.score_moments = RunningMoments() if config.use_score_scaling else None
        if config.adaptive_kl:
            self.kl_controller = AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
        else:
            self.kl_controller = FixedKLController(config.kl_coef)
        self.minibatch_generator = torch.Generator().manual_seed(config.seed)
        rank, world = accelerator.process_index, accelerator.num_processes
        self.stream = PromptStream(len(prompts), config.seed, rank, world)
        if rank:  # each process samples from its own stream (TRL's local_seed); rank 0 keeps the one-process one
            torch.manual_seed(config.seed + 100003 * rank)
        self.sampling = Sampling(config.max_new_tokens, config.temperature, config.top_p, config.top_k)
        self.stop_ids = stop_token_ids(tokenizer, config.stop_tokens)
        self.step_count, self.episodes = 0, 0
        self.history: list[dict] = []
        self.samples: list[list] = []

    # ── one step ──────────────────────────────────────────────────────────────────────────────────────────────────
    def step(self) -> dict:
        config, started, timer = self.config, time.perf_counter(), PhaseTimer(self.device)
        k = config.rollouts_per_prompt  # each prompt's k responses in consecutive rows: the estimators' groups
        prompts = [self.prompts[i] for i in self.stream.next_batch(config.batch_size) for _ in range(k)]
        self.model.eval()
        rollout = collect(
            self.model,
            self.tokenizer,
            prompts,
            self.sampling,
            config.max_prompt_length,
            self.stop_ids,
            self.device,
            config.forward_batch_size or len(prompts),
            timer,
            with_values=config.critic,
            value_on_ref_features=config.value_on_ref_features,
        )
        rollout_seconds = time.perf_counter() - started
        batch, mask = rollout.batch, rollout.batch.response_mask
        if self.score_moments is not None:
            self.score_moments.update(self.accelerator.gather(batch.scores))  # the same moments on every process
        scaled = scale_scores(batch.scores, self.score_moments, config.use_score_norm, config.score_clip)
        scores = apply_missing_eos_penalty(scaled, rollout.ended, config.missing_eos_penalty, config.missing_eos_mode)
        scores = apply_empty_response_penalty(scores, rollout.empty, config.empty_response_penalty)
        kl = per_token_kl(batch.logprobs, batch.ref_logprobs, mask, config.kl_estimator)
        reward_kl_coef = 0.0 if config.kl_loss else self.kl_controller.value
        token_rewards = per_token_rewards(scores, kl, mask, reward_kl_coef)
        if config.critic:
            gae = compute_gae(token_rewards.rewards, batch.values, mask, config.gamma, config.lam)
            advantages = whiten(gae.advantages, mask) if config.whiten_advantages else gae.advantages
            rewards, returns = token_rewards.rewards, gae.returns
        else:
            estimator = config.advantage_estimator
            advantages, rewards = critic_free_advantages(scores, kl, mask, reward_kl_coef, k, estimator)
            returns = None
        batch = dataclasses.replace(batch, rewards=rewards, advantages=advantages, returns=returns)

        updates = self._mean_over_processes(self.update(batch, self.step_count >= config.critic_warmup_steps, timer))

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
            **self._uncertainty_metrics(),
            **self._scale_metrics(),
            "objective/kl": kl_per_response.mean().item(),
            "objective/kl_coef": self.kl_controller.value,
            "objective/non_score_reward": non_score.mean().item(),
            "objective/rlhf_reward": (penalised + non_score).mean().item(),
            "policy/entropy": masked_mean(*self._gather_tokens(rollout.entropy, mask)).item(),
            **self._critic_metrics(batch),
            **self._group_metrics(raw_scores),
            "response/length": lengths.mean().item(),
            "response/ended_fraction": gather(rollout.ended.float()).mean().item(),
            "response/empty_fraction": gather(rollout.empty.float()).mean().item(),
            **updates,
            "perf/rollout_seconds": rollout_seconds,
            **timer.metrics(),
            "perf/step_seconds": seconds,
            "perf/tokens_per_second": lengths.sum().item() / seconds,
        }
        self.history.append(metrics)
        rows = zip(prompts[: config.sample_rows], rollout.responses, batch.scores.tolist())
        self.samples += [[self.step_count, prompt[-1]["content"], response, score] for prompt, response, score in rows]
        return metrics

    def _gather_tokens(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """[batch, length] tensors of every process, padded to one length: statistics over the whole global batch."""
        if self.accelerator.num_processes == 1:
            return list(tensors)
        return [self.accelerator.gather(self.accelerator.pad_across_processes(t, dim=1)) for t in tensors]

    def _mean_over_processes(self, stats: dict[str, float]) -> dict[str, float]:
        """Each process's update statistics (losses, clip fractions) averaged over the processes, as DDP logs them."""
        if self.accelerator.num_processes == 1:
            return stats
        names = sorted(stats)
        local = torch.tensor([stats[name] for name in names], dtype=torch.float64, device=self.device)
        return dict(zip(names, self.accelerator.reduce(local, reduction="mean").tolist()))

    def _critic_metrics(self, batch) -> dict:
        if not self.config.critic:
            return {}
        values, returns, mask = self._gather_tokens(batch.values, batch.returns, batch.response_mask)
        return {"value/explained_variance": explained_variance(values, returns, mask).item()}

    def _group_metrics(self, scores: torch.Tensor) -> dict:
        """The mean spread of the reward-model scores among each prompt's k responses: with no spread, a group
        baseline leaves no signal (gathered groups stay whole: each process samples whole groups)."""
        k = self.config.rollouts_per_prompt
        if k < 2:
            return {}
        return {"reward/group_std": scores.reshape(-1, k).std(dim=1).mean().item()}

    def _uncertainty_metrics(self) -> dict:
        """The mean uncertainty of this step's answers under the reward head's posterior, with
        reward_uncertainty_coef > 0 (reward/mean is then the head's score minus the coefficient times it)."""
        take = getattr(self.model.workbench_heads[REWARD], "take", None)
        spread = take() if take is not None else None
        if spread is None:
            return {}
        return {"reward/uncertainty": self.accelerator.gather(spread.to(self.device)).mean().item()}

    def _scale_metrics(self) -> dict:
        if self.score_moments is None:
            return {}
        return {"reward/running_mean": self.score_moments.mean, "reward/running_std": self.score_moments.std}

    def update(self, batch, train_policy: bool = True, timer: PhaseTimer | None = None) -> dict:
        """ppo_epochs passes over shuffled minibatches; each minibatch is one optimizer step over its micro-batches.

        `train_policy` False (critic warm-up): only the value loss is computed and only the value tensors move.
        `timer` gets the seconds of the policy's and the value's forward + backward and of the optimizer steps.
        """
        config, model, timer = self.config, self.model, timer or PhaseTimer(self.device)
        micro_size = config.mini_batch_size // config.gradient_accumulation_steps
        stats: dict[str, list[float]] = defaultdict(list)
        stats["policy/frozen"].append(0.0 if train_policy else 1.0)
        model.train()  # dropout is off (disable_dropout); train mode only lets gradient checkpointing work
        for _ in range(config.ppo_epochs):
            for minibatch in batch.minibatches(config.mini_batch_size, self.minibatch_generator):
                self.optimizer.zero_grad(set_to_none=True)
                for start in range(0, len(minibatch), micro_size):
                    rows = torch.arange(start, start + micro_size, device=minibatch.query_ids.device)
                    part = minibatch.select(rows).trimmed()
                    inputs = (part.query_ids, part.query_mask, part.response_ids, part.response_mask)
                    if train_policy:
                        with adapters.use_adapter(model, POLICY), timer("policy_update"):
                            stop_ids = self.stop_ids if config.empty_response_loss_coef else None
                            logprobs, *first_stop = response_logprobs(
                                model, *inputs, config.temperature, first_stop_ids=stop_ids
                            )
                            policy = clipped_policy_loss(
                                logprobs, part.logprobs, part.advantages, part.response_mask, config.cliprange
                            )
                            loss = policy.loss
                            if stop_ids is not None:  # the expected share of empty answers, exactly
                                stop_probability = first_stop[1].mean()
                                loss = loss + config.empty_response_loss_coef * stop_probability
                                stats["policy/first_token_stop_probability"].append(stop_probability.item())
                            if config.kl_loss:  # GRPO: the KL to the reference as a loss term, not in the reward
                                kl = per_token_kl(logprobs, part.ref_logprobs, part.response_mask, config.kl_estimator)
                                kl_term = masked_mean(kl, part.response_mask)
                                loss = loss + self.kl_controller.value * kl_term
                                stats["policy/kl_loss"].append(kl_term.item())
                            self.accelerator.backward(loss / config.gradient_accumulation_steps)
                        stats["policy/loss"].append(policy.loss.item())
                        stats["policy/clip_fraction"].append(policy.clip_fraction.item())
                        stats["policy/approx_kl"].append(policy.approx_kl.item())
                    if not config.critic:
                        continue
                    # the value adapter's backward must run with it active (gradient checkpointing recomputes)
                    critic = nullcontext() if config.value_on_ref_features else adapters.use_adapter(model, VALUE)
                    with critic, timer("value_update"):
                        values = self._values(part)
                        value = clipped_value_loss(
                            values, part.values, part.returns, part.response_mask, config.cliprange_value
                        )
                        self.accelerator.backward(config.vf_coef * value.loss / config.gradient_accumulation_steps)
                    stats["value/loss"].append(value.loss.item())
                    stats["value/clip_fraction"].append(value.clip_fraction.item())
                with timer("optimizer"):
                    self._average_gradients()
                    for name, norm in self._clip_gradients().items():
                        stats[name].append(norm)
                    stats["learning_rate"].append(self.scheduler.get_last_lr()[0])
                    self.optimizer.step()
                    self.scheduler.step()
        model.eval()
        return {name: sum(values) / len(values) for name, values in stats.items()}

    def _values(self, part) -> torch.Tensor:
        """The critic's values for a micro-batch, with gradient: the value adapter's pass, or (value_model
        ref_features) the value head on the reference features the rollout kept, which trains only the head."""
        if self.config.value_on_ref_features:
            return heads.head_values(self.model, VALUE, part.value_features)
        return response_values(self.model, part.query_ids, part.query_mask, part.response_ids, part.response_mask)

    def _clip_gradients(self) -> dict[str, float]:
        """One global norm over policy and value (TRL 1.12's), or each on its own when value_max_grad_norm is set."""
        config, clip = self.config, torch.nn.utils.clip_grad_norm_
        if config.value_max_grad_norm is None:
            return {"grad_norm": clip(list(self.tensors.values()), config.max_grad_norm).item()}
        return {
            "grad_norm": clip(list(self.policy_tensors.values()), config.max_grad_norm).item(),
            "value/grad_norm": clip(list(self.value_tensors.values()), config.value_max_grad_norm).item(),
        }

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
            "lr_scheduler": self.scheduler.state_dict(),
            "score_moments": self.score_moments.state_dict() if self.score_moments is not None else None,
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
        self.scheduler.load_state_dict(state["lr_scheduler"])
        if self.score_moments is not None:
            if state.get("score_moments") is None:
                raise UserError(f"{checkpoint}: saved without use_score_scaling; resume with the recipe it ran with")
            self.score_moments.load_state_dict(state["score_moments"])
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
