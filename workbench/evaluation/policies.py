"""One base, every policy as a named adapter: answers, log-ratios to a reference, and reward-model scores.

The base is loaded once, quantized as the reward adapter's manifest says (the reward stage's own precision, so its
scores are the reward stage's). Each policy adapter is attached frozen under its own name; the policy named `base`
with no adapter is the bare base (PEFT's `disable_adapter`). The reward adapter and its head join as `reward`
(workbench/modeling/heads.py), exactly as in PPO, whose tests prove it scores as the reward stage's model does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

from workbench.errors import UserError
from workbench.evaluation.metrics import loops
from workbench.modeling import adapters
from workbench.modeling.single_base import REWARD  # the adapter name single_base.reward_scores reads


def active(model, name: str, adapter_dir):
    """A context with policy `name` answering: its adapter, or no adapter at all for the bare base."""
    if adapter_dir is None:
        return model.disable_adapter()
    return adapters.use_adapter(model, name)


def judge_name(index: int) -> str:
    """The adapter name of the `index`-th reward model that only measures agreement (`agreement_reward_adapters`)."""
    return f"{REWARD}_judge_{index}"


def load(reward_adapter, policies: Sequence[dict], args, judges: Sequence[str] = ()):
    """The base named in the reward adapter's manifest, in its quantization, carrying every policy and `reward`
    (and each of `judges`, reward adapters named `judge_name(i)`).

    `args`: the ModelArguments whose device group places the model. Returns (model, tokenizer). Every adapter's
    manifest must name the same base weights (checked on attach).
    """
    from workbench.modeling import heads, loading
    from workbench.modeling.arguments import from_manifest

    manifest = adapters.read_manifest(reward_adapter)
    args = from_manifest(manifest.base_model, args)
    tokenizer = loading.load_tokenizer(args, padding_side="left")
    model = loading.load_model(args)
    for policy in policies:
        if policy["adapter"] is not None and policy["runs_as"] == policy["name"]:
            model = adapters.attach(model, policy["name"], path=policy["adapter"], trainable=False)
    model = heads.attach_scalar_adapter(model, REWARD, reward_adapter, trainable=False)
    for index, path in enumerate(judges):
        model = heads.attach_scalar_adapter(model, judge_name(index), path, trainable=False)
    model.eval()
    return model, tokenizer


def response_tokens(tokenizer, prompt: list[dict], response: str, stop_ids: Sequence[int]) -> tuple[list, list]:
    """(query ids, response ids) of an answer as the reward model reads it: the chat template over prompt + answer.

    The query is the prompt with the generation prompt; the response is what the template adds after it, up to and
    including the first stop token (the end of turn), so the answer is scored as a finished chat turn.
    """
    from workbench.modeling.tokens import encode_prompts, reward_input_ids

    query = encode_prompts(tokenizer, [prompt], max_prompt_length=10**9)[0]
    full = reward_input_ids(tokenizer, prompt, response)
    if full[: len(query)] != query:
        raise UserError("the chat template renders a prompt differently with and without its answer; cannot score")
    tail = full[len(query) :]
    for index, token in enumerate(tail):
        if token in stop_ids:
            return query, tail[: index + 1]
    return query, tail


@contextlib.contextmanager
def _no_grad():
    import torch

    with torch.inference_mode():
        yield


def summed_logprobs(model, policy: dict, queries, responses, pad_id: int, batch_size: int, temperature: float):
    """Per answer: the sum of its response tokens' log-probs under `policy`, batched."""
    import torch

    from workbench.modeling.single_base import response_logprobs
    from workbench.modeling.tokens import left_pad, right_pad

    device = next(model.parameters()).device
    sums = []
    with _no_grad(), active(model, policy["runs_as"], policy["adapter"]), adapters.folded_for_inference(model):
        for start in range(0, len(queries), batch_size):
            query_ids, query_mask = left_pad(queries[start : start + batch_size], pad_id)
            response_ids, response_mask = right_pad(responses[start : start + batch_size], pad_id)
            logprobs, _ = response_logprobs(
                model,
                query_ids.to(device),
                query_mask.to(device),
                response_ids.to(device),
                response_mask.to(device),
                temperature,
            )
            logprobs = torch.where(response_mask.to(device), logprobs, 0.0).float().cpu()
            sums += logprobs.sum(dim=1).tolist()
    return sums


def reward_scores(model, tokenizer, prompts, answers, batch_size: int, adapter: str = REWARD) -> list[float]:
    """The reward adapter + head's score of each (prompt, answer), tokenised as the reward stage trained it, in the
    given order. The rows go through in batches of one prompt's answers side by side, so that each batch runs a
    prompt's tokens once for all its answers (workbench/modeling/shared_prefix.py)."""
    from workbench.modeling.single_base import reward_scores as score_batch

    device = next(model.parameters()).device
    keys = [json.dumps(prompt, sort_keys=True) for prompt in prompts]
    order = sorted(range(len(prompts)), key=keys.__getitem__)  # stable: a prompt's answers keep their order
    scores: list[float] = [0.0] * len(prompts)
    with _no_grad(), adapters.use_adapter(model, adapter), adapters.folded_for_inference(model):
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = [prompts[i] for i in rows], [answers[i] for i in rows]
            for row, score in zip(rows, score_batch(model, tokenizer, *batch, device, adapter).tolist()):
                scores[row] = score
    return scores


def candidate_rewards(model, tokenizer, prompts, candidates: list[list[str]], batch_size: int) -> list[list[float]]:
    """The reward model's score of every candidate, per prompt (a prompt's candidates side by side: its tokens run
    once for all of them)."""
    flat_prompts = [prompt for prompt, texts in zip(prompts, candidates) for _ in texts]
    flat_texts = [text for texts in candidates for text in texts]
    scores = iter(reward_scores(model, tokenizer, flat_prompts, flat_texts, batch_size))
    return [[next(scores) for _ in texts] for texts in candidates]


def best_index(rewards: list[float]) -> int:
    """The candidate best-of-N keeps: the highest reward, the first of equals."""
    return rewards.index(max(rewards))


def best_by_reward(model, tokenizer, prompts, candidates: list[list[str]], batch_size: int):
    """Per prompt, the candidate the reward model scores highest (the first of equals): best-of-N.

    Returns (picks, their scores): `judge` takes the scores as they are rather than scoring the picks again."""
    rewards = candidate_rewards(model, tokenizer, prompts, candidates, batch_size)
    return [texts[best_index(mine)] for texts, mine in zip(candidates, rewards)], [max(mine) for mine in rewards]


def judge(
    model,
    tokenizer,
    rows: list[dict],
    answers: dict,
    policies: list[dict],
    reference: str,
    *,
    gold: bool,
    batch_size: int,
    temperature: float,
    known_rewards: dict | None = None,
) -> list[dict]:
    """One sample row per prompt and policy: the answer, its reward, gold-rubric score, log-ratio to `reference`.

    `known_rewards`: {policy name: scores} already computed (best-of-N's picks). A policy answering under the
    reference's own adapter (the reference itself, best-of-N) has a log-ratio of 0 by construction: its answers take
    no log-prob pass at all, and their `logprob` and `ref_logprob` are None."""
    from tqdm.auto import tqdm

    from labeling import rubric
    from workbench.modeling.generation import stop_token_ids

    stops = stop_token_ids(tokenizer)
    prompts = [row["prompt"] for row in rows]
    ref = next(p for p in policies if p["name"] == reference)
    # the reward model's scores of every policy without known ones in one call: the answers to one prompt then
    # share its tokens (reward_scores)
    unscored = [p["name"] for p in policies if not (known_rewards or {}).get(p["name"])]
    flat = reward_scores(
        model, tokenizer, prompts * len(unscored), [t for name in unscored for t in answers[name]], batch_size
    )
    scored = {name: flat[i * len(prompts) : (i + 1) * len(prompts)] for i, name in enumerate(unscored)}
    samples = []
    for policy in tqdm(policies, desc="scoring", unit="policy"):
        texts = answers[policy["name"]]
        tokens = [response_tokens(tokenizer, p, t, stops) for p, t in zip(prompts, texts)]
        queries, responses = [q for q, _ in tokens], [r for _, r in tokens]
        args = (queries, responses, tokenizer.pad_token_id, batch_size, temperature)
        if (policy["runs_as"], policy["adapter"]) == (ref["runs_as"], ref["adapter"]):
            own = ref_sums = [None] * len(texts)
        else:
            own, ref_sums = summed_logprobs(model, policy, *args), summed_logprobs(model, ref, *args)
        rewards = (known_rewards or {}).get(policy["name"]) or scored[policy["name"]]
        for i, row in enumerate(rows):
            kl = 0.0 if own[i] is None else own[i] - ref_sums[i]
            samples.append(
                {
                    "prompt_id": row["prompt_id"],
                    "prompt": row["prompt"],
                    "policy": policy["name"],
                    "response": texts[i],
                    "reward": rewards[i],
                    "gold": rubric.score(row["prompt"], texts[i]) if gold else None,
                    "gold_parts": rubric.points(row["prompt"], texts[i]) if gold else None,
                    "logprob": own[i],
                    "ref_logprob": ref_sums[i],
                    "kl": kl,
                    "kl_per_token": kl / len(responses[i]),
                    "tokens": len(responses[i]),
                    "words": len(texts[i].split()),
                    "looping": loops(texts[i]),
                }
            )
    return samples
