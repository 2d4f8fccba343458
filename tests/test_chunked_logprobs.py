"""Log-probs a chunk of tokens at a time are the full-logits log-probs, with the same gradients, without keeping a
[tokens, vocab] tensor for backward; and the RL stage's `response_logprobs` (decoder + chunked head) gives what the
model's own logits give, on a real 4-bit base with LoRA adapters."""

from __future__ import annotations

import pytest
import torch
from test_single_base import queries_and_responses, randomise, single_base, tiny_adapters, tokenizer  # noqa: F401

from workbench.modeling import adapters
from workbench.modeling.chunked_logprobs import chunked_logprobs, logprobs_from_logits, plain_output_head
from workbench.modeling.single_base import POLICY, response_logprobs
from workbench.modeling.tokens import position_ids_from_mask
from workbench.rl.losses import per_token_entropy

BATCH, TOKENS, HIDDEN, VOCAB = 3, 5, 8, 50


def head_and_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=True)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=generator))
        head.bias.copy_(torch.randn(VOCAB, generator=generator))
    hidden = torch.randn(BATCH, TOKENS, HIDDEN, generator=generator, requires_grad=True)
    tokens = torch.randint(0, VOCAB, (BATCH, TOKENS), generator=generator)
    return head, hidden, tokens


def saved_tensor_sizes(compute) -> list[int]:
    """The element counts of the tensors autograd saves for backward while `compute()` runs."""
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        compute()
    return sizes


@pytest.mark.parametrize("chunk_tokens", [1, 4, 7, 15, 1000])  # 15 = every token in one chunk
def test_chunked_logprobs_and_gradients_equal_the_full_logits(chunk_tokens):
    head, hidden, tokens = head_and_inputs()
    full = logprobs_from_logits(head(hidden), tokens, temperature=0.7)
    weights = torch.linspace(-1, 1, BATCH * TOKENS).reshape(BATCH, TOKENS)  # a loss that weighs every token
    expected = torch.autograd.grad((full * weights).sum(), [hidden, head.weight, head.bias])

    chunked, entropy = chunked_logprobs(head, hidden, tokens, 0.7, with_entropy=True, chunk_tokens=chunk_tokens)
    got = torch.autograd.grad((chunked * weights).sum(), [hidden, head.weight, head.bias])
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)  # float32 rounding of values near 15
    for mine, theirs in zip(got, expected):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy, per_token_entropy(head(hidden).detach() / 0.7), atol=1e-5, rtol=0)
    assert not entropy.requires_grad

    # by hand, one token: log softmax(logits / T)[token]
    logits = head(hidden[1, 2]).detach() / 0.7
    by_hand = logits[tokens[1, 2]] - logits.exp().sum().log()
    assert abs(chunked[1, 2].item() - by_hand.item()) < 1e-5


def test_no_tensor_with_a_vocab_dimension_is_kept_for_backward():
    head, hidden, tokens = head_and_inputs()
    # the control: the full logits path keeps [batch, tokens, vocab] (at least once) for backward
    full = saved_tensor_sizes(lambda: logprobs_from_logits(head(hidden), tokens))
    assert max(full) >= BATCH * TOKENS * VOCAB
    chunked = saved_tensor_sizes(lambda: chunked_logprobs(head, hidden, tokens, chunk_tokens=4))
    assert max(chunked) < 4 * VOCAB  # the head's weight aside (VOCAB x HIDDEN), nothing near one chunk's logits


def test_without_gradient_nothing_is_checkpointed():
    head, hidden, tokens = head_and_inputs()
    with torch.no_grad():
        logprobs, _ = chunked_logprobs(head, hidden, tokens, chunk_tokens=4)
    assert not logprobs.requires_grad


def test_models_that_transform_their_logits_take_the_model_path():
    from transformers import Gemma2Config, LlamaConfig

    assert plain_output_head(LlamaConfig())
    assert not plain_output_head(Gemma2Config())  # final_logit_softcapping 30.0
    assert plain_output_head(Gemma2Config(final_logit_softcapping=None))


def test_response_logprobs_equal_the_models_own_logits_with_their_gradients(single_base, tokenizer):  # noqa: F811
    """On the 4-bit base with the policy adapter: values and LoRA gradients as from `model(...).logits`."""
    query_ids, query_mask, response_ids, response_mask = queries_and_responses(tokenizer)
    randomise(single_base, POLICY, seed=5, scale=0.1)
    trainable = [p for n, p in single_base.named_parameters() if f".{POLICY}." in n and p.requires_grad]
    assert trainable
    single_base.train()
    try:
        with adapters.use_adapter(single_base, POLICY):
            ids = torch.cat([query_ids, response_ids], dim=1)
            mask = torch.cat([query_mask.bool(), response_mask.bool()], dim=1).long()
            logits = single_base(
                input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
            ).logits[:, query_ids.shape[1] - 1 : -1]
            expected = logprobs_from_logits(logits, response_ids, temperature=0.7)
            expected_grads = torch.autograd.grad(expected[response_mask.bool()].sum(), trainable)

            got, entropy = response_logprobs(
                single_base, query_ids, query_mask, response_ids, response_mask, 0.7, with_entropy=True
            )
            got_grads = torch.autograd.grad(got[response_mask.bool()].sum(), trainable)
    finally:
        single_base.eval()
    real = response_mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(entropy[real], per_token_entropy(logits.detach()[real] / 0.7), atol=1e-4, rtol=0)
    for mine, theirs in zip(got_grads, expected_grads):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4)
    assert max(g.abs().max().item() for g in got_grads) > 1e-3  # the gradients are not all zero


def test_under_gradient_checkpointing_the_head_goes_a_small_chunk_at_a_time(single_base, tokenizer):  # noqa: F811
    """Training under activation checkpointing (the GPU recipes' memory trade), 80 response tokens: no saved tensor
    holds their logits, which backward recomputes 64 tokens at a time; without checkpointing the 80 tokens are one
    chunk whose logits are kept for backward (the faster path, the control). Scoring without gradient under
    checkpointing goes 64 tokens at a time as well (its peak is one chunk's logits), to the same log-probs."""
    from workbench.modeling.chunked_logprobs import CHECKPOINTED_CHUNK_TOKENS, CHUNK_TOKENS, head_chunk_tokens

    query_ids, query_mask, _, _ = queries_and_responses(tokenizer)
    batch, length = 2, 40
    generator = torch.Generator().manual_seed(0)
    response_ids = torch.randint(10, 1000, (batch, length), generator=generator)
    parts = (query_ids[:batch], query_mask[:batch], response_ids, torch.ones_like(response_ids))
    inner = single_base.get_base_model()
    vocab = inner.get_output_embeddings().weight.shape[0]

    def largest_saved() -> int:
        with adapters.use_adapter(single_base, POLICY):
            return max(saved_tensor_sizes(lambda: response_logprobs(single_base, *parts, 1.0)[0].sum().backward()))

    single_base.train()
    try:
        assert head_chunk_tokens(inner) == CHUNK_TOKENS
        assert largest_saved() >= batch * length * vocab  # the control: one chunk, its logits kept
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        assert head_chunk_tokens(inner) == CHECKPOINTED_CHUNK_TOKENS
        assert largest_saved() < CHECKPOINTED_CHUNK_TOKENS * vocab
        with torch.no_grad(), adapters.use_adapter(single_base, POLICY):
            small = response_logprobs(single_base, *parts, 1.0)[0]
        inner.gradient_checkpointing_disable()
        with torch.no_grad(), adapters.use_adapter(single_base, POLICY):
            whole = response_logprobs(single_base, *parts, 1.0)[0]
        torch.testing.assert_close(small, whole, atol=1e-5, rtol=0)
    finally:
        inner.gradient_checkpointing_disable()
        single_base.zero_grad(set_to_none=True)
        single_base.eval()
