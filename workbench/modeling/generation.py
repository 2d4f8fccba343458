"""Batched, seeded sampling of K completions per chat prompt (candidates for ranking, rollouts for evaluation).

Prompts are rendered with the tokenizer's chat template (generation prompt added), left-padded so every row of a batch
ends where generation starts, and sampled until EOS (or the chat template's end-of-turn token) or `max_new_tokens`.
Batch `b` is sampled under seed `seed + b`: the same prompts, settings, batch size and seed give the same text.
"""

from __future__ import annotations

from workbench.errors import UserError


def stop_token_ids(tokenizer) -> list[int]:
    """EOS plus the chat template's end-of-turn token when it has its own id (ChatML's <|im_end|>)."""
    ids = []
    for token in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<|end|>"):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


def render_prompts(tokenizer, prompts: list[list[dict]]) -> list[str]:
    if tokenizer.chat_template is None:
        raise UserError("the tokenizer has no chat template: candidate generation needs an instruction-tuned model")
    return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]


def generate_completions(
    model,
    tokenizer,
    prompts: list[list[dict]],
    k: int,
    max_new_tokens: int = 128,
    temperature: float = 0.8,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 8,
    seed: int = 0,
    min_new_tokens: int = 0,
    progress: bool = True,
) -> list[list[str]]:
    """`k` sampled completions for each chat prompt, in prompt order; `temperature` 0 means greedy."""
    import torch
    from tqdm import tqdm

    if k < 1 or batch_size < 1 or max_new_tokens < 1:
        raise UserError(f"k, batch_size and max_new_tokens must be >= 1; got {k}, {batch_size}, {max_new_tokens}")
    texts = render_prompts(tokenizer, prompts)
    jobs = [(index, text) for index, text in enumerate(texts) for _ in range(k)]
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k) if temperature > 0 else {}
    if not sampling:
        sampling = dict(do_sample=False)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    results: list[list[str]] = [[] for _ in prompts]
    model.eval()
    try:
        batches = range(0, len(jobs), batch_size)
        for number, start in enumerate(tqdm(batches, desc="generating", unit="batch", disable=not progress)):
            batch = jobs[start : start + batch_size]
            inputs = tokenizer(
                [text for _, text in batch], return_tensors="pt", padding=True, add_special_tokens=False
            )
            inputs = {key: value.to(model.device) for key, value in inputs.items()}
            torch.manual_seed(seed + number)
            with torch.inference_mode():
                output = model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=min_new_tokens,
                    eos_token_id=stop_token_ids(tokenizer),
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            for (index, _), tokens in zip(batch, new_tokens):
                results[index].append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    finally:
        tokenizer.padding_side = padding_side
    return results
