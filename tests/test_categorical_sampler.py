"""The CPU's sampler (workbench/modeling/categorical_sampler.py): one uniform number per row, the inverse of the
cumulative distribution, draws exactly from the row's categorical distribution; tokens of zero probability never."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from workbench.modeling.categorical_sampler import CategoricalSampler, draw

ROWS = 20000


def test_draws_follow_each_rows_probabilities_and_never_a_zero_one():
    """Two distributions, unnormalised (the total need not be 1), zeros between and at both ends."""
    first = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    second = torch.tensor([0.0, 0.0, 2.0, 0.0, 1.0, 1.0])  # sums to 4
    torch.manual_seed(0)
    tokens = draw(torch.stack([first, second]).repeat(ROWS, 1))
    for row, probs in enumerate((first, second)):
        drawn = tokens[row::2]
        assert set(drawn.tolist()) == set(torch.nonzero(probs).flatten().tolist())
        support = torch.nonzero(probs).flatten()
        observed = [int((drawn == token).sum()) for token in support]
        expected = [float(probs[token] / probs.sum()) * ROWS for token in support]
        assert chisquare(observed, expected).pvalue > 1e-3


def test_the_seed_fixes_the_draws_and_a_row_without_mass_is_refused():
    probs = torch.softmax(torch.randn(8, 50), -1)
    torch.manual_seed(3)
    first = draw(probs)
    torch.manual_seed(3)
    assert torch.equal(draw(probs), first)
    with pytest.raises(ValueError, match="nan"):
        draw(torch.tensor([[0.5, float("nan")]]))
    with pytest.raises(ValueError, match="without positive mass"):
        draw(torch.zeros(1, 4))


def test_the_processor_leaves_the_drawn_token_the_only_finite_score():
    """Greedy decoding then takes the drawn token; top_k=2 keeps only the two largest logits to draw from."""
    scores = torch.tensor([[1.0, 3.0, 2.0, -1.0]]).repeat(400, 1)
    torch.manual_seed(0)
    out = CategoricalSampler(temperature=0.5, top_k=2)(torch.zeros(400, 1, dtype=torch.long), scores)
    assert torch.equal(torch.isfinite(out).sum(-1), torch.ones(400, dtype=torch.long))
    picked = out.argmax(-1)
    assert set(picked.tolist()) == {1, 2}
    share = float((picked == 1).float().mean())  # softmax([3, 2] / 0.5)[0] = 1 / (1 + e^-2) = 0.881
    assert abs(share - 0.881) < 0.05
    with pytest.raises(ValueError, match="temperature"):
        CategoricalSampler(temperature=0.0)
