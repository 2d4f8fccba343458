"""The memory estimator against hand arithmetic and against what torch, peft and bitsandbytes actually allocate."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

from workbench.errors import UserError
from workbench.modeling import memory
from workbench.modeling.memory import MemorySettings, estimate_memory, model_shape
from workbench.stages import estimate_memory as stage

BATCH, SEQ = 2, 32


def tiny_llama(**overrides) -> LlamaConfig:
    values = dict(
        hidden_size=64,
        intermediate_size=176,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=256,
        tie_word_embeddings=True,
        max_position_embeddings=128,
    )
    return LlamaConfig(**{**values, **overrides})


TINY_CONFIGS = {
    "llama-tied-gqa": tiny_llama(),
    "llama-biases": tiny_llama(attention_bias=True, mlp_bias=True, tie_word_embeddings=False),
    "mistral": MistralConfig(
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=1,
        num_hidden_layers=2,
        vocab_size=300,
        head_dim=32,
    ),
    "qwen2": Qwen2Config(
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=200,
        tie_word_embeddings=True,
    ),
    "qwen3": Qwen3Config(
        hidden_size=64,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=24,
        num_hidden_layers=2,
        vocab_size=200,
        tie_word_embeddings=False,
    ),
    "gpt2": GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=128),
}


def build(config, dtype=torch.float32):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=dtype)


def test_hand_computed_tiny_llama():
    # Per block: q 64*64=4096, k 64*32=2048, v 2048, o 4096, gate/up/down 64*176=11264 each -> 46080 in linears,
    # plus two RMSNorms 2*64=128 -> 46208; two blocks 92416; embeddings 256*64=16384 (tied lm_head); final norm 64.
    # Total 92416 + 16384 + 64 = 108864.
    shape = model_shape(tiny_llama())
    assert memory.parameter_count(shape) == 108864
    # LoRA r=8, all-linear: r*(in+out) = q 8*128=1024, k 8*96=768, v 768, o 1024, gate/up/down 8*240=1920 each
    # -> 9344 per block, 18688 for two.
    assert sum(memory.lora_tensor_sizes(shape, 8, "all-linear")) == 18688
    assert sum(memory.lora_tensor_sizes(shape, 8, "q_proj,v_proj")) == 2 * (1024 + 768)
    # bf16: 108864 * 2 = 217728 bytes.
    assert memory.base_weight_bytes(shape, "bf16/fp16") == 217728
    # int8 linears: in*out + 4*out (fp32 row scale): q 4352, k 2176, v 2176, o 4352, gate 11968, up 11968,
    # down 11264+256=11520 -> 48512 per block, 97024; the rest in bf16: (16384 + 64 + 2*128) * 2 = 33408.
    assert memory.base_weight_bytes(shape, "int8") == 97024 + 33408
    # NF4 + double quant: n/2 + n/64 + 4*ceil(n/64/256) + 4 offset: q 2048+64+4+4=2120, k 1024+32+4+4=1064,
    # gate 5632+176+4+4=5816 -> 2120+1064+1064+2120+3*5816 = 23816 per block, 47632; + 33408 in bf16.
    assert memory.base_weight_bytes(shape, "int4/nf4") == 47632 + 33408


def test_hand_computed_full_bf16_training():
    estimate = estimate_memory(tiny_llama(), MemorySettings(method="full", batch=BATCH, seq=SEQ))
    row = estimate.training["bf16/fp16"]
    # bf16 weights and grads 217728 each; fp32 master 4*108864=435456 + Adam m, v 8*108864=870912.
    assert (row["weights"], row["gradients"], row["optimizer"]) == (217728, 217728, 1306368)
    # Per token per block (e=2): norms 2*(4*64+4+2*64)=776; sdpa 2*(2*64+2*32)+4*4=400; MLP 3*2*176=1056;
    # linear inputs 2*64 (q/k/v) + 0 (o reads the saved attention output) + 2*64 (gate/up) + 2*176 (down)=608.
    # 2840 * 64 tokens = 181760 per block, 363520 for two. Tail: the final norm (4*64+4+2*64), TRL's fused head's
    # input 2*64, log Z and entropy 2*4 -> 524 * 64 = 33536. The head's working set: one 64 x 256 tile in bf16 and
    # fp32 64*256*6 = 98304, the fp32 input gradient 64*4*64 = 16384, the fp32 weight gradient 4*256*64 = 65536.
    assert row["activations"] == 363520 + 33536 + 98304 + 16384 + 65536
    # Checkpointed: block inputs 2 blocks * 64 tokens * 2*64 = 16384, one block 181760, tail, head.
    assert row["activations_checkpointed"] == 16384 + 181760 + 33536 + 98304 + 16384 + 65536
    assert estimate.training["int4/nf4"] == "quantized weights cannot be trained; see --method qlora"


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_parameter_count_matches_a_built_model(name):
    model = build(TINY_CONFIGS[name])
    assert memory.parameter_count(model_shape(TINY_CONFIGS[name])) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["llama-tied-gqa", "qwen3", "gpt2"])
def test_bf16_weight_bytes_match_a_built_model(name):
    model = build(TINY_CONFIGS[name], dtype=torch.bfloat16)
    actual = sum(p.numel() * p.element_size() for p in model.parameters())
    assert memory.base_weight_bytes(model_shape(TINY_CONFIGS[name]), "bf16/fp16") == actual


@pytest.mark.parametrize(
    ("name", "targets"),
    [
        ("llama-tied-gqa", "all-linear"),
        ("llama-biases", "q_proj,v_proj"),
        ("mistral", "all-linear"),
        ("qwen3", "o_proj,down_proj"),
        ("gpt2", "all-linear"),
        ("gpt2", "c_proj"),
    ],
)
def test_lora_count_matches_peft(name, targets):
    from peft import LoraConfig, get_peft_model

    peft_targets = "all-linear" if targets == "all-linear" else targets.split(",")
    model = get_peft_model(build(TINY_CONFIGS[name]), LoraConfig(r=4, target_modules=peft_targets))
    trainable, _ = model.get_nb_trainable_parameters()
    assert sum(memory.lora_tensor_sizes(model_shape(TINY_CONFIGS[name]), 4, targets)) == trainable


def test_nf4_double_quant_bytes_per_parameter():
    assert memory.NF4_DOUBLE_QUANT_BYTES_PER_PARAM == 0.5 + 1 / 64 + 4 / 16384 == 0.515869140625
    numel = 4096 * 11008
    assert memory.nf4_bytes(numel) / numel == pytest.approx(0.5 + 1 / 64 + 4 / 16384, rel=1e-6)
    assert memory.nf4_bytes(numel, double_quant=False) / numel == pytest.approx(0.5 + 4 / 64, rel=1e-6)


@pytest.mark.parametrize("numel", [64 * 176, 4096, 300 * 70])
def test_nf4_bytes_match_bitsandbytes(numel):
    import bitsandbytes.functional as bnb_functional

    packed, state = bnb_functional.quantize_4bit(torch.randn(numel), quant_type="nf4", compress_statistics=True)
    held = [packed, state.absmax, state.state2.absmax, state.offset]
    assert memory.nf4_bytes(numel) == sum(t.numel() * t.element_size() for t in held)


def test_optimizer_bytes_follow_bitsandbytes_rules():
    # 8-bit states: 2 bytes + two fp32 absmaxes per 256 values (5000 -> 20 blocks); under 4096 elements: fp32.
    assert memory.optimizer_bytes([5000], "adamw_8bit", master_copy=False) == 2 * 5000 + 8 * 20
    assert memory.optimizer_bytes([100], "paged_adamw_8bit", master_copy=False) == 800
    assert memory.optimizer_bytes([100], "adamw", master_copy=True) == 1200


def with_trl_head(model):
    """The model as `workbench sft` trains it: TRL's SFTTrainer scores tokens through its fused LM head."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # SFTTrainer's own call
    return model


def measured_saved_bytes(model, checkpointing: bool = False) -> int:
    """Bytes of distinct non-parameter storages that autograd keeps for backward during one SFT forward (TRL's fused
    LM head: `with_trl_head`)."""
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def keep(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 256, (BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(input_ids=ids, labels=ids, fused_lm_head=True)
    return sum(storages.values())


@pytest.mark.parametrize(
    ("dtype", "method", "targets", "attention"),
    [
        ("bf16/fp16", "full", "", "sdpa"),
        ("fp32", "full", "", "sdpa"),
        ("bf16/fp16", "full", "", "eager"),
        ("bf16/fp16", "lora", "all-linear", "sdpa"),
        ("bf16/fp16", "lora", "q_proj,v_proj", "sdpa"),
        ("fp32", "lora", "all-linear", "sdpa"),
    ],
)
def test_activations_match_saved_tensors(dtype, method, targets, attention):
    from peft import LoraConfig, get_peft_model

    config = tiny_llama()
    model = AutoModelForCausalLM.from_config(
        config, dtype=torch.float32 if dtype == "fp32" else torch.bfloat16, attn_implementation=attention
    )
    with_trl_head(model)
    if method == "lora":
        peft_targets = "all-linear" if targets == "all-linear" else targets.split(",")
        model = get_peft_model(model, LoraConfig(r=8, target_modules=peft_targets))
    settings = MemorySettings(
        method=method,
        batch=BATCH,
        seq=SEQ,
        lora_r=8,
        attn_implementation=attention,
        lora_target_modules=targets or "all-linear",
    )
    shape = model_shape(config)
    target_names = {lin.name for lin in memory.lora_targets(shape, targets)} if targets else set()
    estimated = memory.training_activations(shape, settings, dtype, target_names, full=method == "full")
    # The head's working set (a tile of logits, gradients) lives inside its forward or backward, never saved.
    # Unestimated: RoPE cos/sin and the int64 ids/labels, under 1% here.
    assert measured_saved_bytes(model) == pytest.approx(estimated.total - estimated.logits, rel=0.01)


def test_checkpointing_keeps_block_inputs_and_tail():
    config = tiny_llama()
    settings = MemorySettings(method="full", batch=BATCH, seq=SEQ)
    estimated = memory.training_activations(model_shape(config), settings, "bf16/fp16", set(), full=True)
    # The one block recomputed during backward and the head's working set are not held across the forward.
    retained = estimated.checkpointed - estimated.per_layer - estimated.logits
    model = with_trl_head(build(config, torch.bfloat16))
    assert measured_saved_bytes(model, checkpointing=True) == pytest.approx(retained, rel=0.03)


def test_qlora_rows_answer_quantized_training():
    estimate = estimate_memory(tiny_llama(), MemorySettings(method="qlora", batch=BATCH, seq=SEQ, lora_r=8))
    assert isinstance(estimate.training["fp32"], str)
    row = estimate.training["int4/nf4"]
    # fp32 adapters: 18688 params * 4 bytes each for weights, grads; Adam m, v 8 bytes.
    assert row["weights"] == 47632 + 33408 + 4 * 18688
    assert (row["gradients"], row["optimizer"]) == (4 * 18688, 8 * 18688)
    assert row["total_checkpointed"] < row["total"]


def test_bad_input_names_the_argument():
    with pytest.raises(UserError, match="--lora_target_modules"):
        estimate_memory(tiny_llama(), MemorySettings(lora_target_modules="qkv_proj"))
    with pytest.raises(UserError, match="--batch"):
        estimate_memory(tiny_llama(), MemorySettings(batch=0))
    with pytest.raises(UserError, match="model_type 'bert'"):
        model_shape(type("Config", (), {"model_type": "bert"})())


def test_cli_json_from_a_local_directory(tmp_path, capsys):
    tiny_llama().save_pretrained(tmp_path)
    assert (
        stage.main([str(tmp_path), "--method", "lora", "--lora-r", "8", "--batch", "2", "--seq", "32", "--json"]) == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert (result["parameters"], result["trainable_parameters"]) == (108864, 18688)
    assert result["inference"]["bf16/fp16"]["weights"] == 217728
    assert stage.main([str(tmp_path / "config.json"), "--method", "full"]) == 0
    assert "108,864 parameters" in capsys.readouterr().out


def test_cli_help_and_missing_model(capsys):
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for name in memory.MemorySettings.__dataclass_fields__:
        assert f"--{name}" in help_text
    with pytest.raises(UserError, match="MODEL"):
        stage.main(["--method", "full"])


def test_reward_stage_activations_match_saved_tensors():
    """--stage reward: chosen and rejected in one forward (2 x batch sequences) through the LoRA'd base and a scalar
    head that trains in full; autograd keeps the blocks' activations and the head's input, no vocabulary logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    config = tiny_llama(pad_token_id=0, num_labels=1)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=8, target_modules="all-linear", task_type="SEQ_CLS"))
    model.train()
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages = {}

    def keep(tensor):
        if tensor.untyped_storage().data_ptr() not in parameters:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    ids = torch.randint(1, 256, (2 * BATCH, SEQ), generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        scores = model(input_ids=ids).logits[:, 0]
        -torch.nn.functional.logsigmoid(scores[:BATCH] - scores[BATCH:]).mean()
    settings = MemorySettings(method="lora", stage="reward", batch=BATCH, seq=SEQ, lora_r=8)
    shape = model_shape(config)
    targets = {lin.name for lin in memory.lora_targets(shape, "all-linear")}
    estimated = memory.training_activations(shape, settings, "bf16/fp16", targets, full=False)
    returned_scores = 2 * BATCH * SEQ * 2  # the [2B, S, 1] scores: alive, not saved
    assert sum(storages.values()) == pytest.approx(estimated.total - returned_scores, rel=0.02)
    sft = memory.training_activations(shape, MemorySettings(method="lora", batch=2 * BATCH, seq=SEQ, lora_r=8),
                                      "bf16/fp16", targets, full=False)  # fmt: skip
    assert estimated.layers == sft.layers and estimated.logits < sft.logits / 100  # same blocks, no vocabulary


def test_reward_rankings_count_each_answer_once():
    """With group_rankings a reward batch holds rankings whose answers are each scored once: 4 rankings of 4 answers
    are 16 sequences, the same forward as 8 pairs (16 sequences) and twice that of 4 pairs."""
    shape = model_shape(tiny_llama())
    targets = {lin.name for lin in memory.lora_targets(shape, "all-linear")}

    def activations(**fields):
        settings = MemorySettings(method="lora", stage="reward", seq=SEQ, lora_r=8, **fields)
        settings.validate()
        return memory.training_activations(shape, settings, "bf16/fp16", targets, full=False).total

    assert activations(batch=4, ranking_size=4) == activations(batch=8)
    assert activations(batch=4, ranking_size=4) == 2 * activations(batch=4)
    for bad in (dict(stage="sft", ranking_size=4), dict(stage="reward", ranking_size=1)):
        with pytest.raises(UserError, match="--ranking_size"):
            MemorySettings(**bad).validate()


def test_ppo_stage_counts_four_adapters_two_heads_and_the_larger_phase():
    """--stage ppo by hand: the base, four fp32 LoRAs and two heads; the policy and value LoRAs and the value head
    train (fp32 gradients, Adam's m and v); activations are the largest of the update's policy pass (one chunk of
    logits), the rollout's generation and its scoring passes."""
    config = tiny_llama()
    shape = model_shape(config)
    ppo = MemorySettings(method="qlora", stage="ppo", batch=BATCH, seq=SEQ, lora_r=8)
    sft = MemorySettings(method="qlora", batch=BATCH, seq=SEQ, lora_r=8)
    lora, h = 18688, 64  # tiny_llama's LoRA r=8 on all linears (test_qlora_rows_answer_quantized_training)
    row, sft_row = memory.training_bytes(shape, ppo, "int4/nf4"), memory.training_bytes(shape, sft, "int4/nf4")
    assert row["weights"] == sft_row["weights"] - 4 * lora + 4 * (4 * lora + 2 * h)
    assert row["gradients"] == 4 * (2 * lora + h) and row["optimizer"] == 8 * (2 * lora + h)
    targets = {lin.name for lin in memory.lora_targets(shape, "all-linear")}
    update = memory.training_activations(shape, ppo, "int4/nf4", targets, full=False)
    rollout = memory.inference_bytes(shape, ppo, "int4/nf4")
    # Scoring: one block's working set 64 tokens * 2 * (64 + 2 * 176) = 53248; the head on one chunk of 64 rows,
    # bf16 logits and 2.25 float32 copies: 64 * 256 * (2 + 9) = 180224.
    scoring = memory.scoring_bytes(shape, ppo, "int4/nf4")
    assert scoring == 53248 + 180224
    assert row["activations"] == max(update.total, rollout["kv_cache"] + rollout["activations"], scoring)
    assert update.logits == min(BATCH * SEQ, memory.CHUNK_TOKENS) * config.vocab_size * (4 + 2)
    # 4 x 64 = 256 tokens: one 256-row chunk of logits, or under gradient checkpointing 64 rows, in the update and in
    # the scoring passes (workbench/modeling/chunked_logprobs.py)
    longer = MemorySettings(method="qlora", stage="ppo", batch=4, seq=64, lora_r=8)
    update = memory.training_activations(shape, longer, "int4/nf4", targets, full=False)
    assert update.logits == 256 * config.vocab_size * 6 and update.checkpointed_logits == 64 * config.vocab_size * 6
    assert update.checkpointed - update.layer_inputs - update.per_layer - update.tail == 64 * config.vocab_size * 6
    head = memory.scoring_bytes(shape, longer, "int4/nf4") - memory.scoring_bytes(shape, longer, "int4/nf4", 64)
    assert head == (256 - 64) * config.vocab_size * (2 + 9)
    assert estimate_memory(config, ppo).trainable_parameters == 2 * lora + h
    with pytest.raises(UserError, match="--stage ppo"):
        MemorySettings(method="full", stage="ppo").validate()
