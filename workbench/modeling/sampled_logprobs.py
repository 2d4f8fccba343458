"""The log-probs and entropy of the tokens a policy samples, recorded while it samples: an RL rollout's "old"
log-probs without a second forward pass over the responses.

TRL 1.12's PPOTrainer takes them from the logits that generation returns (`batch_generation`, then
`selective_log_softmax(logits / T, response)`), which holds [batch, response tokens, vocab] logits for the whole
rollout. This processor keeps one decoding step's logits at a time instead: at each step it reads the token sampled
from the previous step's logits (the last column of `input_ids` now) and records log softmax(logits / T) there and
the entropy; `finish` reads the last token. transformers runs custom logits processors before its temperature, top-k
and top-p warpers, and `Sampling.generate` sets the model's own generation_config aside, so the scores seen here are
the model's logits: the tokens are drawn from softmax(logits / T) (PPO refuses truncated sampling,
workbench/rl/ppo_config.py), the distribution these log-probs describe. The numbers are those of the sampling pass
(on a float32 CPU base, the LoRA folded into the weights; a KV cache), which equal a separate forward pass up to
float rounding (tests/test_sampled_logprobs.py). No maintained library records them one step at a time.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

from workbench.modeling.chunked_logprobs import logprobs_from_logits
from workbench.rl.losses import per_token_entropy


class SampledTokenLogprobs(LogitsProcessor):
    """Pass to `generate(logits_processor=[...])` (through `Sampling.generate`), then `finish(output_ids)`."""

    def __init__(self, temperature: float):
        if temperature <= 0:
            raise ValueError(f"sampled-token log-probs need a sampling temperature > 0; got {temperature}")
        self.temperature = temperature
        self.previous: torch.Tensor | None = None
        self.logprobs: list[torch.Tensor] = []
        self.entropy: list[torch.Tensor] = []

    def _record(self, tokens: torch.Tensor) -> None:
        self.logprobs.append(logprobs_from_logits(self.previous, tokens, self.temperature))
        self.entropy.append(per_token_entropy(self.previous, self.temperature))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.previous is not None:
            self._record(input_ids[:, -1])
        self.previous = scores.detach().clone()  # the warpers after this one must not change what is kept
        return scores

    def finish(self, output_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([batch, steps] log-probs, [batch, steps] entropy) of the tokens generated, given generate's output."""
        if self.previous is not None:
            self._record(output_ids[:, -1])
            self.previous = None
        return torch.stack(self.logprobs, dim=1), torch.stack(self.entropy, dim=1)
