"""One PPO rollout on the single base: prompts in, a scored `RolloutBatch` out.

All four roles run on the same quantized weights (workbench/modeling/single_base.py): `policy` samples, `ref` gives
the reference log-probs, `value` the per-token values, `reward` the score. Shapes follow workbench/rl/buffer.py:
queries left-padded, responses right-padded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.modeling import adapters, heads
from workbench.modeling.generation import Sampling
from workbench.modeling.sampled_logprobs import SampledTokenLogprobs
from workbench.modeling.single_base import (
    POLICY,
    REF,
    REWARD,
    VALUE,
    response_logprobs,
    response_logprobs_and_features,
    response_values,
    reward_scores,
)
from workbench.modeling.tokens import encode_prompts, left_pad
from workbench.rl.buffer import RolloutBatch, pad_to_length
from workbench.rl.phase_timer import PhaseTimer
from workbench.rl.rewards import has_stop_token, is_stop_token, truncate_at_stop_tokens


# ── one rollout ──────────────────────────────────────────────────────────────────────────────────────────────────────
@dataclass
class Rollout:
    batch: RolloutBatch  # rewards/advantages/returns not yet filled in
    ended: torch.Tensor  # [batch] bool: the response has a stop token
    empty: torch.Tensor  # [batch] bool: nothing but whitespace before the stop token
    entropy: torch.Tensor  # [batch, T] per-token entropy of the policy at rollout time
    prompts: list[list[dict]]
    responses: list[str]


def _chunks(total: int, size: int):
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


@torch.no_grad()
def collect(
    model,
    tokenizer,
    prompts: list[list[dict]],
    sampling: Sampling,
    max_prompt_length: int,
    stop_ids: list[int],
    device,
    chunk: int,
    timer: PhaseTimer | None = None,
    with_values: bool = True,
    value_on_ref_features: bool = False,
) -> Rollout:
    """Sample one response per prompt with `policy`, recording each sampled token's log-prob and entropy as it is
    drawn (workbench/modeling/sampled_logprobs.py: no policy pass after sampling), then score it with `ref`, `value`
    and `reward`.

    `with_values` False (a critic-free estimator): no `value` adapter is loaded and the values are left at 0.
    `value_on_ref_features`: the `value` head reads the reference pass's final hidden states, kept in the batch
    (`value_features`) for the value updates: no value pass.
    `chunk` bounds how many sequences go through the model at once (generation and each forward pass). `timer` gets
    each phase's seconds. Only sampling folds the policy's LoRA into a float32 CPU base (Sampling.generate): for one
    forward pass of a rollout's few sequences, folding and restoring the weights costs more than it saves (measured
    with bench/ppo_step_time.py: ~0.9 s per fold against ~0.3 s saved per scoring pass at batch 8).
    """
    timer = timer or PhaseTimer(device)
    pad_id = tokenizer.pad_token_id
    query_ids, query_mask = left_pad(encode_prompts(tokenizer, prompts, max_prompt_length), pad_id)
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    chunks = list(_chunks(len(prompts), chunk))

    def scored(name: str, phase: str, score) -> list:
        with adapters.use_adapter(model, name), timer(phase):
            return [score(rows) for rows in chunks]

    def parts(rows: slice) -> tuple:
        return query_ids[rows], query_mask[rows], response_ids[rows], response_mask[rows]

    def sample(rows: slice) -> tuple:
        """One chunk's sequences with the log-probs and entropy of its sampled tokens, recorded as they are drawn
        (as TRL's PPOTrainer takes them from generation's logits): no separate policy forward pass."""
        recorder = SampledTokenLogprobs(sampling.temperature)
        output = sampling.generate(model, tokenizer, query_ids[rows], query_mask[rows], stop_ids, [recorder])
        return output, *recorder.finish(output)

    sampled = scored(POLICY, "generation", sample)
    width = max(output.shape[1] for output, _, _ in sampled) - query_ids.shape[1]
    raw = torch.cat([pad_to_length(output[:, query_ids.shape[1] :], width, pad_id) for output, _, _ in sampled])
    ended = has_stop_token(raw, stop_ids)
    response_ids, response_mask = truncate_at_stop_tokens(raw, stop_ids, pad_id)
    # a chunk whose responses all stopped sooner is padded with 0: positions past every stop token, masked everywhere
    logprobs = [pad_to_length(lp, width, 0.0) for _, lp, _ in sampled]
    entropy = [pad_to_length(ent, width, 0.0) for _, _, ent in sampled]
    features, temperature = None, sampling.temperature
    if value_on_ref_features:  # one reference pass gives the reference log-probs and the critic's inputs
        pairs = scored(
            REF, "reference_logprobs", lambda rows: response_logprobs_and_features(model, *parts(rows), temperature)
        )
        ref_logprobs = torch.cat([ref for ref, _ in pairs])
        features = torch.cat([hidden for _, hidden in pairs])
        with timer("values"):
            values = heads.head_values(model, VALUE, features)
    else:
        ref_logprobs = torch.cat(
            scored(REF, "reference_logprobs", lambda rows: response_logprobs(model, *parts(rows), temperature)[0])
        )
        if with_values:
            values = torch.cat(scored(VALUE, "values", lambda rows: response_values(model, *parts(rows))))
        else:
            values = torch.zeros_like(ref_logprobs)

    texts = tokenizer.batch_decode(
        [ids[mask].tolist() for ids, mask in zip(response_ids, response_mask)], skip_special_tokens=True
    )
    stop = is_stop_token(response_ids, stop_ids)
    content = tokenizer.batch_decode(
        [ids[mask & ~is_stop].tolist() for ids, mask, is_stop in zip(response_ids, response_mask, stop)],
        skip_special_tokens=True,
    )
    empty = torch.tensor([not text.strip() for text in content], dtype=torch.bool, device=response_ids.device)
    scores = torch.cat(
        scored(REWARD, "reward", lambda rows: reward_scores(model, tokenizer, prompts[rows], texts[rows], device))
    )
    batch = RolloutBatch(
        query_ids=query_ids,
        query_mask=query_mask,
        response_ids=response_ids,
        response_mask=response_mask,
        logprobs=torch.cat(logprobs),
        ref_logprobs=ref_logprobs,
        values=values,
        scores=scores,
        value_features=features,
    )
    return Rollout(batch, ended, empty, torch.cat(entropy), list(prompts), texts)
