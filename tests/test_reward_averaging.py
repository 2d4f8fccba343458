"""Weight-averaged reward adapters (reward_averaging.average_reward_adapters): the averaged LoRA's weight update in
every layer is the mean of the members' updates, its head the mean of their heads, and the result is an ordinary
reward adapter that the reward stage's own model and the single base score alike."""

from __future__ import annotations

import pytest
import torch
from model_args import margs, quant
from test_heads import TEXTS, train_reward_adapter

from workbench.modeling import heads, loading
from workbench.modeling.arguments import from_manifest
from workbench.modeling.reward_averaging import average_reward_adapters
from workbench.modeling.reward_model import load_reward_model, score_sequences
from workbench.modeling.tokens import reward_input_ids, right_pad

FP32 = quant(dtype="float32")


@pytest.fixture(scope="module")
def members(tmp_path_factory, tiny_model_path):
    return [train_reward_adapter(tmp_path_factory.mktemp(f"member{seed}"), seed=seed) for seed in (0, 1)]


@pytest.fixture(scope="module")
def averaged(members, tmp_path_factory):
    return average_reward_adapters(members, tmp_path_factory.mktemp("averaged") / "adapter", margs(None, FP32))


def test_update_and_head_are_the_members_means(members, averaged):
    model = loading.load_model(margs("tiny-llama", FP32)).eval()
    names = ["m0", "m1"]
    for name, path in zip(names, members):
        model = heads.attach_scalar_adapter(model, name, path)
    model = heads.attach_scalar_adapter(model, "avg", averaged)
    layers = [m for m in model.modules() if hasattr(m, "get_delta_weight") and "avg" in getattr(m, "lora_A", {})]
    assert layers  # every LoRA layer of the members is in the average
    for layer in layers:
        updates = [layer.get_delta_weight(name) for name in names]
        assert (updates[0] - updates[1]).abs().max() > 1e-6  # two seeds, two different updates
        torch.testing.assert_close(layer.get_delta_weight("avg"), (updates[0] + updates[1]) / 2, atol=1e-6, rtol=0)
        assert layer.r["avg"] == layer.r["m0"] + layer.r["m1"]
    expected_head = (model.workbench_heads["m0"].weight + model.workbench_heads["m1"].weight) / 2
    torch.testing.assert_close(model.workbench_heads["avg"].weight, expected_head)


def test_averaged_adapter_scores_like_any_reward_adapter(averaged, members):
    scorer, tokenizer, manifest = load_reward_model(averaged, margs(None, FP32))  # the reward stage's own model
    sequences = [reward_input_ids(tokenizer, prompt, answer) for prompt, answer in TEXTS]
    stage = torch.tensor(score_sequences(scorer, sequences, tokenizer.pad_token_id, batch_size=8))
    args = from_manifest(manifest.base_model, margs("tiny-llama"))  # the members' precision (the stage's 4-bit)
    model = heads.attach_scalar_adapter(loading.load_model(args).eval(), "reward", averaged)
    ids, mask = right_pad(sequences, tokenizer.pad_token_id)
    with torch.no_grad():
        single = heads.scalar_scores(model, "reward", ids, mask)
    torch.testing.assert_close(single, stage, atol=1e-4, rtol=0)
    assert manifest.stage == "reward" and [p["role"] for p in manifest.parents] == ["member", "member"]
    assert manifest.extra["averaged"]["members"] == len(members)


def test_members_on_a_middle_layer_average_into_an_adapter_that_reads_it(members, tmp_path_factory):
    """Members trained with `reward_layer: 1` (tiny-llama's first decoder layer of 2): the average keeps the layer its
    head reads, and scores alike on the stage's cut model and on the single base. A member reading another layer is
    refused."""
    from workbench.errors import UserError
    from workbench.modeling import adapters

    extra = "reward_layer: 1\nlinear_head_fit: true\n"
    cut = [train_reward_adapter(tmp_path_factory.mktemp(f"cut{seed}"), seed=seed, extra=extra) for seed in (0, 1)]
    averaged = average_reward_adapters(cut, tmp_path_factory.mktemp("cut-averaged") / "adapter", margs(None, FP32))
    assert adapters.read_manifest(averaged).extra["head"]["layer"] == 1
    scorer, tokenizer, manifest = load_reward_model(averaged, margs(None, FP32))
    assert scorer.config.num_hidden_layers == 1
    sequences = [reward_input_ids(tokenizer, prompt, answer) for prompt, answer in TEXTS]
    stage = torch.tensor(score_sequences(scorer, sequences, tokenizer.pad_token_id, batch_size=8))
    args = from_manifest(manifest.base_model, margs("tiny-llama"))
    model = heads.attach_scalar_adapter(loading.load_model(args).eval(), "reward", averaged)
    ids, mask = right_pad(sequences, tokenizer.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(heads.scalar_scores(model, "reward", ids, mask), stage, atol=1e-4, rtol=0)
    with pytest.raises(UserError, match="read the same decoder layer; the members read all, 1"):
        average_reward_adapters([cut[0], members[0]], tmp_path_factory.mktemp("mixed") / "adapter", margs(None, FP32))
