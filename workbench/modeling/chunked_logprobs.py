"""Token log-probs (and entropy) from the last hidden states, a chunk of tokens at a time, never holding the
[batch, tokens, vocab] logits for backward.

The output head's logits are the biggest tensor of an RL step: [batch, response tokens, vocab] in fp32 is 0.2 GB for
4 x 256 tokens of a 49k vocabulary and 2.5 GB for 8 x 512 tokens of Qwen2.5's 152k, and autograd would keep them (and
the log-softmax's) until backward. Here each chunk of `chunk_tokens` rows goes through the head inside
`torch.utils.checkpoint`: only the chunk's hidden states are saved, and backward recomputes its logits, so at most
one chunk's logits exist at a time. A batch that fits in one chunk (the CPU quickstart's) skips the recomputation.
Liger's fused linear cross-entropy does the same in a Triton kernel (CUDA only); this is the device-independent form,
on torch's own checkpointing.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from workbench.modeling.loading import recomputes_activations
from workbench.rl.losses import per_token_entropy

CHUNK_TOKENS = 1024  # a chunk's fp32 logits: 1024 x vocab x 4 bytes (0.2 GB for 49k, 0.6 GB for 152k)
# Under activation (gradient) checkpointing, memory is what the run asked to save, and the head's chunk is traded the
# same way: 64 tokens' logits (13 MB for 49k, 39 MB for 152k) at a time, recomputed in backward, and the scoring
# passes without gradient go 64 tokens at a time too. Without checkpointing the chunk stays 1024 tokens: on the 2-core
# CPU recomputing a [4, 48] batch's head costs 0.41 -> 0.66 s per forward and backward. bench/ppo_memory.py records
# the peak (SmolLM2-135M, one PPO step's passes on 4 x (128 + 128) tokens, checkpointed).
CHECKPOINTED_CHUNK_TOKENS = 64

# Config attributes of architectures whose causal-LM forward does more than `lm_head(hidden)` to the logits (Gemma's
# soft-capping, Cohere's and Granite's scaling): their log-probs are taken from the model's own logits instead.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def plain_output_head(config) -> bool:
    """Whether the model's logits are exactly its output head applied to its last hidden states."""
    configs = [c for c in (config, getattr(config, "text_config", None)) if c is not None]
    return all(getattr(c, key, None) in (None, 1.0) for c in configs for key in LOGIT_TRANSFORMS)


def head_chunk_tokens(model) -> int:
    """The head's chunk for `model`: CHECKPOINTED_CHUNK_TOKENS when it checkpoints activations (it was loaded with
    gradient checkpointing: memory first, in its training and its scoring passes alike), else CHUNK_TOKENS."""
    return CHECKPOINTED_CHUNK_TOKENS if recomputes_activations(model) else CHUNK_TOKENS


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`: logits [..., vocab], tokens [...] -> [...].

    TRL's `selective_log_softmax` (trl/trainer/utils.py) with the sampling temperature applied first, as TRL 1.12's
    PPOTrainer does, so the log-probs are those of the distribution the tokens were drawn from. Always in float32 at
    least: a log-softmax over a 50k vocabulary in bf16 loses most of the tail mass.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    # logsumexp's temporaries are the size of its input: a chunk of rows at a time keeps them at one chunk's
    rows = logits.reshape(-1, logits.shape[-1]).split(CHUNK_TOKENS)
    return picked - torch.cat([torch.logsumexp(part, dim=-1) for part in rows]).reshape(picked.shape)


def _chunk_logprobs(head, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    return logprobs_from_logits(head(hidden), tokens, temperature)


def _entropy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return per_token_entropy(logits.detach(), temperature)


def chunked_logprobs(
    head: torch.nn.Module,
    hidden: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = False,
    chunk_tokens: int = CHUNK_TOKENS,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(head(hidden) / temperature) at `tokens` ([batch, T, hidden], [batch, T] -> [batch, T]) and, if
    asked, each position's entropy (without gradient: a statistic). Equal to `logprobs_from_logits(head(hidden), ...)`
    and to its gradient; tests/test_chunked_logprobs.py proves both and that no saved tensor has a vocab dimension."""
    batch, length = tokens.shape
    flat_hidden, flat_tokens = hidden.reshape(batch * length, -1), tokens.reshape(-1)
    # one chunk is as big as a chunk gets: its logits are kept for backward rather than computed twice
    recompute = torch.is_grad_enabled() and flat_hidden.requires_grad and batch * length > chunk_tokens
    logprobs, entropy = [], []
    for start in range(0, batch * length, chunk_tokens):
        piece, piece_tokens = flat_hidden[start : start + chunk_tokens], flat_tokens[start : start + chunk_tokens]
        if recompute:  # saves `piece` only; backward runs the head on it again
            logprobs.append(checkpoint(_chunk_logprobs, head, piece, piece_tokens, temperature, use_reentrant=False))
            if with_entropy:
                with torch.no_grad():
                    entropy.append(_entropy(head(piece), temperature))
            continue
        logits = head(piece)  # once, for both
        logprobs.append(logprobs_from_logits(logits, piece_tokens, temperature))
        if with_entropy:
            with torch.no_grad():
                entropy.append(_entropy(logits, temperature))
    logprobs = torch.cat(logprobs).reshape(batch, length)
    return logprobs, torch.cat(entropy).reshape(batch, length) if with_entropy else None
