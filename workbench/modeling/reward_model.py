"""The reward stage's own model outside training: loaded as the reward stage trained it, scoring token sequences.

`workbench reward score` and the tests that prove the single base scores as the reward stage does use it; PPO and eval
score through the reward adapter on their shared base instead (workbench/modeling/single_base.py).
"""

from __future__ import annotations

from workbench.modeling.arguments import ModelArguments


def load_reward_model(adapter_dir, args: ModelArguments | None = None):
    """(model, tokenizer, manifest): the manifest's base in the reward stage's precision, with a scalar head and the
    reward adapter; `args` may name another copy of the same base and the device."""
    from workbench.modeling import adapters

    model, tokenizer, manifest = adapters.load_with_adapter(
        adapter_dir, args or ModelArguments(), name="reward", manifest_precision=True, task_type="SEQ_CLS"
    )
    model.eval()
    return model, tokenizer, manifest


def score_sequences(
    model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8, groups: list | None = None
) -> list[float]:
    """Scores of a sequence-classification reward model for token sequences, batched by similar length; or, with
    `groups` (a key per sequence: the rows answering one prompt share one), a group's rows batched together with
    the tokens they share run once (workbench/modeling/shared_prefix.py), the same scores."""
    import torch

    from workbench.modeling.shared_prefix import last_hidden_states
    from workbench.modeling.tokens import right_pad

    device = next(model.parameters()).device
    if groups is None:
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    else:
        first = {key: index for index, key in reversed(list(enumerate(groups)))}
        order = sorted(range(len(sequences)), key=lambda i: first[groups[i]])  # a group's rows side by side
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(model, "active_peft_config", None)
    share = groups is not None and hasattr(inner, "score") and not (config is not None and config.is_prompt_learning)
    scores = [0.0] * len(sequences)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            last = None
            batch = [sequences[i] for i in chunk]
            # the model's own forward reads the rightmost token that is not padding; the shared path reads the last
            # real one: the same token unless a row ends with the pad id (then the batch runs whole)
            if share and all(sequence and sequence[-1] != pad_token_id for sequence in batch):
                last = last_hidden_states(inner.base_model, batch, [groups[i] for i in chunk], pad_token_id)
            if last is not None:
                logits = inner.score(last.to(next(inner.score.parameters()).dtype))
            else:
                input_ids, attention_mask = right_pad(batch, pad_token_id)
                logits = model(
                    input_ids=input_ids.to(device), attention_mask=attention_mask.long().to(device), use_cache=False
                ).logits
            for index, value in zip(chunk, logits.squeeze(-1).float().tolist()):
                scores[index] = value
    model.train(was_training)
    return scores


def final_features(model, sequences: list[list[int]], pad_token_id: int, batch_size: int = 8):
    """The final hidden state at each sequence's last token [n, hidden] (what the score head reads), float32."""
    import torch

    from workbench.modeling.heads import last_token_index
    from workbench.modeling.tokens import right_pad

    device = next(model.parameters()).device
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    features = [None] * len(sequences)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            input_ids, attention_mask = right_pad([sequences[i] for i in chunk], pad_token_id)
            hidden = model(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.long().to(device),
                output_hidden_states=True,
                use_cache=False,
            ).hidden_states[-1]
            last = last_token_index(attention_mask)
            for index, row in zip(chunk, hidden[torch.arange(len(chunk)), last.to(hidden.device)].float().cpu()):
                features[index] = row
    model.train(was_training)
    return torch.stack(features)
