"""Statistics over the response tokens of a right-padded batch: the mask says which positions count.

Semantics follow TRL 1.12's `masked_mean` / `masked_var` (trl/experimental/ppo/ppo_trainer.py): one mean over every
unmasked token in the batch (token-level averaging), and an unbiased variance (Bessel's correction on the token count).
"""

import torch


def zero_outside_mask(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`values` where `mask` is true, 0 elsewhere."""
    # torch.where rather than values * mask: padded positions may hold inf or NaN (e.g. logits of a pad token),
    # and 0 * inf is NaN, which would poison the sum.
    return torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is true, over all positions (`dim=None`) or along `dim`."""
    kept = zero_outside_mask(values, mask)
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is true; an all-false mask gives 0, not NaN.

    The count is clamped to 1 instead of checked, because checking would force a device sync on every loss call.
    """
    count = mask.bool().sum() if dim is None else mask.bool().sum(dim=dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1).to(values.dtype)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` where `mask` is true, over all unmasked positions of the batch.

    Unbiased (divides by n - 1) like TRL's `masked_var`; raises when fewer than two tokens count, since the
    correction n / (n - 1) is then undefined (TRL hits the same wall with `mini_batch_size=1`).
    """
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if not unbiased:
        return variance
    count = int(mask.bool().sum())
    if count < 2:
        raise ValueError(f"an unbiased variance needs at least 2 unmasked values, the mask has {count}")
    return variance * (count / (count - 1))
