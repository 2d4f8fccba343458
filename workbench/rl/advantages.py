"""Critic-free advantage estimators: RLOO, GRPO and REINFORCE++, next to PPO's GAE (workbench/rl/gae.py).

Each rollout samples `k` responses per prompt, in consecutive rows (prompt 0's k rows first). The sequence score of
each response is shaped against its group (the other responses to the same prompt), then spread over the tokens like
PPO's: the shaped score on the last token, the KL penalty on every token (unless the KL is a loss term, GRPO-style),
and each token's advantage is the reward-to-go from it (REINFORCE: no value, gamma 1). Formulas follow OpenRLHF's
`compute_advantages_and_returns` (openrlhf/trainer/ppo_utils/experience_maker.py) and its `advantage_estimator`
names, checked against the papers:

    rloo                  A = r - mean of the other k - 1 scores        Ahmadian et al. 2024 (arXiv:2402.14740); TRL's
                                                                        RLOOTrainer's leave-one-out baseline
    grpo                  A = (r - group mean) / (group std + 1e-9)     Shao et al. 2024 (arXiv:2402.03300), eq. 3;
                                                                        OpenRLHF's `group_norm` (unbiased std)
    reinforce++           A = r, then whitened over the whole batch     Hu 2025 (arXiv:2501.03262); OpenRLHF's
                                                                        `reinforce`
    reinforce++_baseline  A = r - group mean, then whitened over batch  the same paper's k > 1 variant; OpenRLHF's
                                                                        `reinforce_baseline`

Whitening (batch mean 0, std 1 over response tokens: gae.whiten, TRL's masked_whiten with the unbiased variance where
OpenRLHF divides by n) is part of the REINFORCE++ estimators and of GAE (its recipe key `whiten_advantages`); RLOO
and GRPO use their group-shaped scores as they are, as OpenRLHF does.
"""

from __future__ import annotations

import torch

from workbench.rl.gae import compute_gae, whiten
from workbench.rl.rewards import per_token_rewards

ESTIMATORS: tuple[str, ...] = ("gae", "rloo", "grpo", "reinforce++", "reinforce++_baseline")
GROUPED: tuple[str, ...] = ("rloo", "grpo", "reinforce++_baseline")  # need k >= 2 responses per prompt
WHITENED: tuple[str, ...] = ("reinforce++", "reinforce++_baseline")


def group_shaped_scores(scores: torch.Tensor, group_size: int, estimator: str) -> torch.Tensor:
    """Each response's score [batch] shaped against its group of `group_size` consecutive rows."""
    if estimator not in ESTIMATORS[1:]:
        raise ValueError(f"unknown critic-free estimator {estimator!r}; expected one of {ESTIMATORS[1:]}")
    if group_size < 1 or scores.shape[0] % group_size:
        raise ValueError(f"{scores.shape[0]} scores do not split into groups of {group_size}")
    if estimator in GROUPED and group_size < 2:
        raise ValueError(f"{estimator} needs at least 2 responses per prompt; got {group_size}")
    groups = scores.float().reshape(-1, group_size)
    if estimator == "rloo":
        shaped = groups - (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    elif estimator == "grpo":
        shaped = (groups - groups.mean(dim=1, keepdim=True)) / (groups.std(dim=1, keepdim=True) + 1e-9)
    elif estimator == "reinforce++_baseline":
        shaped = groups - groups.mean(dim=1, keepdim=True)
    else:  # reinforce++: no baseline before the batch whitening
        shaped = groups
    return shaped.reshape(-1)


def reward_to_go(rewards: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """sum_{s >= t} gamma^(s - t) r_s for every response token t, 0 on padding.

    This is GAE with lambda = 1 and every value 0 (delta_t = r_t, A_t = r_t + gamma A_{t+1}), so it reuses
    compute_gae rather than a second reverse loop.
    """
    return compute_gae(rewards, torch.zeros_like(rewards), mask, gamma=gamma, lam=1.0).advantages


def critic_free_advantages(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    group_size: int,
    estimator: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token (advantages, rewards) for a critic-free `estimator`.

    `scores` [batch] are the sequence scores after scaling and the missing-EOS penalty; `kl` [batch, tokens] the
    per-token KL to the reference (pass kl_coef 0 when the KL is a loss term instead); `mask` the response tokens.
    """
    shaped = group_shaped_scores(scores, group_size, estimator)
    rewards = per_token_rewards(shaped, kl, mask, kl_coef).rewards
    advantages = reward_to_go(rewards, mask)
    if estimator in WHITENED:
        advantages = whiten(advantages, mask)
    return advantages, rewards
