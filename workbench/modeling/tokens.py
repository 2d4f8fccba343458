"""Chat prompts to token ids and padded batches: how every stage turns conversations into model inputs.

One tokenisation per purpose, shared by the reward stage, `reward score`, PPO rollouts and eval, so a text is read the
same way wherever it is scored: `encode_prompts` (the prompt with the generation prompt, as a policy answers it) and
`reward_input_ids` (prompt + answer, exactly as TRL's RewardTrainer tokenizes a preference row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from workbench.errors import UserError


def as_messages(prompt, where: str) -> list[dict]:
    """A prompt cell as chat messages: a list of {role, content}, or a plain string taken as one user turn."""
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list) and prompt and all(_is_message(m) for m in prompt):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise UserError(
        f"{where}: a prompt must be a non-empty string or a list of {{role, content}} with non-empty content; "
        f"got {prompt!r}"
    )


def _is_message(message) -> bool:
    return (
        isinstance(message, dict)
        and {"role", "content"} <= set(message)
        and isinstance(message["content"], str)
        and bool(message["content"].strip())
    )


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)


def encode_prompts(tokenizer, prompts: Sequence[list[dict]], max_prompt_length: int | None = None) -> list[list[int]]:
    """Chat-template each prompt with the generation prompt; keep the last `max_prompt_length` tokens."""
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template: the prompts are chat conversations")
    encoded = [_ids(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True)) for p in prompts]
    return [ids[-max_prompt_length:] for ids in encoded] if max_prompt_length else encoded


def reward_input_ids(tokenizer, prompt, completion) -> list[int]:
    """What a reward model reads: prompt + completion, exactly as TRL's RewardTrainer tokenizes prompt + chosen.

    Conversational rows (a message-list prompt, a string or message-list completion) go through the chat template;
    plain strings are concatenated and end with EOS, as TRL appends it to non-conversational texts.
    """
    if isinstance(completion, str) and isinstance(prompt, list):
        completion = [{"role": "assistant", "content": completion}]
    if isinstance(completion, list):
        messages = [*(prompt or []), *completion]
        return _ids(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True))
    text = (prompt or "") + completion
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return _ids(tokenizer(text=text))


def _pad(sequences: Sequence[Sequence[int]], pad_id: int, left: bool):
    import torch

    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        where = slice(length - len(sequence), length) if left else slice(0, len(sequence))
        ids[row, where] = torch.tensor(list(sequence))
        mask[row, where] = True
    return ids, mask


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """(ids [batch, T] long, mask [batch, T] bool), each row ending at the right edge (prompts before generation)."""
    return _pad(sequences, pad_id, left=True)


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int):
    """(ids [batch, T] long, mask [batch, T] bool), each row starting at the left edge (as TRL's collators pad)."""
    return _pad(sequences, pad_id, left=False)


def position_ids_from_mask(attention_mask):
    """Positions counted over real tokens only (left padding does not shift them), as `generate` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
