"""The log-probs a rollout records while it samples (workbench/modeling/sampled_logprobs.py) are the ones a separate
forward pass gives the sampled tokens, on a float32 base (sampled with the LoRA folded in) and on a 4-bit one."""

from __future__ import annotations

import pytest
import torch
from model_args import margs, quant
from test_single_base import PROMPTS, QUANT, randomise, tiny_adapters  # noqa: F401

from workbench.modeling import adapters
from workbench.modeling.generation import Sampling, stop_token_ids
from workbench.modeling.loading import load_tokenizer
from workbench.modeling.sampled_logprobs import SampledTokenLogprobs
from workbench.modeling.single_base import POLICY, load_single_base, response_logprobs
from workbench.modeling.tokens import encode_prompts, left_pad
from workbench.rl.losses import per_token_entropy
from workbench.rl.rewards import truncate_at_stop_tokens


def test_each_step_records_log_softmax_at_the_next_sampled_token():
    """By hand: two decoding steps over a vocabulary of 3; the second step's token is only known from `finish`."""
    recorder = SampledTokenLogprobs(temperature=0.5)
    first, second = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3.0, 0.0, 0.0]])
    assert recorder(torch.tensor([[7]]), first) is first  # the scores pass through unchanged
    recorder(torch.tensor([[7, 2]]), second)  # token 2 was drawn from `first`
    logprobs, entropy = recorder.finish(torch.tensor([[7, 2, 0]]))  # token 0 from `second`
    expected = [torch.log_softmax(first[0] / 0.5, -1)[2], torch.log_softmax(second[0] / 0.5, -1)[0]]
    torch.testing.assert_close(logprobs, torch.stack(expected).unsqueeze(0))
    torch.testing.assert_close(entropy[0, 1], per_token_entropy(second[0], 0.5))
    with pytest.raises(ValueError, match="temperature > 0"):
        SampledTokenLogprobs(temperature=0.0)


@pytest.mark.parametrize("precision", ["float32", "nf4"])
def test_recorded_log_probs_equal_a_forward_pass_over_the_sampled_tokens(precision, tiny_model_path, tiny_adapters):  # noqa: F811
    """The policy adapter (randomised, so it matters) samples 24 tokens at T = 0.7 for 3 left-padded prompts; on the
    float32 base Sampling.generate folds it into the weights and decodes with a KV cache, the 4-bit base decodes
    unfolded. The recorded log-probs and entropy equal response_logprobs over the same tokens on the real positions
    (up to and including each stop token)."""
    sft_dir, reward_dir = tiny_adapters
    precision_keys = quant(**QUANT) if precision == "nf4" else None
    model = load_single_base(margs(tiny_model_path, precision_keys), sft_adapter=sft_dir, reward_adapter=reward_dir)
    randomise(model, POLICY, seed=3, scale=0.1)
    model.eval()
    tokenizer = load_tokenizer(str(tiny_model_path))
    query_ids, query_mask = left_pad(encode_prompts(tokenizer, PROMPTS, 256), tokenizer.pad_token_id)
    stops = stop_token_ids(tokenizer)
    recorder = SampledTokenLogprobs(0.7)
    torch.manual_seed(0)
    with torch.no_grad(), adapters.use_adapter(model, POLICY):
        output = Sampling(24, 0.7).generate(model, tokenizer, query_ids, query_mask, stops, [recorder])
        recorded, entropy = recorder.finish(output)
        response_ids, mask = truncate_at_stop_tokens(output[:, query_ids.shape[1] :], stops, tokenizer.pad_token_id)
        expected, expected_entropy = response_logprobs(
            model, query_ids, query_mask, response_ids, mask.long(), 0.7, with_entropy=True
        )
    assert recorded.shape == response_ids.shape and mask.sum() > 10
    torch.testing.assert_close(recorded[mask], expected[mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(entropy[mask], expected_entropy[mask], atol=1e-4, rtol=0)
    assert expected[mask].min() < -0.5  # sampled, not near-greedy: the test can tell the positions apart
