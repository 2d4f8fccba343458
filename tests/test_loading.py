"""The quantized loading module: real bitsandbytes layers, precision options, clear errors, tokenizer setup."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch
from model_args import lora, margs, quant
from peft import get_peft_model

from workbench.errors import UserError
from workbench.modeling import loading


def q(**kwargs):
    return quant(**kwargs)


def test_4bit_nf4_double_quant_uses_bitsandbytes_layers(tiny_model_path):
    model = loading.load_model(margs(str(tiny_model_path), q(load_in_4bit=True, double_quant=True), device_map="cpu"))
    counts = loading.count_bnb_layers(model)
    # 2 layers x (q, k, v, o, gate, up, down) = 14 linear layers, all 4-bit; lm_head stays unquantized.
    assert counts["Linear4bit"] == 14
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, bnb.nn.Linear4bit)
    assert layer.weight.quant_state.quant_type == "nf4" and layer.weight.quant_state.nested
    assert layer.compute_dtype == torch.bfloat16
    assert not isinstance(model.lm_head, bnb.nn.Linear4bit)
    info = model.workbench_base
    assert info.quantization["bits"] == 4 and info.content_hash.startswith("sha256:")


def test_fp4_without_double_quant(tiny_model_path):
    model = loading.load_model(
        margs(str(tiny_model_path), q(load_in_4bit=True, quant_type="fp4", dtype="float32"), device_map="cpu")
    )
    state = model.model.layers[0].mlp.down_proj.weight.quant_state
    assert state.quant_type == "fp4" and not state.nested


def test_8bit(tiny_model_path):
    model = loading.load_model(margs(str(tiny_model_path), q(load_in_8bit=True), device_map="cpu"))
    assert loading.count_bnb_layers(model)["Linear8bitLt"] == 14


@pytest.mark.parametrize(
    "dtype,expected", [("bf16", torch.bfloat16), ("float32", torch.float32), ("fp16", torch.float16)]
)
def test_unquantized_dtypes(tiny_model_path, dtype, expected):
    model = loading.load_model(margs(str(tiny_model_path), q(dtype=dtype), device_map="cpu"))
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == expected
    assert loading.count_bnb_layers(model) == {"Linear4bit": 0, "Linear8bitLt": 0}


def test_4bit_logits_close_to_full_precision(tiny_model_path):
    ids = torch.tensor([[1, 200, 300, 400, 500]])
    full = loading.load_model(margs(str(tiny_model_path), q(dtype="float32"), device_map="cpu"))
    nf4 = loading.load_model(margs(str(tiny_model_path), q(load_in_4bit=True, dtype="float32"), device_map="cpu"))
    with torch.no_grad():
        a, b = full(ids).logits, nf4(ids).logits
    assert not torch.equal(a, b)  # the weights really were quantized
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.95


def test_scalar_head_and_kbit_training_preparation(tiny_model_path):
    model = loading.load_model(
        margs(str(tiny_model_path), q(load_in_4bit=True), device_map="cpu"),
        head="scalar",
        for_training=True,
        gradient_checkpointing=True,
        pad_token_id=0,
    )
    assert model.score.out_features == 1 and model.config.pad_token_id == 0
    assert model.is_gradient_checkpointing
    # The base is frozen; its unquantized weights keep the compute dtype, the new scalar head trains in float32.
    assert not any(p.requires_grad for p in model.parameters())
    assert model.score.weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


def lora_gradients(tiny_model_path, eval_forward_first: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = loading.load_model(margs(str(tiny_model_path), q(load_in_4bit=True, dtype="float32")), for_training=True)
    model = get_peft_model(model, lora(r=8, dropout=0.0))
    ids = torch.randint(0, 100, (2, 16))
    if eval_forward_first:  # what Trainer's evaluation or a PPO rollout does before the next training step
        model.eval()
        with torch.no_grad():
            model(input_ids=ids)
    model.train()
    model(input_ids=ids, labels=ids).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


def test_a_4bit_model_for_training_keeps_its_gradients_after_a_no_grad_eval_forward(tiny_model_path):
    """On an AVX512-BF16 CPU, bitsandbytes repacks 4-bit weights for a fused kernel without backward on the first
    no-grad eval forward: measured before the fix, no LoRA weight got a gradient after it. A model loaded for training
    gets the same gradients, bit for bit, with or without such a forward; an inference-only model keeps the fast path.
    """
    straight, after_eval = lora_gradients(tiny_model_path, False), lora_gradients(tiny_model_path, True)
    assert len(straight) == 2 * 7 * 2  # A and B of the 7 default targets in both layers (A's are 0: B starts at 0)
    assert straight.keys() == after_eval.keys()
    assert all(straight[name].norm() > 0 for name in straight if "lora_B" in name)
    assert all(torch.equal(straight[name], after_eval[name]) for name in straight)
    inference = loading.load_model(margs(str(tiny_model_path), q(load_in_4bit=True, dtype="float32"))).eval()
    with torch.no_grad():
        inference(input_ids=torch.tensor([[1, 2, 3]]))
    packed = [
        getattr(m.weight.quant_state, "packing_format_for_cpu", False)
        for m in inference.modules()
        if isinstance(m, bnb.nn.Linear4bit)
    ]
    assert packed and all(packed) == bnb.functional.has_avx512bf16()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(load_in_4bit=True, load_in_8bit=True), "choose one"),
        (dict(load_in_4bit=True, quant_type="int3"), "bnb_4bit_quant_type"),
        (dict(load_in_4bit=True, use_peft=False), "use_peft: true"),
        (dict(dtype="float64"), "dtype must be one of"),
    ],
)
def test_impossible_combinations_say_what_to_change(kwargs, needle):
    fields = {"use_peft": kwargs.pop("use_peft", True)}
    with pytest.raises(UserError, match=needle):
        loading.get_quantization(margs("x", q(**kwargs), **fields))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given when CUDA is missing")
def test_cuda_device_map_without_cuda():
    with pytest.raises(UserError, match="no CUDA device"):
        loading.resolve_device_map("cuda", loading.get_quantization(margs("x", q())))


def test_missing_model_path_and_adapter_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        loading.resolve_model_path("./no/such/model")
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="no config.json"):
        loading.resolve_model_path(str(tmp_path))


def test_tokenizer_pad_differs_from_eos_and_has_chat_template(tiny_model_path):
    tokenizer = loading.load_tokenizer(str(tiny_model_path))
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.chat_template and tokenizer.padding_side == "right"


def test_assistant_only_template_masks_assistant_turns_only(tiny_model_path):
    tokenizer = loading.load_tokenizer(str(tiny_model_path), assistant_only_loss=True)
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]
    plain = loading.load_tokenizer(str(tiny_model_path)).apply_chat_template(messages, tokenize=False)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == plain  # same text, only a mask added
    out = tokenizer.apply_chat_template(messages, return_assistant_tokens_mask=True, return_dict=True)
    learnt = tokenizer.decode([t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m])
    assert learnt == "Hello there.<|im_end|>"


def test_weights_hash_identifies_weights(tiny_model_path):
    from workbench.modeling.default_model import ensure_tiny_model

    first = loading.weights_hash(str(tiny_model_path))
    assert first == loading.weights_hash(str(tiny_model_path))
    assert first != loading.weights_hash(str(ensure_tiny_model("tiny-qwen2")))


def test_alias_resolution_and_config_only(default_model_path):
    config = loading.load_config("smollm2-135m-instruct")
    assert config.model_type == "llama" and config.hidden_size == 576 and config.num_hidden_layers == 30
    assert not hasattr(config, "quantization_config")  # the GGUF quantizer's marker is gone


def test_quant_storage_for_fsdp_reaches_the_4bit_layers(tiny_model_path):
    args = margs(str(tiny_model_path), q(load_in_4bit=True, quant_storage="bfloat16"))
    assert loading.bnb_config(loading.get_quantization(args)).bnb_4bit_quant_storage == torch.bfloat16
    model = loading.load_model(args)
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16  # packed 4-bit data held as bf16
    with pytest.raises(UserError, match="bnb_4bit_quant_storage"):
        loading.get_quantization(margs("x", q(load_in_4bit=True, quant_storage="int3")))


def test_sharded_launch_leaves_placement_to_fsdp_or_zero3(monkeypatch):
    quant = loading.get_quantization(margs("x", q(load_in_4bit=True)))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert loading.resolve_device_map("auto", quant) is None
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert loading.resolve_device_map("cpu", quant) == {"": "cpu"}
