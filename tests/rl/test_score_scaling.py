"""Running score moments and score scaling, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.rl.score_scaling import RunningMoments, scale_scores


def test_running_moments_over_batches_equal_the_moments_of_everything_seen():
    moments = RunningMoments()
    assert (moments.count, moments.mean, moments.std) == (0, 0.0, 1.0)  # nothing seen: no scaling
    moments.update(torch.tensor([1.0, 2.0, 3.0]))
    assert moments.mean == pytest.approx(2.0) and moments.std == pytest.approx(1.0)
    moments.update(torch.tensor([4.0, 5.0]))
    # 1..5: mean 3, sample variance (4 + 1 + 0 + 1 + 4) / 4 = 2.5
    assert moments.count == 5
    assert moments.mean == pytest.approx(3.0)
    assert moments.std == pytest.approx(math.sqrt(2.5))
    moments.update(torch.tensor([]))
    assert moments.count == 5


def test_running_moments_do_not_depend_on_how_the_scores_are_batched():
    values = torch.randn(37, generator=torch.Generator().manual_seed(0)) * 3 + 1
    one, many = RunningMoments(), RunningMoments()
    one.update(values)
    for chunk in values.split([1, 5, 2, 20, 9]):
        many.update(chunk)
    assert many.mean == pytest.approx(values.double().mean().item(), abs=1e-12)
    assert many.std == pytest.approx(values.double().std().item(), abs=1e-12)
    assert (one.mean, one.std) == pytest.approx((many.mean, many.std), abs=1e-12)


def test_running_moments_round_trip_through_a_checkpoint_state():
    moments = RunningMoments()
    moments.update(torch.tensor([0.5, -1.5, 4.0]))
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    assert restored.state_dict() == moments.state_dict()


def test_scale_scores_divides_by_the_running_std_subtracts_the_mean_and_clips():
    moments = RunningMoments()
    moments.update(torch.tensor([1.0, 3.0]))  # mean 2, std sqrt(2)
    scores = torch.tensor([1.0, 3.0, 10.0])
    root2 = math.sqrt(2.0)
    assert scale_scores(scores, moments, False, None).tolist() == pytest.approx([1 / root2, 3 / root2, 10 / root2])
    assert scale_scores(scores, moments, True, None).tolist() == pytest.approx([-1 / root2, 1 / root2, 8 / root2])
    assert scale_scores(scores, moments, True, 2.0).tolist() == pytest.approx([-1 / root2, 1 / root2, 2.0])
    assert scale_scores(scores, None, False, 2.5).tolist() == [1.0, 2.5, 2.5]  # clipping alone
    assert scale_scores(scores, None, False, None) is scores  # all off: untouched (TRL 1.12's behaviour)
