"""One quantized base carrying every role as a named adapter, and the forward passes each role runs on it.

PPO holds `policy` (trained) and `ref` (frozen), both from the SFT adapter, and `reward` (frozen) and `value`
(trained), both from the reward adapter with its scalar head (workbench/modeling/heads.py), or the value as a head
alone on the `ref` pass's hidden states (`value_model: ref_features`); eval holds every policy
it compares plus `reward`. Only the active adapter changes between passes (workbench/modeling/adapters.py), so three
extra copies of the weights are never loaded. tests/test_single_base.py proves each pass gives what a separately
loaded model gives: the reward stage's score, the SFT model's log-probs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from workbench.errors import UserError
from workbench.modeling import adapters, heads, loading, shared_prefix
from workbench.modeling.arguments import ModelArguments
from workbench.modeling.chunked_logprobs import (
    chunked_logprobs,
    head_chunk_tokens,
    logprobs_from_logits,
    plain_output_head,
)
from workbench.modeling.tokens import position_ids_from_mask, reward_input_ids, right_pad
from workbench.rl.losses import per_token_entropy

POLICY, REF, VALUE, REWARD = "policy", "ref", "value", "reward"


def load_single_base(
    args: ModelArguments,
    *,
    sft_adapter,
    reward_adapter,
    gradient_checkpointing: bool = False,
    value: bool = True,
    policy_adapter=None,
    value_model: str = "adapter",
    reward_uncertainty_coef: float = 0.0,
):
    """ONE causal-LM base as `args` says, carrying `policy` + `ref` (the SFT adapter, trained / frozen; the policy
    from `policy_adapter` when given, a later round's start) and `reward` + `value` (the reward adapter with its
    head, frozen / trained; no `value` if `value` is False, for critic-free RL). With `value_model` "ref_features"
    the value is only a trained head, a copy of the reward head, read on the `ref` adapter's final hidden states
    (`response_logprobs_and_features`): no value LoRA. With `reward_uncertainty_coef` > 0 the reward head scores
    minus that times its uncertainty (workbench/modeling/reward_uncertainty.py; the value head still starts from
    the plain head). Returns the PeftModel with `policy` active."""
    model = loading.load_model(args, for_training=True, gradient_checkpointing=gradient_checkpointing)
    model = adapters.attach(model, POLICY, path=policy_adapter or sft_adapter, trainable=True)
    model = adapters.attach(model, REF, path=sft_adapter, trainable=False)
    model = heads.attach_scalar_adapter(model, REWARD, reward_adapter, trainable=False)
    if value and value_model == "ref_features":
        _check_plain_output_head(_inner(model))  # before any work, not at the first rollout
        reward_head = model.workbench_heads[REWARD]
        value_head = heads.add_head(model, VALUE, reward_head.weight.detach(), trainable=True)
        value_head.reads_layer = reward_head.reads_layer  # the reward head's copy reads the ref pass's same layer
    elif value:
        model = heads.attach_scalar_adapter(model, VALUE, reward_adapter, trainable=True)
    if reward_uncertainty_coef > 0:
        from workbench.modeling import reward_uncertainty

        head, posterior = model.workbench_heads[REWARD], reward_uncertainty.load(reward_adapter)
        pessimistic = reward_uncertainty.PessimisticHead(head, posterior, reward_uncertainty_coef)
        model.workbench_heads[REWARD] = pessimistic.to(head.weight.device)
    adapters.switch(model, POLICY)
    return model


def response_logprobs(
    model,
    query_ids,
    query_mask,
    response_ids,
    response_mask,
    temperature: float,
    with_entropy: bool = False,
    first_stop_ids: Sequence[int] | None = None,
):
    """Log-probs of the response tokens under the ACTIVE adapter (and their per-token entropy if asked).

    The logits predicting response token t sit at position Q + t - 1. Positions come from the mask, so a row's
    numbers do not depend on how much left padding its batch has. Only those T positions go through the output
    head, a chunk of tokens at a time (workbench/modeling/chunked_logprobs.py): the query's logits are never
    computed, and the response's are never held whole for backward.

    `first_stop_ids`: also return, with gradient, each row's probability [batch] that its first response token is
    one of these (the response ends before it says anything), under softmax(logits / temperature).
    """
    inputs = _sequence_inputs(query_ids, query_mask, response_ids, response_mask)
    inner = _inner(model)
    if not plain_output_head(inner.config):  # the model's own logits, transformed as its forward does
        logits = model(**inputs, logits_to_keep=response_ids.shape[1] + 1).logits[:, :-1]
        logprobs = logprobs_from_logits(logits, response_ids, temperature)
        entropy = None
        if with_entropy:
            with torch.no_grad():
                entropy = per_token_entropy(logits, temperature)
        first_logits = logits[:, 0]
    else:
        hidden = _response_hidden_states(inner, inputs, query_ids.shape[1])
        logprobs, entropy = _head_logprobs(inner, hidden, response_ids, temperature, with_entropy)
        first_logits = inner.get_output_embeddings()(hidden[:, 0]) if first_stop_ids is not None else None
    if first_stop_ids is None:
        return logprobs, entropy
    return logprobs, entropy, _stop_probability(first_logits, first_stop_ids, temperature)


def _stop_probability(logits: torch.Tensor, stop_ids: Sequence[int], temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) summed over `stop_ids`: logits [batch, vocab] -> [batch], in float32 at least."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    return logits.softmax(dim=-1)[:, list(stop_ids)].sum(dim=-1)


def response_logprobs_and_features(model, query_ids, query_mask, response_ids, response_mask, temperature: float):
    """`response_logprobs` under the ACTIVE adapter, plus the final hidden states they come from [batch, T, hidden]
    (positions Q - 1 ... Q + T - 2, those `response_values` reads): the rollout's reference pass gives PPO's
    "ref_features" critic its inputs for free; for a value head that reads layer N (`reads_layer`), that layer's
    states through the final norm. Needs a plain output head (logits = lm_head(hidden))."""
    inner = _inner(model)
    _check_plain_output_head(inner)
    inputs = _sequence_inputs(query_ids, query_mask, response_ids, response_mask)
    layer = heads.head_layer(model, VALUE)
    decoder = inner.get_decoder()
    if layer is None or layer == decoder.config.num_hidden_layers:
        hidden = _response_hidden_states(inner, inputs, query_ids.shape[1])
        logprobs, _ = _head_logprobs(inner, hidden, response_ids, temperature, False)
        return logprobs, hidden
    # a reward head on layer N (the reward stage's reward_layer): the critic, its copy, reads the final norm of
    # layer N's output, what the reward model's decoder cut after layer N gives (heads.reading_layer)
    output = decoder(**inputs, output_hidden_states=True)
    window = slice(query_ids.shape[1] - 1, -1)
    logprobs, _ = _head_logprobs(inner, output.last_hidden_state[:, window], response_ids, temperature, False)
    return logprobs, decoder.norm(output.hidden_states[layer][:, window])


def _response_hidden_states(inner, inputs: dict, query_length: int):
    """The decoder's final hidden states at the positions that predict the response tokens (Q - 1 ... Q + T - 2)."""
    return inner.get_decoder()(**inputs).last_hidden_state[:, query_length - 1 : -1]


def _head_logprobs(inner, hidden, response_ids, temperature: float, with_entropy: bool):
    """The response tokens' log-probs (and entropy) through the output head, a chunk of tokens at a time."""
    head, chunk = inner.get_output_embeddings(), head_chunk_tokens(inner)
    return chunked_logprobs(head, hidden, response_ids, temperature, with_entropy, chunk_tokens=chunk)


def _check_plain_output_head(inner) -> None:
    if not plain_output_head(inner.config):
        raise UserError(
            f"value_model: ref_features needs a model whose logits are its output head applied to the last hidden "
            f"state; {inner.config.model_type} transforms them (use value_model: adapter)"
        )


def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _sequence_inputs(query_ids, query_mask, response_ids, response_mask) -> dict:
    """Query and response side by side for one decoder pass, position ids from the mask."""
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.bool(), response_mask.bool()], dim=1).long()
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "use_cache": False,
        "position_ids": position_ids_from_mask(attention_mask),
    }


def response_values(model, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
    """The value adapter + head's estimate before each response token (at positions Q - 1 ... Q + T - 2)."""
    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.bool(), response_mask.bool()], dim=1).long()
    values = heads.token_values(model, VALUE, input_ids, attention_mask)
    return values[:, query_ids.shape[1] - 1 : -1].float()


def reward_scores(
    model, tokenizer, prompts: Sequence[list[dict]], responses: Sequence[str], device, adapter: str = REWARD
) -> torch.Tensor:
    """The reward adapter + head's score of each (prompt, response) conversation, right-padded as in training; the
    answers to one prompt (best-of-N, RLOO/GRPO groups, the eval's policies) share one run of their common tokens
    (workbench/modeling/shared_prefix.py)."""
    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(prompts, responses)]
    groups = [json.dumps(p, sort_keys=True) for p in prompts]
    scores = shared_prefix.shared_prefix_scores(model, adapter, sequences, groups, tokenizer.pad_token_id)
    if scores is not None:
        return scores.float()
    ids, mask = right_pad(sequences, tokenizer.pad_token_id)
    return heads.scalar_scores(model, adapter, ids.to(device), mask.long().to(device)).float()
