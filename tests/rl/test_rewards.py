import pytest
import torch

from workbench.rl import (
    apply_empty_response_penalty,
    apply_missing_eos_penalty,
    first_true_indices,
    has_stop_token,
    per_token_rewards,
    truncate_at_stop_tokens,
)

EOS = 2
PAD = 0


def test_first_true_indices():
    bools = torch.tensor([[False, True, True], [False, False, False], [True, False, False]])
    assert first_true_indices(bools).tolist() == [1, 3, 0]  # 3 = row length: no true value


def test_truncation_keeps_the_first_stop_token_and_pads_after():
    responses = torch.tensor([[5, EOS, 7, EOS], [5, 6, 7, 8], [EOS, 9, 9, 9]])
    ids, mask = truncate_at_stop_tokens(responses, EOS, PAD)
    assert ids.tolist() == [[5, EOS, PAD, PAD], [5, 6, 7, 8], [EOS, PAD, PAD, PAD]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True], [True, False, False, False]]


def test_truncation_with_several_stop_tokens():
    end_of_turn = 3
    ids, mask = truncate_at_stop_tokens(torch.tensor([[5, end_of_turn, EOS, 1]]), [EOS, end_of_turn], PAD)
    assert ids.tolist() == [[5, end_of_turn, PAD, PAD]]
    assert mask.tolist() == [[True, True, False, False]]


def test_truncation_when_pad_is_eos():
    # generate() fills finished rows with pad; when pad == EOS the mask must still include exactly one EOS.
    ids, mask = truncate_at_stop_tokens(torch.tensor([[4, EOS, EOS, EOS], [4, 4, 4, 4]]), EOS, pad_id=EOS)
    assert ids.tolist() == [[4, EOS, EOS, EOS], [4, 4, 4, 4]]
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]


def test_missing_eos_detection_and_penalty():
    responses = torch.tensor([[5, EOS, PAD], [5, 6, 7], [EOS, PAD, PAD]])
    ended = has_stop_token(responses, EOS)
    assert ended.tolist() == [True, False, True]
    scores = torch.tensor([1.0, 2.0, -0.5])
    # subtract (TRL): 2 - 1 = 1 for the unfinished one; replace: -1; others unchanged
    assert apply_missing_eos_penalty(scores, ended, 1.0).tolist() == [1.0, 1.0, -0.5]
    assert apply_missing_eos_penalty(scores, ended, 1.0, mode="replace").tolist() == [1.0, -1.0, -0.5]
    assert apply_missing_eos_penalty(scores, ended, None).tolist() == [1.0, 2.0, -0.5]
    with pytest.raises(ValueError, match="mode"):
        apply_missing_eos_penalty(scores, ended, 1.0, mode="halve")


def test_an_empty_response_scores_minus_the_penalty():
    scores = torch.tensor([1.0, 3.5, -0.5])
    empty = torch.tensor([False, True, False])
    assert apply_empty_response_penalty(scores, empty, 3.0).tolist() == [1.0, -3.0, -0.5]
    assert apply_empty_response_penalty(scores, empty, None).tolist() == [1.0, 3.5, -0.5]


def test_rewards_put_the_score_on_the_last_response_token():
    # kl_coef 0.5: penalty = -0.5 * kl = [[-0.05, -0.1, -0.15], [-0.2, -0.25, 0 (pad)]]
    # row 0 ends at token 2: -0.15 + 1.0 = 0.85; row 1 ends at token 1: -0.25 + 2.0 = 1.75
    scores = torch.tensor([1.0, 2.0])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 99.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rewards, kl_penalty = per_token_rewards(scores, kl, mask, kl_coef=0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, -0.1, 0.85], [-0.2, 1.75, 0.0]]))
    torch.testing.assert_close(kl_penalty, torch.tensor([[-0.05, -0.1, -0.15], [-0.2, -0.25, 0.0]]))


def test_rewards_refuse_an_empty_response_and_bad_shapes():
    with pytest.raises(ValueError, match="at least one token"):
        per_token_rewards(torch.zeros(1), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.bool), kl_coef=0.1)
    with pytest.raises(ValueError, match="must be"):
        per_token_rewards(torch.zeros(2), torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), kl_coef=0.1)
