import math

import torch

from workbench.rl import (
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    masked_mean,
    per_token_entropy,
)

LN2 = math.log(2.0)
LN1_5 = math.log(1.5)


def policy_case():
    # Five real tokens and one pad, cliprange 0.2, so ratios are clipped into [0.8, 1.2]:
    #   a: A=+1, ratio 1.5  -A*r = -1.5, -A*clip = -1.2 -> max -1.2  clipped (moved too far with the advantage)
    #   b: A=-1, ratio 0.5  -A*r =  0.5, -A*clip =  0.8 -> max  0.8  clipped (moved too far, other side)
    #   c: A=+1, ratio 0.5  -A*r = -0.5, -A*clip = -0.8 -> max -0.5  not clipped (moved against the advantage)
    #   d: A=-1, ratio 1.5  -A*r =  1.5, -A*clip =  1.2 -> max  1.5  not clipped
    #   e: A=+2, ratio 1    both -2                     -> max -2.0  not clipped
    # loss = (-1.2 + 0.8 - 0.5 + 1.5 - 2.0) / 5 = -1.4 / 5 = -0.28; clip fraction 2/5
    old_logprobs = torch.full((2, 3), -1.0)
    log_ratio = torch.tensor([[LN1_5, -LN2, -LN2], [LN1_5, 0.0, 50.0]])
    logprobs = (old_logprobs + log_ratio).requires_grad_()
    advantages = torch.tensor([[1.0, -1.0, 1.0], [-1.0, 2.0, 1e6]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return logprobs, old_logprobs, advantages, mask


def test_policy_loss_clips_on_both_sides():
    logprobs, old_logprobs, advantages, mask = policy_case()
    output = clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2)
    torch.testing.assert_close(output.loss, torch.tensor(-0.28))
    torch.testing.assert_close(output.clip_fraction, torch.tensor(0.4))
    # approx KL is k3 = (r - 1) - ln r: ratio 1.5 -> 0.5 - ln1.5, ratio 0.5 -> -0.5 + ln2, ratio 1 -> 0
    # mean = (2*(0.5 - ln1.5) + 2*(ln2 - 0.5) + 0) / 5 = 2*(ln2 - ln1.5) / 5
    torch.testing.assert_close(output.approx_kl, torch.tensor(2 * (LN2 - LN1_5) / 5))


def test_policy_gradient_is_zero_on_clipped_tokens():
    logprobs, old_logprobs, advantages, mask = policy_case()
    clipped_policy_loss(logprobs, old_logprobs, advantages, mask, cliprange=0.2).loss.backward()
    # Unclipped token: d(-A*r/N)/d logp = -A*r/N with N = 5:
    #   c: -1*0.5/5 = -0.1;  d: +1*1.5/5 = 0.3;  e: -2*1/5 = -0.4;  a, b (clipped) and the pad: 0
    torch.testing.assert_close(logprobs.grad, torch.tensor([[0.0, 0.0, -0.1], [0.3, -0.4, 0.0]]))


def test_value_loss_clips_on_both_sides():
    # cliprange_value 0.2: the clipped prediction stays within old +- 0.2.
    #   1: old 0, new  1,     R  1: (1-1)^2 = 0,         (0.2-1)^2  = 0.64     -> 0.64      clipped
    #   2: old 0, new  1,     R  2: (1-2)^2 = 1,         (0.2-2)^2  = 3.24     -> 3.24      clipped
    #   3: old 0, new -1,     R .5: (-1.5)^2 = 2.25,     (-0.7)^2   = 0.49     -> 2.25      not clipped
    #   4: old 1, new  1.125, R  3: both (1.875)^2 = 3.515625                  -> 3.515625  not clipped
    #   5: old 0, new -1,     R -3: (2)^2 = 4,           (2.8)^2    = 7.84     -> 7.84      clipped
    # loss = 0.5 * (0.64 + 3.24 + 2.25 + 3.515625 + 7.84) / 5 = 0.5 * 17.485625 / 5 = 1.7485625; fraction 3/5
    old_values = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    values = torch.tensor([[1.0, 1.0, -1.0], [1.125, -1.0, 42.0]])
    returns = torch.tensor([[1.0, 2.0, 0.5], [3.0, -3.0, -42.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    output = clipped_value_loss(values, old_values, returns, mask, cliprange_value=0.2)
    torch.testing.assert_close(output.loss, torch.tensor(1.7485625))
    torch.testing.assert_close(output.clip_fraction, torch.tensor(0.6))


def test_entropy_by_hand():
    # uniform over 4 -> ln4 = 2 ln2; (1/2, 1/4, 1/4, 0) -> 1/2 ln2 + 2 * 1/4 ln4 = 1.5 ln2;
    # one-hot with -inf elsewhere -> 0 (not NaN); the padded position holds NaN logits and must not matter.
    ninf = -math.inf
    logits = torch.tensor(
        [
            [[0.0, 0.0, 0.0, 0.0], [math.log(0.5), math.log(0.25), math.log(0.25), ninf]],
            [[3.0, ninf, ninf, ninf], [math.nan] * 4],
        ]
    )
    mask = torch.tensor([[True, True], [True, False]])
    torch.testing.assert_close(per_token_entropy(logits[:, :1]), torch.tensor([[2 * LN2], [0.0]]))
    # mean over three tokens: (2 ln2 + 1.5 ln2 + 0) / 3
    torch.testing.assert_close(entropy_from_logits(logits, mask), torch.tensor(3.5 * LN2 / 3))


def test_explained_variance():
    returns = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    mask = torch.ones(2, 2, dtype=torch.bool)
    assert explained_variance(returns, returns, mask).item() == 1.0
    assert explained_variance(torch.full((2, 2), 2.5), returns, mask).item() == 0.0
    # residual (1, 0, 0, 0): mean 0.25, variance (0.5625 + 3 * 0.0625) / 4 = 0.1875; Var[returns] = 1.25
    # 1 - 0.1875 / 1.25 = 0.85
    values = torch.tensor([[0.0, 2.0], [3.0, 4.0]])
    torch.testing.assert_close(explained_variance(values, returns, mask), torch.tensor(0.85))
    assert math.isnan(explained_variance(values, torch.ones(2, 2), mask).item())


def test_masked_mean():
    values = torch.tensor([[1.0, 2.0, math.inf], [4.0, math.nan, math.nan]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    # (1 + 2 + 4) / 3; per row: 3/2 and 4/1
    torch.testing.assert_close(masked_mean(values, mask), torch.tensor(7.0 / 3.0))
    torch.testing.assert_close(masked_mean(values, mask, dim=1), torch.tensor([1.5, 4.0]))
    assert masked_mean(values, torch.zeros_like(mask)).item() == 0.0


def test_per_token_entropy_takes_the_temperature_and_keeps_a_nan_row_nan():
    """The temperature argument is softmax(logits / T)'s entropy; bf16 logits are read in float32; a row of NaN logits
    gives NaN (padding is masked by the caller, never silently zero), a -inf logit contributes 0."""
    logits = torch.tensor([[1.0, 2.0, 3.0, -math.inf], [math.nan] * 4])
    scaled = torch.tensor([[1.0, 2.0, 3.0, -math.inf]]) / 0.5
    p = torch.softmax(scaled, dim=-1)[0, :3]
    by_hand = -(p * p.log()).sum()
    entropy = per_token_entropy(logits, 0.5)
    torch.testing.assert_close(entropy[0], by_hand)
    assert torch.isnan(entropy[1])
    torch.testing.assert_close(
        per_token_entropy(logits[:1].bfloat16(), 0.5), per_token_entropy(logits[:1].bfloat16().float() / 0.5)
    )
