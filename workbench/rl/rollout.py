"""The model-facing half of PPO on one base: prompts in, a scored `RolloutBatch` out.

All four roles run on the same quantized weights; only the active adapter changes (workbench/modeling/adapters.py):
`policy` samples and is trained, `ref` gives the reference log-probs, `value` (a LoRA plus a scalar head) the
per-token values, `reward` (the reward stage's LoRA and head) the score. Shapes follow workbench/rl/buffer.py:
queries left-padded, responses right-padded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from workbench.errors import UserError
from workbench.modeling import adapters
from workbench.rl.buffer import RolloutBatch, pad_to_length
from workbench.rl.rewards import has_stop_token, truncate_at_stop_tokens

POLICY, REF, VALUE, REWARD = "policy", "ref", "value", "reward"


# ── pure helpers ─────────────────────────────────────────────────────────────────────────────────────────────────────
def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / temperature) at `tokens`: logits [batch, T, vocab], tokens [batch, T] -> [batch, T].

    TRL's `selective_log_softmax` (trl/trainer/utils.py) with the sampling temperature applied first, as TRL 1.12's
    PPOTrainer does, so the log-probs are those of the distribution the tokens were drawn from. logsumexp row by row
    keeps the peak memory at one [T, vocab] copy instead of a full log-softmax of the batch.
    """
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    if temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    normaliser = torch.stack([torch.logsumexp(row, dim=-1) for row in logits])
    return picked - normaliser


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (left padding does not shift them), as `generate` computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, length - len(sequence) :] = torch.tensor(list(sequence))
            mask[row, length - len(sequence) :] = True
    return ids, mask


def right_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.bool)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(list(sequence))
        mask[row, : len(sequence)] = True
    return ids, mask


def _ids(encoded) -> list[int]:
    return list(encoded["input_ids"] if isinstance(encoded, Mapping) else encoded)


# ── prompts and reward inputs ────────────────────────────────────────────────────────────────────────────────────────
def as_messages(prompt, where: str) -> list[dict]:
    """A prompt cell as chat messages: a list of {role, content}, or a plain string taken as one user turn."""
    if isinstance(prompt, str) and prompt.strip():
        return [{"role": "user", "content": prompt}]
    if (
        isinstance(prompt, list)
        and prompt
        and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in prompt)
    ):
        return [{"role": m["role"], "content": m["content"]} for m in prompt]
    raise UserError(f"{where}: a prompt must be a non-empty string or a list of {{role, content}}; got {prompt!r}")


def encode_prompts(tokenizer, prompts: Sequence[list[dict]], max_prompt_length: int) -> list[list[int]]:
    """Chat-template each prompt with the generation prompt; keep the last `max_prompt_length` tokens."""
    encoded = [_ids(tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True)) for p in prompts]
    return [ids[-max_prompt_length:] for ids in encoded]


def reward_input_ids(tokenizer, prompt: list[dict], response: str) -> list[int]:
    """What the reward model reads: the conversation prompt + assistant response through the chat template.

    Exactly TRL's RewardTrainer tokenisation of a conversational preference row (`apply_chat_template(prompt +
    chosen)`), so the score here is the one the reward stage was trained to give.
    """
    return _ids(tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=True))


# ── the single base ──────────────────────────────────────────────────────────────────────────────────────────────────
def load_single_base(
    base: str,
    *,
    quant,
    sft_adapter,
    reward_adapter,
    revision: str | None = None,
    device_map: str | None = "auto",
    attn_implementation: str | None = None,
    gradient_checkpointing: bool = False,
):
    """ONE quantized causal-LM base carrying `policy` + `ref` (the SFT adapter, trained / frozen) and `reward` +
    `value` (the reward adapter with its head, frozen / trained). Returns the PeftModel with `policy` active."""
    from workbench.modeling import heads, loading

    model = loading.load_model(
        base,
        quant=quant,
        head="causal_lm",
        revision=revision,
        device_map=device_map,
        attn_implementation=attn_implementation,
        for_training=True,
        gradient_checkpointing=gradient_checkpointing,
    )
    model = adapters.attach(model, POLICY, path=sft_adapter, trainable=True)
    model = adapters.attach(model, REF, path=sft_adapter, trainable=False)
    model = heads.attach_scalar_adapter(model, REWARD, reward_adapter, trainable=False)
    model = heads.attach_scalar_adapter(model, VALUE, reward_adapter, trainable=True)
    adapters.switch(model, POLICY)
    return model


# ── forward passes on the shared base ────────────────────────────────────────────────────────────────────────────────
def response_logprobs(
    model, query_ids, query_mask, response_ids, response_mask, temperature: float, with_entropy: bool = False
):
    """Log-probs of the response tokens under the ACTIVE adapter (and their per-token entropy if asked).

    The logits predicting response token t sit at position Q + t - 1. Positions come from the mask, so a row's
    numbers do not depend on how much left padding its batch has.
    """
    from workbench.rl.losses import per_token_entropy

    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.bool(), response_mask.bool()], dim=1).long()
    output = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    logits = output.logits[:, query_ids.shape[1] - 1 : -1]
    logprobs = logprobs_from_logits(logits, response_ids, temperature)
    if not with_entropy:
        return logprobs, None
    with torch.no_grad():
        scaled = logits.float() / temperature if temperature != 1.0 else logits
        entropy = per_token_entropy(scaled)
    return logprobs, entropy


def response_values(model, query_ids, query_mask, response_ids, response_mask) -> torch.Tensor:
    """The value adapter + head's estimate before each response token (at positions Q - 1 ... Q + T - 2)."""
    from workbench.modeling import heads

    input_ids = torch.cat([query_ids, response_ids], dim=1)
    attention_mask = torch.cat([query_mask.bool(), response_mask.bool()], dim=1).long()
    values = heads.token_values(model, VALUE, input_ids, attention_mask)
    return values[:, query_ids.shape[1] - 1 : -1].float()


def reward_scores(model, tokenizer, prompts: Sequence[list[dict]], responses: Sequence[str], device) -> torch.Tensor:
    """The reward adapter + head's score of each (prompt, response) conversation, right-padded as in training."""
    from workbench.modeling import heads

    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(prompts, responses)]
    ids, mask = right_pad(sequences, tokenizer.pad_token_id)
    return heads.scalar_scores(model, REWARD, ids.to(device), mask.long().to(device)).float()


# ── one rollout ──────────────────────────────────────────────────────────────────────────────────────────────────────
@dataclass
class GenerationSettings:
    max_new_tokens: int
    temperature: float
    top_k: int
    top_p: float
    max_prompt_length: int
    stop_token_ids: list[int]


@dataclass
class Rollout:
    batch: RolloutBatch  # rewards/advantages/returns not yet filled in
    ended: torch.Tensor  # [batch] bool: the response has a stop token
    entropy: torch.Tensor  # [batch, T] per-token entropy of the policy at rollout time
    prompts: list[list[dict]]
    responses: list[str]


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@torch.no_grad()
def collect(model, tokenizer, prompts: list[list[dict]], settings: GenerationSettings, device, chunk: int) -> Rollout:
    """Sample one response per prompt with `policy`, then score it with `ref`, `value` and `reward`.

    `chunk` bounds how many sequences go through the model at once (generation and each forward pass).
    """
    pad_id = tokenizer.pad_token_id
    query_ids, query_mask = left_pad(encode_prompts(tokenizer, prompts, settings.max_prompt_length), pad_id)
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    sampling = dict(do_sample=True, temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)

    responses = []
    with adapters.use_adapter(model, POLICY):
        for rows in _chunks(len(prompts), chunk):
            generated = model.generate(
                input_ids=query_ids[rows],
                attention_mask=query_mask[rows].long(),
                max_new_tokens=settings.max_new_tokens,
                eos_token_id=settings.stop_token_ids,
                pad_token_id=pad_id,
                **sampling,
            )
            responses.append(generated[:, query_ids.shape[1] :])
    width = max(r.shape[1] for r in responses)
    raw = torch.cat([pad_to_length(r, width, pad_id) for r in responses])
    ended = has_stop_token(raw, settings.stop_token_ids)
    response_ids, response_mask = truncate_at_stop_tokens(raw, settings.stop_token_ids, pad_id)

    logprobs, ref_logprobs, values, entropy = [], [], [], []
    for rows in _chunks(len(prompts), chunk):
        parts = (query_ids[rows], query_mask[rows], response_ids[rows], response_mask[rows])
        with adapters.use_adapter(model, POLICY):
            policy_logprobs, policy_entropy = response_logprobs(model, *parts, settings.temperature, True)
        with adapters.use_adapter(model, REF):
            reference, _ = response_logprobs(model, *parts, settings.temperature)
        logprobs.append(policy_logprobs)
        entropy.append(policy_entropy)
        ref_logprobs.append(reference)
        values.append(response_values(model, *parts))

    texts = tokenizer.batch_decode(
        [ids[mask].tolist() for ids, mask in zip(response_ids, response_mask)], skip_special_tokens=True
    )
    scores = torch.cat(
        [reward_scores(model, tokenizer, prompts[rows], texts[rows], device) for rows in _chunks(len(prompts), chunk)]
    )
    batch = RolloutBatch(
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=torch.cat(logprobs),
        ref_logprobs=torch.cat(ref_logprobs),
        values=torch.cat(values),
        scores=scores,
    )
    return Rollout(batch, ended, torch.cat(entropy), list(prompts), texts)
