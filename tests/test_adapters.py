"""Adapter management: PEFT methods, several named adapters on one base, save/load round trip, base check, merge."""

from __future__ import annotations

import json

import pytest
import torch
from model_args import lora, margs, quant
from peft import PeftModel
from transformers import AutoModelForCausalLM

from workbench.errors import UserError
from workbench.modeling import adapters, loading

IDS = torch.tensor([[1, 520, 300, 41, 1200, 7, 99]])


def load(path, precision=None, **kwargs):
    """The tiny base on the CPU: unquantized float32 unless `precision` says otherwise (quantized needs use_peft)."""
    quantized = bool(precision and (precision["load_in_4bit"] or precision["load_in_8bit"]))
    return loading.load_model(margs(str(path), precision, use_peft=quantized), **kwargs)


def randomise(model, name, seed):
    """Give adapter `name` non-zero weights (a fresh LoRA is the identity) so that it changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if f".{name}." in parameter_name or parameter_name.endswith(f".{name}"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)


def logits(model):
    model.eval()  # LoRA dropout off
    with torch.no_grad():
        return model(IDS).logits


def manifest_for(model, stage="test"):
    return adapters.AdapterManifest(stage=stage, base_model=model.workbench_base.to_dict(), peft_method="lora")


def test_two_named_adapters_switch_changes_outputs(tiny_model_path):
    model = load(tiny_model_path)
    base_logits = logits(model)
    config = lora(r=4, alpha=8)
    model = adapters.attach(model, "policy", config=config)
    model = adapters.attach(model, "value", config=lora(r=4, alpha=8))
    randomise(model, "policy", 1)
    randomise(model, "value", 2)
    adapters.switch(model, "policy")
    policy = logits(model)
    with adapters.use_adapter(model, "value"):
        value = logits(model)
    assert model.active_adapter == "policy"  # restored after the block
    with model.disable_adapter():
        assert torch.allclose(logits(model), base_logits, atol=1e-5)
    assert not torch.allclose(policy, value) and not torch.allclose(policy, base_logits)


def test_frozen_adapter_stays_frozen_when_switched_to(tiny_model_path):
    model = adapters.attach(load(tiny_model_path), "ref", config=lora(r=4))
    model = adapters.attach(model, "policy", config=lora(r=4))
    adapters.freeze(model, "ref")
    adapters.switch(model, "ref")
    assert adapters.trainable_parameters(model, "ref") == 0
    adapters.switch(model, "policy")
    assert adapters.trainable_parameters(model, "policy") > 0
    with pytest.raises(UserError, match="no adapter named 'nope'"):
        adapters.switch(model, "nope")
    with pytest.raises(UserError, match="already attached"):
        adapters.attach(model, "policy", config=lora(r=4))


def test_save_load_round_trip_and_plain_peft_loads_it(tiny_model_path, tmp_path):
    model = adapters.attach(load(tiny_model_path), "policy", config=lora(r=4))
    randomise(model, "policy", 3)
    expected = logits(model)
    out = adapters.save(model, "policy", tmp_path / "policy", manifest_for(model))
    assert {"adapter_config.json", "adapter_model.safetensors", "workbench.json"} <= {p.name for p in out.iterdir()}
    manifest = json.loads((out / "workbench.json").read_text())
    assert manifest["base_model"]["content_hash"].startswith("sha256:") and manifest["created_at"]

    reloaded = adapters.attach(load(tiny_model_path), "policy", path=out, trainable=False)
    assert torch.allclose(logits(reloaded), expected, atol=1e-5)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path), str(out))
    assert torch.allclose(logits(plain), expected, atol=1e-5)


def test_adapter_on_a_different_base_fails_clearly(tiny_model_path, tmp_path):
    from workbench.modeling.default_model import ensure_tiny_model

    model = adapters.attach(load(tiny_model_path), "policy", config=lora(r=4))
    out = adapters.save(model, "policy", tmp_path / "a", manifest_for(model))
    other = load(ensure_tiny_model("tiny-qwen2"))
    with pytest.raises(UserError, match="was trained on base 'tiny-llama|load the adapter onto the base"):
        adapters.attach(other, "policy", path=out)


def test_merge_gives_the_same_logits_as_base_plus_adapter(tiny_model_path, tmp_path):
    model = adapters.attach(load(tiny_model_path), "default", config=lora(r=4))
    randomise(model, "default", 4)
    expected = logits(model)
    merged = adapters.merge_and_unload(model)
    merged.save_pretrained(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not hasattr(plain, "peft_config")
    assert torch.allclose(logits(plain), expected, atol=1e-4)


def test_sampling_folds_the_active_lora_and_restores_the_base_bit_for_bit(tiny_model_path):
    """Generation on a float32 CPU base runs with the active LoRA folded in: the same tokens and logits as unfolded,
    and afterwards every base weight is exactly what it was. The bare base (disable_adapter) and a 4-bit base are
    never folded."""
    from workbench.modeling.generation import Sampling
    from workbench.modeling.loading import load_tokenizer

    model = adapters.attach(load(tiny_model_path), "policy", config=lora(r=4))
    model = adapters.attach(model, "other", config=lora(r=4))
    randomise(model, "policy", 5)
    randomise(model, "other", 6)
    adapters.switch(model, "policy")
    tokenizer = load_tokenizer(str(tiny_model_path))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    unfolded = logits(model)
    layers = adapters._foldable_lora_layers(model)
    assert len(layers) == sum(1 for n, _ in model.named_modules() if n.endswith("lora_A.policy"))
    with adapters.folded_for_inference(model):
        assert all(layer.merged for layer in layers)
        assert torch.allclose(logits(model), unfolded, atol=1e-5) and not torch.equal(logits(model), unfolded)
        with adapters.use_adapter(model, "policy"):  # switching to the folded adapter keeps it folded
            assert all(layer.merged for layer in layers)
        with adapters.use_adapter(model, "other"):  # another adapter: PEFT unfolds, the other one answers
            assert not any(layer.merged for layer in layers) and model.active_adapter == "other"
        assert model.active_adapter == "policy" and torch.allclose(logits(model), unfolded, atol=1e-5)
    assert all(not layer.merged for layer in layers)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert torch.equal(logits(model), unfolded)

    greedy = Sampling(max_new_tokens=6, temperature=0.0, min_new_tokens=6)
    ids, mask = IDS, torch.ones_like(IDS)
    folded_tokens = greedy.generate(model, tokenizer, ids, mask)
    with torch.no_grad():  # unfolded: the same greedy decoding by hand
        manual = ids
        for _ in range(6):
            manual = torch.cat([manual, model(manual).logits[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(folded_tokens, manual)
    with model.disable_adapter():
        assert adapters._foldable_lora_layers(model) == []
    quantized = adapters.attach(load(tiny_model_path, quant(load_in_4bit=True, dtype="float32")), "p", config=lora())
    assert adapters._foldable_lora_layers(quantized) == []


@pytest.mark.parametrize(
    "method,kwargs",
    [
        ("lora", dict(use_dora=True)),
        ("lora", dict(use_rslora=True, lora_target_modules=["q_proj", "v_proj"])),
        ("ia3", {}),
        ("prompt_tuning", dict(num_virtual_tokens=4)),
    ],
)
def test_peft_methods_train_a_step_on_4bit(tiny_model_path, method, kwargs):
    model = load(tiny_model_path, quant(load_in_4bit=True), for_training=True)
    model = adapters.attach(model, "default", config=lora(peft_method=method, r=4, **kwargs))
    trainable = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    loss = model(IDS, labels=IDS).loss
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, trainable))
    if method == "prompt_tuning":
        with pytest.raises(UserError, match="cannot be merged"):
            adapters.merge_and_unload(model)


def test_bad_peft_options():
    with pytest.raises(UserError, match="peft_method must be one of"):
        lora(peft_method="lokr")
    with pytest.raises(UserError, match="lora_r"):
        lora(r=0)


def test_a_policy_adapter_continues_only_an_sft_adapter_of_its_kind(tmp_path):
    """The RL stages' (ppo, raft) `policy_adapter`: none named is None; a LoRA policy on a LoRA SFT adapter is read;
    an IA3 policy on a LoRA SFT adapter is refused in one line naming both."""

    def written(name, method):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        adapters.AdapterManifest(stage="sft", base_model={}, peft_method=method).write(folder)
        return str(folder)

    sft, policy, ia3 = written("sft", "lora"), written("policy", "lora"), written("ia3", "ia3")
    sft_manifest = adapters.read_manifest(sft, "CAUSAL_LM", "sft_adapter")
    assert adapters.read_policy_manifest(None, sft, sft_manifest) is None
    assert adapters.read_policy_manifest(policy, sft, sft_manifest).peft_method == "lora"
    with pytest.raises(UserError) as refused:
        adapters.read_policy_manifest(ia3, sft, sft_manifest)
    assert str(refused.value) == (
        f"policy_adapter {ia3} is a ia3 adapter; sft_adapter {sft} is lora: "
        "the policy continues the SFT adapter's kind"
    )


def test_reward_lora_starts_from_the_sft_lora_with_a_fresh_head(tiny_model_path, tmp_path):
    """init_lora_from (the reward stage's init_from_sft): every LoRA tensor equals the SFT adapter's, the head is
    untouched, and a LoRA of another rank is refused naming the key."""
    from safetensors.torch import load_file

    policy = adapters.attach(load(tiny_model_path), "default", config=lora(r=4, alpha=8))
    randomise(policy, "default", 1)
    sft_dir = adapters.save(policy, "default", tmp_path / "sft", manifest_for(policy, "sft"))
    saved = load_file(sft_dir / "adapter_model.safetensors")

    reward = load(tiny_model_path, head="scalar", pad_token_id=0)
    reward = adapters.attach(reward, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    head = {k: p.detach().clone() for k, p in reward.named_parameters() if "score" in k}
    assert head
    assert adapters.init_lora_from(reward, "default", sft_dir) == len(saved)
    weights = {k.replace(".default.", "."): p for k, p in reward.named_parameters() if "lora_" in k}
    assert weights.keys() == saved.keys()
    assert all(torch.equal(weights[k], saved[k]) for k in saved)
    assert all(torch.equal(p, head[k]) for k, p in reward.named_parameters() if "score" in k)

    other = load(tiny_model_path, head="scalar", pad_token_id=0)
    other = adapters.attach(other, "default", config=lora(task_type="SEQ_CLS", r=8, alpha=8))
    with pytest.raises(UserError, match="adapter_config.json: r is 4; the adapter it initialises has 8"):
        adapters.init_lora_from(other, "default", sft_dir)


def test_a_reward_model_on_the_first_layer_starts_from_the_sft_lora_of_that_layer(tiny_model_path, tmp_path):
    """init_from_sft with `reward_layer: 1`: the reward model is the base cut after its first decoder layer, and its
    LoRA starts from the SFT LoRA's tensors of that layer (layer 1's have no counterpart and are left out)."""
    from safetensors.torch import load_file

    policy = adapters.attach(load(tiny_model_path), "default", config=lora(r=4, alpha=8))
    randomise(policy, "default", 1)
    sft_dir = adapters.save(policy, "default", tmp_path / "sft", manifest_for(policy, "sft"))
    saved = load_file(sft_dir / "adapter_model.safetensors")
    first = {k: v for k, v in saved.items() if adapters.layer_index(k) == 0}
    assert first and len(first) == len(saved) / 2  # tiny-llama has two decoder layers
    reward = load(tiny_model_path, head="scalar", pad_token_id=0, num_hidden_layers=1)
    reward = adapters.attach(reward, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    assert adapters.init_lora_from(reward, "default", sft_dir) == len(first)
    weights = {k.replace(".default.", "."): p for k, p in reward.named_parameters() if "lora_" in k}
    assert weights.keys() == first.keys() and all(torch.equal(weights[k], first[k]) for k in first)


def test_a_warm_start_copies_the_reward_lora_and_its_head(tiny_model_path, tmp_path):
    """init_lora_from(heads=True) (the reward stage's init_adapter): the fresh reward model scores as the saved one,
    LoRA and score head; an adapter without that head (an SFT policy's) is refused naming the head."""
    reward = load(tiny_model_path, head="scalar", pad_token_id=0)
    reward = adapters.attach(reward, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    randomise(reward, "default", 2)  # the LoRA and the head (modules_to_save.default)
    saved = adapters.save(reward, "default", tmp_path / "r1", manifest_for(reward, "reward"))

    fresh = load(tiny_model_path, head="scalar", pad_token_id=0)
    fresh = adapters.attach(fresh, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    assert not torch.equal(logits(fresh), logits(reward))
    lora_tensors = sum("lora_" in k for k, _ in reward.named_parameters())
    assert adapters.init_lora_from(fresh, "default", saved, heads=True) == lora_tensors + 1
    assert torch.equal(logits(fresh), logits(reward))

    policy = adapters.attach(load(tiny_model_path), "default", config=lora(r=4, alpha=8))
    sft_dir = adapters.save(policy, "default", tmp_path / "sft", manifest_for(policy, "sft"))
    other = load(tiny_model_path, head="scalar", pad_token_id=0)
    other = adapters.attach(other, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    with pytest.raises(UserError, match=r"its heads \(none\) do not match adapter 'default'.*score.modules_to_save"):
        adapters.init_lora_from(other, "default", sft_dir, heads=True)
