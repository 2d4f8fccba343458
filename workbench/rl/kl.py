"""Per-token KL penalty between the policy and the frozen reference, and the controllers that set its coefficient.

Estimators are John Schulman's, "Approximating KL Divergence" (http://joschu.net/blog/kl-approx.html). Tokens were
sampled from the policy, so each is an estimate of KL(policy || ref) from log r, where r = ref_prob / policy_prob:

    k1 = -log r            = logp - ref_logp             unbiased, high variance, can be negative per token
    k2 = 0.5 * (log r)^2                                 biased, always >= 0
    k3 = (r - 1) - log r                                 unbiased, always >= 0, lower variance

k1 and k3 are what TRL 1.12's PPOTrainer offers (`kl_estimator`, trl/experimental/ppo/ppo_trainer.py, step "4. compute
rewards"); k2 is OpenRLHF's (`compute_approx_kl`, openrlhf/models/utils.py).

The controllers are Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences" (arXiv:1909.08593,
section 2.2), as in TRL's and OpenRLHF's `AdaptiveKLController` / `FixedKLController`; ours add `state_dict()` /
`load_state_dict()` so that a resumed run continues with the exact coefficient.
"""

from typing import Any, Literal, Protocol

import torch

from workbench.rl.masked import zero_outside_mask

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def per_token_kl(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor | None = None,
    estimator: KLEstimator = "k1",
) -> torch.Tensor:
    """Per-token estimate of KL(policy || ref) for sampled tokens; 0 where `mask` is false.

    `logprobs` and `ref_logprobs` are the log-probabilities of the sampled response tokens, shape [batch, tokens].
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError(f"logprobs {tuple(logprobs.shape)} and ref_logprobs {tuple(ref_logprobs.shape)} differ")
    # float32 at least: in bf16 the difference of two log-probs near -10 keeps about two significant digits.
    compute_dtype = torch.promote_types(logprobs.dtype, torch.float32)
    log_ratio = ref_logprobs.to(compute_dtype) - logprobs.to(compute_dtype)  # log r, r = ref / policy
    if estimator == "k1":
        kl = -log_ratio
    elif estimator == "k2":
        kl = 0.5 * log_ratio**2
    elif estimator == "k3":
        kl = torch.expm1(log_ratio) - log_ratio  # expm1 keeps precision when r is close to 1
    else:
        raise ValueError(f"unknown KL estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    return kl if mask is None else zero_outside_mask(kl, mask)


class KLController(Protocol):
    """What the PPO loop needs from a KL coefficient schedule."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _check_kind(state: dict[str, Any], expected: str) -> None:
    # Resuming an adaptive run with a fixed controller (or the reverse) would silently change the experiment.
    if state.get("kind") != expected:
        raise ValueError(f"KL controller state is of kind {state.get('kind')!r}, this controller is {expected!r}")


class FixedKLController:
    """A constant KL coefficient: `update` does nothing."""

    kind = "fixed"

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Ignored: the coefficient stays where it was set."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        self.value = float(state["value"])


class AdaptiveKLController:
    """Ziegler et al. 2019's proportional controller steering the measured KL towards `target`.

        error = clip(current_kl / target - 1, -0.2, 0.2)
        value <- value * (1 + error * n_steps / horizon)

    `n_steps` is how many samples (episodes) the measured KL covers, `horizon` how many samples the controller takes
    to close most of the gap; the clip bounds the change per update at 20% x n_steps / horizon.
    """

    kind = "adaptive"
    max_proportional_error = 0.2

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be positive, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Move the coefficient after a rollout whose mean KL (summed over each response's tokens) was `current_kl`."""
        error = float(current_kl) / self.target - 1.0
        error = min(max(error, -self.max_proportional_error), self.max_proportional_error)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])
