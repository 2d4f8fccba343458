"""Reward-model scores put on a steady scale before PPO sees them: running moments, scaling, normalisation, clipping.

TRL's PPOTrainer before 0.12 had exactly these options (`use_score_scaling`, `use_score_norm`, `score_clip`, with
`RunningMoments` in trl/trainer/utils.py); OpenRLHF has `--normalize_reward` and `--reward_clip_range`. TRL 1.12's
PPOTrainer, which ours otherwise follows step for step, has none of them; all three default to off here, which keeps
that equivalence.

Why they matter: a reward model's scores have an arbitrary offset and scale (its loss only sees differences), so a
fixed `kl_coef` means a different trade-off for every reward model, and a few extreme scores dominate the update.
Dividing by the running standard deviation makes `kl_coef` mean "nats per reward standard deviation"; subtracting
the running mean centres the score-token reward; clipping bounds what one answer can do.
"""

from __future__ import annotations

import torch


class RunningMoments:
    """Mean and standard deviation of every score seen so far, updated a batch at a time (Chan et al.'s parallel
    combination of means and sums of squared deviations: exact, in any batch sizes). Part of the PPO checkpoint."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1), 1.0 until there are two scores."""
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 1.0

    def update(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean().item()
        batch_m2 = ((values - batch_mean) ** 2).sum().item()
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean += delta * n / total
        self.m2 += batch_m2 + delta**2 * self.count * n / total
        self.count = total

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


def scale_scores(
    scores: torch.Tensor, moments: RunningMoments | None, subtract_mean: bool, clip: float | None
) -> torch.Tensor:
    """scores / running std (minus the running mean first if `subtract_mean`), then clipped to [-clip, clip].

    `moments` None leaves the scale alone (clipping still applies). Update `moments` with the batch first, as TRL did,
    so the first batch is scaled by its own spread.
    """
    out = scores
    if moments is not None:
        eps = torch.finfo(scores.dtype).eps
        if subtract_mean:
            out = out - moments.mean
        out = out / (moments.std + eps)
    if clip is not None:
        out = out.clamp(-clip, clip)
    return out
