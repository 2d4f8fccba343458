"""Drawing each decoding step's token from softmax(warped logits) with one uniform number per row (the inverse of
the cumulative distribution), instead of `torch.multinomial`.

transformers' sampling calls `torch.multinomial(probs, 1)`, which on the CPU draws one exponential random number per
vocabulary entry and row (`probs / Exp(1)`, then argmax): 49k numbers per row and step for SmolLM2's vocabulary, 57 ms
of each decoding step at batch 60 on the 2-core CPU (torch.profiler: aten::exponential_). The inverse CDF needs one
uniform number per row: u ~ U[0, 1), the token is the first whose cumulative probability exceeds u times the total.
Both draw exactly from the categorical distribution `probs` (tests/test_categorical_sampler.py and
tests/test_sampling_distribution.py compare the tokens drawn with the distribution by chi-square tests); only which
tokens a seed gives differs. The cumulative sums are taken in float64, so the 49k-term sum's rounding moves no token's
probability by more than ~1e-11 (the float32 softmax before it is the one torch.multinomial is given). A decoding
step at batch 60 takes a fifth less time; bench/sampler_speed.py measures both ways in one run.

On the CPU `Sampling.generate` runs generate in greedy mode with this processor last: transformers' own processors
(min_new_tokens) and ours (workbench/modeling/sampled_logprobs.py) see the logits first, as they do before its
warpers when it samples; this one applies the same warpers (transformers' TemperatureLogitsWarper, TopKLogitsWarper,
TopPLogitsWarper, in transformers' order), draws the token, and leaves it the only finite score, so the greedy step
takes it. The draws come from torch's global generator, as `torch.multinomial`'s do, so `torch.manual_seed` still
fixes them. On a GPU transformers samples as before (torch.multinomial is one fast kernel there; not measured). No
library offers a cheaper exact sampler inside `generate`.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList


class CategoricalSampler(LogitsProcessor):
    """The last logits processor of a greedy `generate`: draws each row's next token from softmax(warped scores)."""

    def __init__(self, temperature: float, top_k: int = 0, top_p: float = 1.0):
        from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

        if temperature <= 0:
            raise ValueError(f"sampling needs a temperature > 0; got {temperature}")
        warpers = [] if temperature == 1.0 else [TemperatureLogitsWarper(temperature)]
        if top_k > 0:
            warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p=top_p))
        self.warpers = LogitsProcessorList(warpers)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        tokens = draw(torch.softmax(self.warpers(input_ids, scores).float(), dim=-1))
        chosen = torch.full_like(scores, -float("inf"))
        return chosen.scatter_(1, tokens[:, None], 0.0)


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row of `probs` ([rows, vocab], each row non-negative with a positive finite sum) by the inverse
    CDF: the first token whose cumulative probability exceeds u * total, u ~ U[0, 1) from torch's global generator.
    That token has a positive probability, and there always is one: u <= 1 - 2**-53, and in float64 u * total rounds
    below total for every positive total."""
    cumulative = probs.double().cumsum(dim=-1)
    total = cumulative[:, -1:]
    if not bool(torch.isfinite(total).all() and (total > 0).all()):
        raise ValueError("probability tensor contains either `inf`, `nan` or a row without positive mass")
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device)
    return torch.searchsorted(cumulative, u * total, right=True).squeeze(1)
