"""Sampling from a policy: one `Sampling` settings object and one stop-token rule for candidates (`generate`), eval
answers, chat and PPO rollouts; batched, seeded K completions per chat prompt.

Prompts are rendered with the tokenizer's chat template (generation prompt added), left-padded so every row of a batch
ends where generation starts, and sampled until EOS (or the chat template's end-of-turn token) or `max_new_tokens`.
Batch `b` is sampled under seed `seed + b`: the same prompts, settings, batch size and seed give the same text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workbench.errors import UserError


def stop_token_ids(tokenizer, names: list[str] | None = None) -> list[int]:
    """Ids of the tokens that end an answer: `names` (each must be one token), or by default EOS plus the chat
    template's end-of-turn token when it has its own id (ChatML's <|im_end|>, Llama 3's <|eot_id|>)."""
    if names:
        vocab = tokenizer.get_vocab()
        unknown = [name for name in names if name not in vocab]
        if unknown:
            raise UserError(f"stop_tokens {unknown} are not single tokens of this tokenizer's vocabulary")
        return [vocab[name] for name in names]
    ids = []
    for token in (tokenizer.eos_token, "<|im_end|>", "<|eot_id|>", "<|end|>"):
        if token is None:
            continue
        token_id = tokenizer.convert_tokens_to_ids(token)
        if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
            ids.append(token_id)
    return ids


@dataclass
class Sampling:
    """How a policy samples: one settings object (and recipe keys) for candidates, eval answers, chat and PPO
    rollouts. Each stage sets its own defaults (`generate` samples at 0.8, `eval` and `chat` decode greedily)."""

    max_new_tokens: int = field(default=128, metadata={"help": "Longest answer, in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature; 0 decodes greedily."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling threshold (1.0: off)."})
    top_k: int = field(default=0, metadata={"help": "Sample among the top k tokens (0: no limit)."})
    min_new_tokens: int = field(default=0, metadata={"help": "Shortest answer, in tokens (1 avoids empty ones)."})

    def check(self) -> None:
        if self.max_new_tokens < 1 or self.min_new_tokens < 0 or self.min_new_tokens > self.max_new_tokens:
            raise UserError(
                f"max_new_tokens must be >= 1 and min_new_tokens in [0, max_new_tokens]; got "
                f"{self.max_new_tokens}, {self.min_new_tokens}"
            )
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise UserError(
                f"temperature must be >= 0, top_p in (0, 1], top_k >= 0; got {self.temperature}, {self.top_p}, "
                f"{self.top_k}"
            )

    def generate_kwargs(self, tokenizer, stop_ids: list[int] | None = None) -> dict:
        """Keyword arguments for `model.generate`: the sampling settings, stop tokens and pad token."""
        self.check()
        kwargs = dict(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            eos_token_id=stop_ids if stop_ids is not None else stop_token_ids(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
        )
        if self.temperature > 0:
            return {
                **kwargs,
                "do_sample": True,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": self.top_k,
            }
        return {**kwargs, "do_sample": False}

    def generate(
        self,
        model,
        tokenizer,
        input_ids,
        attention_mask,
        stop_ids: list[int] | None = None,
        logits_processor=None,
        inverse_cdf: bool | None = None,
    ):
        """`model.generate` under these settings and nothing else: the model's own `generation_config` (Qwen2.5-
        Instruct ships repetition_penalty 1.05, others top_k/top_p/min_p...) is set aside for the call, so the tokens
        come from exactly softmax(logits / T) truncated by our top_k/top_p, the distribution that PPO's log-probs, KL
        and ratio describe (tests/test_sampling_distribution.py). On the CPU a float32 base samples with the active
        LoRA folded into it, restored exactly afterwards (adapters.folded_for_inference). `logits_processor`: a list
        of processors that watch the logits (workbench/modeling/sampled_logprobs.py). `inverse_cdf`: draw the tokens
        with workbench/modeling/categorical_sampler.py rather than torch.multinomial (default: on the CPU)."""
        from transformers import GenerationConfig, LogitsProcessorList

        from workbench.modeling.adapters import folded_for_inference
        from workbench.modeling.categorical_sampler import CategoricalSampler

        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        kwargs, processors = self.generate_kwargs(tokenizer, stop_ids), list(logits_processor or [])
        if inverse_cdf is None:
            inverse_cdf = input_ids.device.type == "cpu"
        if kwargs["do_sample"] and inverse_cdf:
            # one uniform number per row and step instead of torch.multinomial's one per vocabulary entry: the same
            # distribution, a fifth of the CPU's decoding step at batch 60 (workbench/modeling/categorical_sampler.py)
            sampler = CategoricalSampler(kwargs.pop("temperature"), kwargs.pop("top_k"), kwargs.pop("top_p"))
            kwargs["do_sample"], processors = False, [*processors, sampler]
        saved = inner.generation_config
        # transformers fills every setting left None from model.generation_config: an empty one contributes nothing
        inner.generation_config = GenerationConfig()
        attention_mask = attention_mask.long()
        try:
            with folded_for_inference(model):
                return model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    past_key_values=shared_prompt_cache(model, input_ids, attention_mask),
                    logits_processor=LogitsProcessorList(processors),
                    **kwargs,
                )
        finally:
            inner.generation_config = saved


def shared_prompt_cache(model, input_ids, attention_mask):
    """The KV cache of every row's prompt but its last token, each distinct prompt computed once; None when no two
    rows share a prompt (generate then prefills as usual).

    K samples of one prompt (candidates, best-of-N, RLOO/GRPO groups) sit in K rows with the same tokens: prefilling
    them once instead of K times removes (K - 1) / K of the prefill, which on a CPU costs as much per token as
    decoding. `generate` continues from the cache: it runs only each row's last prompt token, then decodes, so the
    logits every sampled token is drawn from are the same as without it (tests/test_shared_prompt_cache.py).
    """
    import torch

    from workbench.modeling.tokens import position_ids_from_mask

    config = getattr(model, "active_peft_config", None)
    if config is not None and config.is_prompt_learning:
        return None  # PEFT prepends the virtual tokens inside generate: a cache from outside would not hold them
    rows = torch.cat([input_ids, attention_mask], dim=1)
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    if input_ids.shape[1] < 2 or unique.shape[0] == rows.shape[0]:
        return None
    length = input_ids.shape[1]
    ids, mask = unique[:, : length - 1], unique[:, length : 2 * length - 1]  # all but the last token
    positions = position_ids_from_mask(mask)  # left padding: as generate's own prefill numbers them
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    if not hasattr(cache, "batch_select_indices"):  # a model whose cache cannot be re-batched prefills as usual
        return None
    cache.batch_select_indices(inverse.cpu())  # CPU indices serve cache layers on any device (several GPUs)
    return cache


def generate_completions(
    model,
    tokenizer,
    prompts: list[list[dict]],
    k: int,
    sampling: Sampling,
    batch_size: int = 8,
    seed: int = 0,
    progress: bool = True,
) -> list[list[str]]:
    """`k` completions for each chat prompt, in prompt order; batch `b` is sampled under seed `seed + b`."""
    import torch
    from tqdm import tqdm

    from workbench.modeling.tokens import encode_prompts, left_pad

    if k < 1 or batch_size < 1:
        raise UserError(f"k and batch_size must be >= 1; got {k}, {batch_size}")
    encoded = encode_prompts(tokenizer, prompts)
    jobs = [(index, ids) for index, ids in enumerate(encoded) for _ in range(k)]
    results: list[list[str]] = [[] for _ in prompts]
    model.eval()
    batches = range(0, len(jobs), batch_size)
    for number, start in enumerate(tqdm(batches, desc="generating", unit="batch", disable=not progress)):
        batch = jobs[start : start + batch_size]
        input_ids, attention_mask = left_pad([ids for _, ids in batch], tokenizer.pad_token_id)
        torch.manual_seed(seed + number)
        with torch.inference_mode():
            output = sampling.generate(model, tokenizer, input_ids.to(model.device), attention_mask.to(model.device))
        new_tokens = output[:, input_ids.shape[1] :]
        for (index, _), tokens in zip(batch, new_tokens):
            results[index].append(tokenizer.decode(tokens, skip_special_tokens=True).strip())
    return results
