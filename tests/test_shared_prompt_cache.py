"""K samples of one prompt share one prefill (generation.shared_prompt_cache): each distinct prompt goes through the
model once, and the tokens sampled from the shared cache are the ones sampled without it, greedy and at T = 1, on a
float32 base whose LoRA is folded for sampling."""

from __future__ import annotations

import pytest
import torch
from model_args import lora, margs

from workbench.modeling import generation, loading
from workbench.modeling.generation import Sampling
from workbench.modeling.tokens import encode_prompts, left_pad

PROMPTS = [  # two lengths, so the shorter one is left-padded
    [{"role": "user", "content": "Name three fruits."}],
    [{"role": "user", "content": "Write one sentence about the sea and the wind at night, please."}],
]
K = 3


@pytest.fixture(scope="module")
def policy(tiny_model_path):
    from peft import get_peft_model

    args = margs(tiny_model_path)
    model = get_peft_model(loading.load_model(args), lora())
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter change the answers
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    tokenizer = loading.load_tokenizer(args, padding_side="left")
    ids, mask = left_pad([row for row in encode_prompts(tokenizer, PROMPTS) for _ in range(K)], tokenizer.pad_token_id)
    return model, tokenizer, ids, mask


def sample(model, tokenizer, ids, mask, sampling):
    torch.manual_seed(0)
    with torch.inference_mode():
        return sampling.generate(model, tokenizer, ids, mask)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_shared_prefill_samples_the_same_tokens(policy, monkeypatch, temperature):
    model, tokenizer, ids, mask = policy
    sampling = Sampling(max_new_tokens=12, temperature=temperature)
    shared = sample(model, tokenizer, ids, mask, sampling)
    monkeypatch.setattr(generation, "shared_prompt_cache", lambda *args: None)  # the control: every row prefilled
    alone = sample(model, tokenizer, ids, mask, sampling)
    assert shared.shape[0] == len(PROMPTS) * K
    torch.testing.assert_close(shared, alone, rtol=0, atol=0)
    if temperature > 0:  # sampling really draws: the K answers to one prompt are not all alike
        assert len({tuple(row.tolist()) for row in shared[:K]}) > 1


def test_each_distinct_prompt_is_prefilled_once(policy):
    model, tokenizer, ids, mask = policy
    shapes = []
    embed = model.get_input_embeddings()
    hook = embed.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    try:
        sample(model, tokenizer, ids, mask, Sampling(max_new_tokens=4, temperature=1.0))
    finally:
        hook.remove()
    length = ids.shape[1]
    # two prompts of all but their last token, then every row's last prompt token, then one token a step
    assert shapes[0] == (len(PROMPTS), length - 1)
    assert shapes[1:] == [(len(PROMPTS) * K, 1)] * 4


def test_distinct_prompts_prefill_as_usual(policy):
    model, tokenizer, ids, mask = policy
    distinct = ids[::K], mask[::K]
    assert generation.shared_prompt_cache(model, *distinct) is None
    cache = generation.shared_prompt_cache(model, ids, mask)
    assert cache.get_seq_length() == ids.shape[1] - 1
    assert cache.layers[0].keys.shape[0] == len(PROMPTS) * K


def test_prompt_tuning_prefills_as_usual(tiny_model_path):
    """PEFT puts a prompt-tuning adapter's virtual tokens in front inside generate: no cache from outside."""
    from peft import get_peft_model

    from workbench.modeling import adapters
    from workbench.modeling.arguments import ModelArguments

    args = margs(tiny_model_path)
    config = adapters.get_peft_config(ModelArguments(peft_method="prompt_tuning", num_virtual_tokens=4))
    model = get_peft_model(loading.load_model(args), config).eval()
    tokenizer = loading.load_tokenizer(args, padding_side="left")
    ids, mask = left_pad([row for row in encode_prompts(tokenizer, PROMPTS) for _ in range(K)], tokenizer.pad_token_id)
    assert generation.shared_prompt_cache(model, ids, mask) is None
    out = sample(model, tokenizer, ids, mask, Sampling(max_new_tokens=4, temperature=1.0))
    assert out.shape == (len(PROMPTS) * K, ids.shape[1] + 4)
