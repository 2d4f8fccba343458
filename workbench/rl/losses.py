"""PPO's clipped policy and value losses, entropy, and explained variance, averaged over response tokens.

The policy loss is Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (arXiv:1707.06347), eq. 7; both
losses and their clip fractions are computed as in TRL 1.12's PPOTrainer (trl/experimental/ppo/ppo_trainer.py, the
minibatch loop) and OpenRLHF's `PolicyLoss` / `ValueLoss` (openrlhf/models/loss.py): per-token terms, then one mean
over all unmasked tokens of the minibatch.
"""

from typing import NamedTuple

import torch

from workbench.rl.masked import masked_mean, masked_var

__all__ = [
    "PolicyLossOutput",
    "ValueLossOutput",
    "clipped_policy_loss",
    "clipped_value_loss",
    "entropy_from_logits",
    "explained_variance",
    "masked_mean",
    "masked_var",
    "per_token_entropy",
]


class PolicyLossOutput(NamedTuple):
    loss: torch.Tensor
    clip_fraction: torch.Tensor
    approx_kl: torch.Tensor


class ValueLossOutput(NamedTuple):
    loss: torch.Tensor
    clip_fraction: torch.Tensor


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float = 0.2,
) -> PolicyLossOutput:
    """PPO-clip: mean over tokens of max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)), ratio = exp(logp - old).

    Returns the loss (differentiable through `logprobs`), the fraction of tokens where the clipped term is the one
    used (TRL's `pg_clipfrac`), and an approximate KL(old || new) for logging, estimated with k3:
    (ratio - 1) - log ratio, masked. (TRL logs 0.5 * (logp - old)^2, the k2 estimator, averaged over padding too;
    k3 is unbiased and its masked mean does not shrink with padding.)
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return PolicyLossOutput(loss, clip_fraction, approx_kl)


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> ValueLossOutput:
    """0.5 * mean over tokens of max((v - R)^2, (v_clipped - R)^2), v_clipped = old + clip(v - old, -c, c).

    TRL's `cliprange_value` (default 0.2): the value head is penalised for moving further than c from its rollout
    prediction when that also moves it away from the return. The clip fraction counts tokens where the clipped
    error is the larger one (TRL's `vf_clipfrac`).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        clip_fraction = masked_mean((clipped_error > unclipped_error).float(), mask)
    return ValueLossOutput(loss, clip_fraction)


def per_token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy in nats of softmax(logits / temperature) at each position: logits [..., vocab] -> [...].

    The [..., vocab] temporaries are what an RL step's scoring pass peaks on (a chunk of 1024 rows of a 128k
    vocabulary is 0.5 GB per float32 copy), so at most two float32 copies and a boolean mask are alive besides the
    input: log p, then p * log p built in place (bench/entropy_memory.py measures it)."""
    # float32 at least: softmax over a 50k vocabulary in bf16 loses most of the tail mass.
    scaled = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        scaled = scaled / temperature
    log_p = scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)
    del scaled  # freed here when it was a copy
    plogp = log_p.exp().mul_(log_p)
    # A -inf logit (a masked-out token) has p = 0 and log p = -inf; p * log p is NaN there, its limit is 0. A row of
    # NaN logits stays NaN.
    plogp.masked_fill_(torch.isneginf(log_p), 0.0)
    return -plogp.sum(dim=-1)


def entropy_from_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean per-token entropy over the unmasked positions: logits [batch, tokens, vocab], mask [batch, tokens]."""
    return masked_mean(per_token_entropy(logits), mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var[returns - values] / Var[returns] over unmasked tokens: 1 is a perfect value head, 0 predicts the mean.

    NaN when the returns have no variance (nothing to explain). Biased variances: the Bessel factor would cancel.
    """
    residual_variance = masked_var(returns - values, mask, unbiased=False)
    return_variance = masked_var(returns, mask, unbiased=False)
    # torch.where instead of an `if`: comparing a tensor in Python would force a device sync.
    nan = torch.full_like(return_variance, float("nan"))
    return torch.where(return_variance == 0, nan, 1.0 - residual_variance / return_variance)
