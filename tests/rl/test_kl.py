import math

import pytest
import torch

from workbench.rl import per_token_kl

LN2 = math.log(2.0)


def test_estimators_by_hand():
    # Token 0: policy 0.5, ref 0.25 -> log r = ln(0.25/0.5) = -ln2
    #   k1 = ln2, k2 = 0.5*ln2^2, k3 = (0.5 - 1) + ln2
    # Token 1: policy 0.25, ref 0.5 -> log r = ln2
    #   k1 = -ln2, k2 = 0.5*ln2^2, k3 = (2 - 1) - ln2
    logprobs = torch.log(torch.tensor([[0.5, 0.25]]))
    ref_logprobs = torch.log(torch.tensor([[0.25, 0.5]]))
    torch.testing.assert_close(per_token_kl(logprobs, ref_logprobs, estimator="k1"), torch.tensor([[LN2, -LN2]]))
    torch.testing.assert_close(
        per_token_kl(logprobs, ref_logprobs, estimator="k2"), torch.tensor([[0.5 * LN2**2, 0.5 * LN2**2]])
    )
    torch.testing.assert_close(
        per_token_kl(logprobs, ref_logprobs, estimator="k3"), torch.tensor([[-0.5 + LN2, 1.0 - LN2]])
    )


def test_k1_and_k3_are_unbiased():
    # Policy p = (1/2, 1/4, 1/4), ref q = (1/4, 1/4, 1/2) over three tokens.
    # KL(p || q) = 1/2 ln2 + 1/4 ln1 + 1/4 ln(1/2) = 1/4 ln2.
    # E_p[k1] = 1/2 ln2 + 0 - 1/4 ln2 = 1/4 ln2.
    # E_p[k3] = 1/2 (ln2 - 1/2) + 0 + 1/4 (1 - ln2) = 1/4 ln2.
    policy = torch.tensor([[0.5, 0.25, 0.25]])
    ref = torch.tensor([[0.25, 0.25, 0.5]])
    for estimator in ("k1", "k3"):
        expectation = (policy * per_token_kl(policy.log(), ref.log(), estimator=estimator)).sum()
        torch.testing.assert_close(expectation, torch.tensor(0.25 * LN2))
    # k2 is biased: E_p[k2] = 1/2 * 1/2 ln2^2 + 1/4 * 1/2 ln2^2 = 3/8 ln2^2, not 1/4 ln2.
    k2_expectation = (policy * per_token_kl(policy.log(), ref.log(), estimator="k2")).sum()
    torch.testing.assert_close(k2_expectation, torch.tensor(0.375 * LN2**2))


def test_mask_zeroes_padding_even_when_it_holds_infinities():
    # The ref log-prob of a pad position can be -inf; k3 there is inf, and the mask must still give 0.
    logprobs = torch.tensor([[-1.0, -1.0]])
    ref_logprobs = torch.tensor([[-1.0, -math.inf]])
    mask = torch.tensor([[True, False]])
    for estimator in ("k1", "k2", "k3"):
        assert per_token_kl(logprobs, ref_logprobs, mask, estimator=estimator).tolist() == [[0.0, 0.0]]


def test_bf16_inputs_give_float32_kl():
    kl = per_token_kl(torch.zeros(1, 2, dtype=torch.bfloat16), torch.zeros(1, 2, dtype=torch.bfloat16))
    assert kl.dtype == torch.float32


def test_unknown_estimator_and_shape_mismatch_raise():
    with pytest.raises(ValueError, match="unknown KL estimator"):
        per_token_kl(torch.zeros(1, 2), torch.zeros(1, 2), estimator="k4")
    with pytest.raises(ValueError, match="differ"):
        per_token_kl(torch.zeros(1, 2), torch.zeros(1, 3))
