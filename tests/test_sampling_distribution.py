"""Rollouts come from exactly the distribution their log-probs describe, softmax(logits / T), whatever the model's own
`generation_config` says (Qwen2.5-Instruct ships repetition_penalty 1.05): otherwise PPO's old log-probs, KL and
ratio describe another policy than the one that wrote the answers."""

from __future__ import annotations

import pytest
import torch
from model_args import margs
from scipy.stats import chisquare

from workbench.errors import UserError
from workbench.modeling import loading
from workbench.modeling.generation import Sampling, stop_token_ids
from workbench.modeling.single_base import response_logprobs
from workbench.modeling.tokens import encode_prompts
from workbench.rl.ppo_config import PPOConfig

DRAWS = 3000
TEMPERATURE = 0.8
WEIGHTS = [0.40, 0.25, 0.15, 0.10, 0.06, 0.04]  # the next-token distribution we build, over prompt tokens


@pytest.fixture(scope="module", params=["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def peaked(tiny_model_path, request):
    """The tiny model with an output head rebuilt so that, after the prompt, six of the prompt's own tokens hold ~99%
    of the next-token mass in known proportions (a random tiny model spreads it over 49k tokens), and a
    generation_config that would change that distribution if it were applied. On the CPU, and on a GPU where there
    is one (CUDA's sampling kernels and its fused softmax must draw from the same distribution)."""
    args = margs(tiny_model_path)
    model, tokenizer = loading.load_model(args), loading.load_tokenizer(args, padding_side="left")
    query = torch.tensor(encode_prompts(tokenizer, [[{"role": "user", "content": "apple banana cherry grape lemon"}]]))
    with torch.no_grad():
        hidden = model.model(query).last_hidden_state[0, -1]
    stops = set(stop_token_ids(tokenizer))
    targets = [t for t in dict.fromkeys(query[0].tolist()) if t not in stops][: len(WEIGHTS)]
    assert len(targets) == len(WEIGHTS)
    head = torch.nn.Linear(hidden.shape[0], model.config.vocab_size, bias=False)
    head.weight.data.zero_()
    for token, weight in zip(targets, WEIGHTS):  # logit_t = h · W_t = 16 + log(weight) for the six, 0 elsewhere
        head.weight.data[token] = (16 + torch.log(torch.tensor(weight))) * hidden / hidden.dot(hidden)
    model.lm_head = head
    model.config.tie_word_embeddings = False
    # each of these changes the sampled distribution: all six targets are in the prompt (repetition penalty), and
    # min_p drops the two smallest
    model.generation_config.repetition_penalty = 1.8
    model.generation_config.min_p = 0.2
    model.generation_config.typical_p = 0.5
    model.eval()
    model, query = model.to(request.param), query.to(request.param)
    with torch.no_grad():
        expected = torch.softmax(model(query).logits[0, -1].float() / TEMPERATURE, -1)
    return model, tokenizer, query, targets, expected


def draw(model, tokenizer, query, sampling, guarded=True):
    ids = query.repeat(DRAWS, 1)
    mask = torch.ones_like(ids)
    torch.manual_seed(0)
    with torch.no_grad():
        if guarded:
            return sampling.generate(model, tokenizer, ids, mask)[:, -1]
        # the call as it was before: only our settings as keyword arguments, the model's generation_config beside them
        return model.generate(input_ids=ids, attention_mask=mask, **sampling.generate_kwargs(tokenizer))[:, -1]


def chi_square_p(tokens, targets, expected) -> float:
    """p-value of the drawn tokens against `expected`, over the six targets and "anything else"."""
    observed = [int((tokens == t).sum()) for t in targets]
    observed.append(len(tokens) - sum(observed))
    probabilities = [float(expected[t]) for t in targets]
    probabilities.append(1.0 - sum(probabilities))
    return chisquare(observed, [p * len(tokens) for p in probabilities]).pvalue


def test_sampled_tokens_follow_softmax_of_logits_over_temperature(peaked):
    model, tokenizer, query, targets, expected = peaked
    assert float(expected[targets].sum()) > 0.98  # the built distribution is the one we meant
    sampling = Sampling(max_new_tokens=1, temperature=TEMPERATURE)
    tokens = draw(model, tokenizer, query, sampling)
    assert chi_square_p(tokens, targets, expected) > 1e-3
    # and the log-probs PPO stores for those tokens are log softmax(logits / T) at them
    response = tokens[:, None]
    queries, responses = query.repeat(8, 1), response[:8]
    logprobs, _ = response_logprobs(
        model, queries, torch.ones_like(queries), responses, torch.ones_like(responses), TEMPERATURE
    )
    torch.testing.assert_close(logprobs[:, 0], torch.log(expected[tokens[:8]]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("truncation", [dict(top_k=3), dict(top_p=0.8)])
def test_truncated_sampling_follows_transformers_own_warpers(peaked, truncation):
    """top_k / top_p (the generate and eval stages allow them): the tokens follow softmax of the logits under
    transformers' own temperature, top-k and top-p warpers, in its order (on the CPU our sampler applies them,
    workbench/modeling/categorical_sampler.py; on a GPU transformers' sampling does)."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    model, tokenizer, query, targets, expected = peaked
    warpers = [TemperatureLogitsWarper(TEMPERATURE)]
    warpers += [TopKLogitsWarper(**truncation)] if "top_k" in truncation else [TopPLogitsWarper(**truncation)]
    with torch.no_grad():
        logits = model(query).logits[:, -1].float()
    truncated = torch.softmax(LogitsProcessorList(warpers)(query, logits), -1)[0]
    kept = int((truncated > 0).sum())
    assert kept == 3  # both keep the three likeliest tokens (0.40, 0.25, 0.15 before the temperature)
    tokens = draw(model, tokenizer, query, Sampling(max_new_tokens=1, temperature=TEMPERATURE, **truncation))
    assert set(tokens.tolist()) <= set(targets[:kept])
    observed = [int((tokens == t).sum()) for t in targets[:kept]]
    # the kept probabilities in float64, summing to 1: in float32 they miss it by ~1e-7, and scipy's chisquare
    # refuses expected counts whose sum differs from the observed one by more than ~1.5e-8 (relative)
    kept_probabilities = [float(truncated[t]) for t in targets[:kept]]
    expected_counts = [p / sum(kept_probabilities) * len(tokens) for p in kept_probabilities]
    assert chisquare(observed, expected_counts).pvalue > 1e-3


def test_without_the_guard_the_models_generation_config_changes_the_distribution(peaked):
    """The control: the same draw through a bare `generate` call is detectably off (so the test above can fail)."""
    model, tokenizer, query, targets, expected = peaked
    tokens = draw(model, tokenizer, query, Sampling(max_new_tokens=1, temperature=TEMPERATURE), guarded=False)
    assert chi_square_p(tokens, targets, expected) < 1e-6
    assert model.generation_config.repetition_penalty == 1.8  # the guard put the model's own settings back


def test_ppo_refuses_truncated_sampling():
    for change in (dict(top_k=50), dict(top_p=0.9)):
        config = PPOConfig(sft_adapter="a", reward_adapter="b", **change)
        with pytest.raises(UserError, match="top_k must be 0 and top_p 1.0"):
            config.check()
