import pytest
import torch

from workbench.rl import compute_gae, whiten

# Powers of two throughout, so every intermediate value is exact in float32.
GAMMA = 0.5
LAM = 0.5


def test_gae_three_tokens_by_hand():
    # gamma * lam = 0.25; the value after the last token is 0.
    # t=2: delta = 1 + 0.5*0    - 0.75 =  0.25   A2 = 0.25
    # t=1: delta = 0 + 0.5*0.75 - 0.25 =  0.125  A1 = 0.125  + 0.25*0.25   =  0.1875
    # t=0: delta = 0 + 0.5*0.25 - 0.5  = -0.375  A0 = -0.375 + 0.25*0.1875 = -0.328125
    # returns = A + V = [0.171875, 0.4375, 1.0]
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = compute_gae(rewards, values, mask, gamma=GAMMA, lam=LAM)
    assert advantages.tolist() == [[-0.328125, 0.1875, 0.25]]
    assert returns.tolist() == [[0.171875, 0.4375, 1.0]]


def test_gae_ignores_whatever_sits_in_padding():
    # The padded third token holds reward 9 and value 7; the episode must end at token 1 regardless.
    # t=1: delta = 2 + 0.5*0   - 0.5 =  1.5    A1 = 1.5
    # t=0: delta = 0 + 0.5*0.5 - 1   = -0.75   A0 = -0.75 + 0.25*1.5 = -0.375
    # returns = [-0.375 + 1, 1.5 + 0.5, 0] = [0.625, 2.0, 0]
    rewards = torch.tensor([[0.0, 2.0, 9.0]])
    values = torch.tensor([[1.0, 0.5, 7.0]])
    mask = torch.tensor([[True, True, False]])
    advantages, returns = compute_gae(rewards, values, mask, gamma=GAMMA, lam=LAM)
    assert advantages.tolist() == [[-0.375, 1.5, 0.0]]
    assert returns.tolist() == [[0.625, 2.0, 0.0]]


def test_gae_with_gamma_and_lambda_one_is_monte_carlo():
    # lam = gamma = 1: A_t = (sum of rewards from t on) - V_t = 1 - V_t; every return is the final reward, 1.
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25, 0.75]])
    advantages, returns = compute_gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=1.0)
    assert advantages.tolist() == [[0.5, 0.75, 0.25]]
    assert returns.tolist() == [[1.0, 1.0, 1.0]]


def test_gae_rejects_left_padding():
    ones = torch.ones(1, 3)
    with pytest.raises(ValueError, match="right-padded"):
        compute_gae(ones, ones, torch.tensor([[0, 1, 1]]))


def test_whiten_uses_unbiased_masked_statistics():
    # Unmasked 1, 2, 3, 4: mean 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, unbiased variance 5/3.
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    scale = (5.0 / 3.0) ** -0.5
    expected = torch.tensor([[-1.5 * scale, -0.5 * scale, 0.5 * scale], [1.5 * scale, 0.0, 0.0]])
    torch.testing.assert_close(whiten(values, mask), expected)
    # shift_mean=False keeps the mean, 2.5, on the unmasked tokens.
    torch.testing.assert_close(whiten(values, mask, shift_mean=False), (expected + 2.5) * mask)


def test_whiten_needs_two_tokens():
    with pytest.raises(ValueError, match="at least 2"):
        whiten(torch.tensor([[1.0, 2.0]]), torch.tensor([[True, False]]))
