"""Generalized Advantage Estimation over response tokens, and advantage whitening.

GAE is Schulman et al. 2015, "High-Dimensional Continuous Control Using Generalized Advantage Estimation"
(arXiv:1506.02438), eq. 16, in the reverse recursion that TRL 1.12's PPOTrainer uses (trl/experimental/ppo/
ppo_trainer.py, step "6. compute advantages and returns"):

    delta_t = r_t + gamma * V_{t+1} - V_t           with V_{t+1} = 0 after the last response token
    A_t     = delta_t + gamma * lam * A_{t+1}
    R_t     = A_t + V_t                              (the value target)

Each response token is an action; the episode ends at the response's last token (right-padded batch, `mask` true on
response tokens). TRL gets V_{t+1} = 0 by zero-filling padded values before the loop; here the mask does it, so the
caller cannot forget.
"""

from typing import NamedTuple

import torch

from workbench.rl.masked import masked_mean, masked_var, zero_outside_mask


class AdvantagesAndReturns(NamedTuple):
    advantages: torch.Tensor
    returns: torch.Tensor


def check_right_padded(mask: torch.Tensor) -> None:
    """Raise if some row of `mask` turns back on after turning off (left padding or holes would break GAE)."""
    as_int = mask.long()
    if (as_int[:, 1:] > as_int[:, :-1]).any():
        raise ValueError("response mask must be right-padded: ones first, then zeros, in every row")


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> AdvantagesAndReturns:
    """Advantages and returns for per-token `rewards` and `values`, all [batch, tokens]; 0 where `mask` is false.

    Defaults gamma=1, lam=0.95 are TRL's PPOConfig defaults.
    """
    if rewards.shape != values.shape or rewards.shape != mask.shape:
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask {tuple(mask.shape)} must match"
        )
    check_right_padded(mask)
    rewards = zero_outside_mask(rewards, mask)
    values = zero_outside_mask(values, mask)

    num_tokens = rewards.shape[1]
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages_reversed = []
    for t in reversed(range(num_tokens)):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages_reversed.append(next_advantage)
        next_value = values[:, t]
    advantages = zero_outside_mask(torch.stack(advantages_reversed[::-1], dim=1), mask)
    returns = zero_outside_mask(advantages + values, mask)
    return AdvantagesAndReturns(advantages, returns)


def whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `values` to zero mean and unit variance over the unmasked tokens of the whole batch; 0 elsewhere.

    TRL 1.12's `masked_whiten`: (x - mean) / sqrt(var + eps) with the unbiased masked variance; `shift_mean=False`
    adds the mean back (scale only, used for rewards). Unlike TRL, padded positions come back as 0 here rather than
    needing a separate masked_fill.
    """
    mean = masked_mean(values, mask)
    variance = masked_var(values, mask, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return zero_outside_mask(whitened, mask)
