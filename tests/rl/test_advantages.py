"""The critic-free estimators on hand-computed values (workbench/rl/advantages.py; formulas of OpenRLHF's
compute_advantages_and_returns, openrlhf/trainer/ppo_utils/experience_maker.py). Every number is exact in float32."""

import pytest
import torch

from workbench.rl import whiten
from workbench.rl.advantages import critic_free_advantages, group_shaped_scores, reward_to_go

# two prompts, three responses each, in consecutive rows
SCORES = torch.tensor([0.0, 3.0, 6.0, 2.0, 2.0, 2.0])


def test_rloo_subtracts_the_mean_of_the_other_responses():
    # prompt 0: sum 9; baselines (9-0)/2, (9-3)/2, (9-6)/2 = 4.5, 3, 1.5. Prompt 1: all equal, nothing to learn.
    assert group_shaped_scores(SCORES, 3, "rloo").tolist() == [-4.5, 0.0, 4.5, 0.0, 0.0, 0.0]
    # the RLOO paper's identity: leave-one-out = k / (k - 1) x (r - group mean)
    groups = torch.tensor([1.0, 2.0, 4.0, 9.0])
    assert group_shaped_scores(groups, 4, "rloo") == pytest.approx((4 / 3) * (groups - groups.mean()))


def test_grpo_normalises_by_the_group_mean_and_unbiased_std():
    # prompt 0: mean 3, std sqrt((9 + 0 + 9) / 2) = 3; prompt 1: std 0, so 0 / (0 + 1e-9) = 0, not NaN
    assert group_shaped_scores(SCORES, 3, "grpo").tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0])


def test_reinforce_plus_plus_baseline_subtracts_the_group_mean_and_plain_keeps_the_score():
    assert group_shaped_scores(SCORES, 3, "reinforce++_baseline").tolist() == [-3.0, 0.0, 3.0, 0.0, 0.0, 0.0]
    assert group_shaped_scores(SCORES, 1, "reinforce++").tolist() == SCORES.tolist()


def test_groups_are_checked():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        group_shaped_scores(SCORES, 4, "rloo")
    with pytest.raises(ValueError, match="rloo needs at least 2 responses per prompt"):
        group_shaped_scores(SCORES, 1, "rloo")
    with pytest.raises(ValueError, match="unknown critic-free estimator 'gae'"):
        group_shaped_scores(SCORES, 3, "gae")


def test_reward_to_go_sums_the_rewards_from_each_token_on_and_ignores_padding():
    rewards = torch.tensor([[0.5, 0.25, 1.0], [1.0, 2.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert reward_to_go(rewards, mask).tolist() == [[1.75, 1.25, 1.0], [3.0, 2.0, 0.0]]
    assert reward_to_go(rewards, mask, gamma=0.5).tolist() == [[0.875, 0.75, 1.0], [2.0, 2.0, 0.0]]


def test_rloo_advantages_carry_the_shaped_score_and_the_future_kl_penalty():
    # k = 2: scores [1, 3 | 5, 5] -> RLOO [-2, 2 | 0, 0]. KL 1 on every token, coefficient 0.5: -0.5 per token.
    scores = torch.tensor([1.0, 3.0, 5.0, 5.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    kl = torch.ones(4, 3)
    advantages, rewards = critic_free_advantages(scores, kl, mask, 0.5, 2, "rloo")
    assert rewards.tolist() == [[-0.5, -2.5, 0.0], [1.5, 0.0, 0.0], [-0.5, -0.5, -0.5], [-0.5, -0.5, 0.0]]
    assert advantages.tolist() == [[-3.0, -2.5, 0.0], [1.5, 0.0, 0.0], [-1.5, -1.0, -0.5], [-1.0, -0.5, 0.0]]
    # without the KL in the reward (kl_loss: the KL is a loss term) every token carries the shaped score alone
    advantages, _ = critic_free_advantages(scores, kl, mask, 0.0, 2, "rloo")
    assert advantages.tolist() == [[-2.0, -2.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]


def test_reinforce_plus_plus_whitens_over_the_batch_and_rloo_does_not():
    scores = torch.tensor([1.0, 3.0, 5.0, 5.0])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 1, 0]], dtype=torch.bool)
    kl = torch.zeros(4, 3)
    advantages, _ = critic_free_advantages(scores, kl, mask, 0.1, 2, "reinforce++_baseline")
    # group-mean shaped [-1, 1, 0, 0] on every token of each response, then whitened over the 8 response tokens
    raw = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(advantages, whiten(raw, mask))
    assert advantages[mask].mean().abs() < 1e-6 and advantages[mask].std() == pytest.approx(1.0)
    plain, _ = critic_free_advantages(scores, kl, mask, 0.1, 1, "reinforce++")
    assert plain[mask].mean().abs() < 1e-6  # the whitening is its only baseline
    rloo, _ = critic_free_advantages(scores, kl, mask, 0.1, 2, "rloo")
    assert rloo[0, 0] == -2.0  # RLOO's shaped scores are used as they are
