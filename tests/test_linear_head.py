"""The reward head fitted alone on frozen features (workbench/modeling/linear_head.py)."""

from __future__ import annotations

import pytest
import torch

from workbench.modeling import linear_head
from workbench.modeling.length_term import TOKENS_PER_UNIT


def labeled(n: int = 400, seed: int = 0):
    """Answers with a quality q and a length L (tokens); features [q, L / 10 + small noise, pure noise]. The labelers
    prefer quality and shorter answers: chosen is the one with the larger q - 0.5 * L / 10."""
    generator = torch.Generator().manual_seed(seed)
    quality = torch.randn(n, generator=generator)
    lengths = torch.randint(5, 60, (n,), generator=generator)
    features = torch.stack(
        [
            quality,
            lengths / TOKENS_PER_UNIT + 0.05 * torch.randn(n, generator=generator),
            torch.randn(n, generator=generator),
        ],
        dim=1,
    )
    first, second = torch.arange(0, n, 2), torch.arange(1, n, 2)
    utility = quality - 0.5 * lengths / TOKENS_PER_UNIT
    first_wins = utility[first] > utility[second]
    pairs = torch.stack([torch.where(first_wins, first, second), torch.where(first_wins, second, first)], dim=1)
    return features, pairs, lengths


def test_the_fitted_head_orders_the_pairs_by_what_the_labelers_prefer():
    features, pairs, _ = labeled()
    result = linear_head.fit(features, pairs, l2=1e-3)
    head = result["weight"]
    scores = features @ head
    assert (scores[pairs[:, 0]] > scores[pairs[:, 1]]).float().mean() > 0.95
    assert result["train_accuracy"] > 0.95 and result["pairs"] == len(pairs)
    assert head[0] > 0 and head[1] < 0  # quality up, length down: without a length term the head takes length
    assert abs(head[2]) < 0.1 * head[0]  # noise ignored
    assert result["length_weight"] is None
    # the fit's coordinates: differences / scale, each feature's spread over the pairs' differences
    differences = (features[pairs[:, 0]] - features[pairs[:, 1]]).double()
    assert torch.allclose(result["scale"], differences.std(dim=0))


def test_with_a_length_term_the_length_preference_goes_to_its_weight_not_the_head():
    """ODIN's split (workbench/modeling/length_term.py) by the fit: the unpenalised length weight explains the
    preference for shorter answers, the L2-penalised head keeps quality alone."""
    features, pairs, lengths = labeled()
    without = linear_head.fit(features, pairs, l2=1e-2)
    result = linear_head.fit(features, pairs, l2=1e-2, lengths=lengths)
    head = result["weight"]
    assert result["length_weight"] < 0
    assert abs(head[1]) < 0.25 * abs(without["weight"][1])  # the head's length weight mostly gone to the term
    assert head[0] > 0
    margins = (features[pairs[:, 0]] - features[pairs[:, 1]]) @ head + result["length_weight"] * (
        lengths[pairs[:, 0]] - lengths[pairs[:, 1]]
    ) / TOKENS_PER_UNIT
    assert (margins > 0).float().mean() > 0.95


def test_a_stronger_penalty_gives_a_smaller_head():
    features, pairs, _ = labeled()
    small, large = (linear_head.fit(features, pairs, l2=l2)["weight"].norm() for l2 in (10.0, 1e-3))
    assert small < large


def test_the_penalty_must_be_positive():
    features, pairs, _ = labeled(8)
    with pytest.raises(ValueError, match="l2 must be > 0"):
        linear_head.fit(features, pairs, l2=0.0)
