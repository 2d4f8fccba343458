"""Reward scores of several answers to one prompt with the prompt's tokens run once.

Best-of-N (the eval's reference row), the eval's judging of every policy's answer to the same prompt, and RLOO/GRPO
groups score K sequences that begin with the same tokens: the chat template's system turn and the user's question,
about half of each sequence here. `heads.scalar_scores` runs every row whole; `shared_prefix_scores` runs each
group's common prefix once, copies its KV cache to the group's rows (as `generation.shared_prompt_cache` does before
sampling) and runs only each row's own tokens on it. The scores are the same computation (same tokens, positions and
causal attention; tests/test_single_base.py and tests/test_heads.py: equal within float rounding),
`bench/shared_prefix_scoring.py` times it. TRL's RewardTrainer and OpenRLHF's reward models run every sequence
whole; vLLM's prefix caching does this for generation, not for a scalar head.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

from workbench.modeling import adapters, heads
from workbench.modeling.tokens import left_pad, position_ids_from_mask, right_pad


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every sequence shares, leaving each at least one token of its own (the one the head
    reads is then never in the shared part)."""
    limit = min(len(s) for s in sequences) - 1
    first = sequences[0]
    for index in range(max(limit, 0)):
        if any(s[index] != first[index] for s in sequences[1:]):
            return index
    return max(limit, 0)


def shared_prefix_scores(model, name: str, sequences: Sequence[Sequence[int]], groups: Sequence[Hashable], pad_id):
    """The head of adapter `name` on the last token of each sequence, as `heads.scalar_scores` on the right-padded
    batch gives it, with the rows of one group (`groups[i]`: a key per row, e.g. its prompt) sharing one run of
    their common prefix. None when no two rows share a group's prefix (score the batch as usual)."""
    import torch

    if torch.is_grad_enabled():
        return None  # a judge's scores; a trained head's gradient goes through the whole rows (heads.scalar_scores)
    if model.peft_config[name].is_prompt_learning:
        return None  # its virtual tokens are prepended inside the forward: a prefix cache would not hold them
    with adapters.use_adapter(model, name), heads.reading_layer(model, name):
        last = last_hidden_states(model.get_base_model().get_decoder(), sequences, groups, pad_id)
    if last is None:
        return None
    head = model.workbench_heads[name]
    return head(last.to(head.weight.dtype)).squeeze(-1)


def last_hidden_states(decoder, sequences: Sequence[Sequence[int]], groups: Sequence[Hashable], pad_id):
    """`decoder`'s final hidden state at each sequence's last token ([rows, hidden]), each group's common prefix run
    once; None when there is nothing to share (every group one row, or a one-token sequence) or the model's cache
    cannot be copied to rows."""
    import torch

    from workbench.modeling.loading import recomputes_activations

    if decoder.training and recomputes_activations(decoder):
        return None  # checkpointed layers in train mode keep no cache: the rows would run without their prefix
    members: dict[Hashable, list[int]] = {}
    for row, key in enumerate(groups):
        members.setdefault(key, []).append(row)
    if len(members) == len(sequences):
        return None
    keys = list(members)
    index_of = {key: index for index, key in enumerate(keys)}
    shared = {key: common_prefix_length([sequences[row] for row in members[key]]) for key in keys}
    if min(shared.values()) < 1:
        return None  # a one-token sequence: nothing of its own after a prefix
    device = next(decoder.parameters()).device
    prefix_ids, prefix_mask = left_pad([sequences[members[key][0]][: shared[key]] for key in keys], pad_id)
    group_of = torch.tensor([index_of[key] for key in groups])
    own_ids, own_mask = right_pad([sequence[shared[key] :] for sequence, key in zip(sequences, groups)], pad_id)
    positions = torch.tensor([shared[key] for key in groups])[:, None] + torch.arange(own_ids.shape[1])[None, :]
    mask = torch.cat([prefix_mask[group_of], own_mask], dim=1).long().to(device)
    prefix_mask = prefix_mask.long().to(device)
    cache = decoder(
        input_ids=prefix_ids.to(device),
        attention_mask=prefix_mask,
        position_ids=position_ids_from_mask(prefix_mask),
        use_cache=True,
    ).past_key_values
    if not hasattr(cache, "batch_select_indices") or cache.get_seq_length() != prefix_ids.shape[1]:
        return None  # a model whose cache cannot be re-batched, or that kept none: score the batch as usual
    # each row gets its group's prefix; CPU indices serve cache layers on any device (device_map over several GPUs)
    cache.batch_select_indices(group_of)
    hidden = decoder(
        input_ids=own_ids.to(device),
        attention_mask=mask,
        position_ids=positions.to(device),
        past_key_values=cache,
        use_cache=True,
    ).last_hidden_state
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    return hidden[rows, heads.last_token_index(own_mask).to(hidden.device)]
