"""Memory for inference and training (full, LoRA, QLoRA), per weight dtype, from a model config alone.

Bytes per parameter of the frozen base, by storage:

- fp32 4, bf16/fp16 2.
- int8 (LLM.int8): 1 byte per weight plus one fp32 scale per output row (bitsandbytes' `SCB`).
- int4/NF4: 4 bits per weight (0.5 B). Scales are per block of 64 weights. Without double quantization each block
  keeps an fp32 absmax: 0.5 + 4/64 = 0.5625 B. With double quantization (QLoRA's default) the absmaxes are
  quantized to 8 bits (1 byte per 64 weights = 1/64 B) in blocks of 256 absmaxes, each with one fp32 constant
  (4 bytes per 64*256 weights), plus one fp32 offset per tensor: 0.5 + 1/64 + 4/16384 = 0.515869 B/param.
  Only the decoder's linear layers are quantized; embeddings, lm_head, norms and biases stay in the compute dtype.

Training: gradients are kept in the trainable parameters' dtype. AdamW keeps fp32 m and v (8 B/param); the 8-bit
bitsandbytes variants keep uint8 m and v plus two fp32 absmaxes per 256 values, and fall back to fp32 states for
tensors under 4096 elements (their `min_8bit_size`). Trainable parameters stored in 16 bits get an fp32 master copy
(mixed precision). LoRA adapters are fp32 (peft's `autocast_adapter_dtype`), so they need no master copy.

Activations are what autograd saves for backward, per token of one decoder layer (LLaMA family, measured to the byte
on CPU with `torch.autograd.graph.saved_tensors_hooks`), with e the compute dtype's bytes, h hidden,
q = heads*head_dim, kv = kv_heads*head_dim, i intermediate, a heads, s sequence length. This adapts Korthikanti
et al. 2022 ("Reducing Activation Recomputation", 34sbh + 5as^2b for GPT) to RMSNorm, SwiGLU, GQA, no dropout
and fused attention:

    norms      2 * (4h + 4 [fp32 upcast input and rsqrt] + e*h [normalized, only when the norm weight trains])
    attention  sdpa: e*(2q + 2kv) [q, k, v, output] + 4a [logsumexp]
               eager: e*3q [q, k and v repeated to all heads] + (4 + e)*a*s [fp32 softmax and its cast]
    MLP        3*e*i [gate output, SiLU output, up output]
    linear inputs, saved only for a weight that trains: e*(2h + i) when every linear trains (q/k/v and gate/up
               share one input; o_proj reads the attention output already saved); under LoRA each targeted module
               saves its input cast to the adapter dtype (4*width, one copy per module) or, with LoRA dropout,
               the dropout output plus a 1-byte mask (CUDA; on CPU the mask takes the input's dtype), and 4*r for
               A's output. Under LoRA the first block's input norm saves nothing (frozen embeddings).

After the last layer (`workbench sft` is TRL's SFTTrainer, which scores every token through its fused LM head,
trl.kernels.chunked_logprob): the final norm as above, the head's input (e*h) and two fp32 numbers per token (log Z
and the entropy); no full logits ever exist. The head's working set: one tile of at most TRL_HEAD_TOKENS x
TRL_HEAD_VOCAB logits in the compute dtype and its fp32 fold, backward's fp32 gradient of the head's input (4h per
token) and, when the head trains, its fp32 weight gradient (4Vh). With gradient checkpointing only each layer's input
(e*h per layer) stays, plus one layer's activations while it is recomputed, plus that tail.
GPT-2 (LayerNorm, fused c_attn, GELU MLP) uses the same rules with its own norm and MLP terms: an estimate, not a
measured identity.

Stages (`--stage`): `sft` is the above. `reward` trains a scalar head (hidden -> 1, trained in full beside the LoRA)
on chosen and rejected together, so a batch of B pairs is 2B sequences (with `ranking_size` K, as under
group_rankings, a batch of B rankings is KB: each answer scored once); the head saves its input (e*h per token)
and there are no vocabulary logits. `ppo` is the single-base PPO (workbench/rl/): one base holding four LoRA adapters
(policy and value trained, ref and reward frozen) and two scalar heads (value trained); the update's policy pass
saves the head's input per token and holds one chunk of at most CHUNK_TOKENS rows of logits (fp32 and the compute
dtype, workbench/modeling/chunked_logprobs.py; CHECKPOINTED_CHUNK_TOKENS under gradient checkpointing, in the
update and the scoring passes), the value pass no logits; policy and value passes run one after the
other, so the activations are the largest of the policy pass, the rollout's generation (KV cache and working set of
batch x seq, as inference) and its no-grad scoring passes (one block's working set, and the output head on one chunk
of rows: logits in the compute dtype plus the log-prob's and entropy's float32 temporaries, at most 2.25 copies,
bench/entropy_memory.py). Every sequence counts `--seq` tokens: a ceiling for padded batches.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from workbench.errors import UserError

DTYPES = ("fp32", "bf16/fp16", "int8", "int4/nf4")
STORAGE_BYTES = {"fp32": 4, "bf16/fp16": 2}
METHODS = ("full", "lora", "qlora")
STAGES = ("sft", "reward", "ppo")
CHUNK_TOKENS = 1024  # workbench/modeling/chunked_logprobs.py: rows of logits alive at once in the PPO update
CHECKPOINTED_CHUNK_TOKENS = 64  # the same file: the chunk of a base loaded with gradient checkpointing
# trl.kernels.chunked_logprob.TOKEN_CHUNK_SIZE and trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE (TRL 1.16): the tile
# of logits that TRL's fused LM head computes at a time
TRL_HEAD_TOKENS, TRL_HEAD_VOCAB = 4096, 32768
OPTIMIZERS = ("adamw", "adamw_8bit", "paged_adamw_8bit")
NF4_BLOCK, NESTED_BLOCK, ADAM_8BIT_BLOCK, ADAM_8BIT_MIN_SIZE = 64, 256, 256, 4096
NF4_DOUBLE_QUANT_BYTES_PER_PARAM = 0.5 + 1 / NF4_BLOCK + 4 / (NF4_BLOCK * NESTED_BLOCK)
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
SUPPORTED_MODEL_TYPES = (*LLAMA_FAMILY, "gpt2")


@dataclass
class MemorySettings:
    method: str = field(
        default="qlora",
        metadata={"help": "What trains: full, lora or qlora (LoRA on a quantized base).", "choices": list(METHODS)},
    )
    batch: int = field(default=1, metadata={"help": "Sequences per step (per device)."})
    seq: int = field(default=512, metadata={"help": "Tokens per sequence."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r."})
    lora_target_modules: str = field(
        default="all-linear",
        metadata={
            "help": "Comma-separated module names LoRA wraps (suffix match, as peft does), or all-linear: every "
            "linear layer in the decoder blocks, not lm_head."
        },
    )
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout; above 0 each module saves a mask."})
    stage: str = field(
        default="sft",
        metadata={
            "help": "What trains: sft (causal LM loss), reward (scalar head on chosen and rejected: --batch counts "
            "pairs, 2 x batch sequences, or rankings with --ranking_size) or ppo (one base, four adapters, chunked "
            "log-probs; --batch x --seq is both the update's micro-batch and the rollout's generation batch).",
            "choices": list(STAGES),
        },
    )
    ranking_size: int = field(
        default=0,
        metadata={
            "help": "--stage reward with group_rankings (each ranking's answers scored once): --batch counts rankings "
            "of this many answers, ranking_size x batch sequences; 0: --batch counts pairs."
        },
    )
    optim: str = field(
        default="adamw",
        metadata={
            "help": "Optimizer: adamw (fp32 m and v), adamw_8bit or "
            "paged_adamw_8bit (bitsandbytes, same bytes; paged can spill "
            "to CPU memory).",
            "choices": list(OPTIMIZERS),
        },
    )
    attn_implementation: str = field(
        default="sdpa",
        metadata={
            "help": "sdpa (fused: no seq^2 term) or eager (keeps the batch*heads*seq^2 attention probabilities).",
            "choices": ["sdpa", "eager"],
        },
    )
    double_quant: bool = field(default=True, metadata={"help": "NF4 double quantization of the block scales."})

    def validate(self) -> None:
        for name in ("batch", "seq", "lora_r"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name}: expected a positive integer, got {getattr(self, name)}")
        if self.method not in METHODS:
            raise UserError(f"--method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.stage not in STAGES:
            raise UserError(f"--stage: expected one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.ranking_size and (self.stage != "reward" or self.ranking_size < 2):
            raise UserError(
                f"--ranking_size: expected 0, or 2 or more answers per ranking with --stage reward; got "
                f"{self.ranking_size} with --stage {self.stage}"
            )
        if self.stage == "ppo" and self.method == "full":
            raise UserError("--stage ppo: the single-base PPO trains adapters; expected --method lora or qlora")
        if self.optim not in OPTIMIZERS:
            raise UserError(f"--optim: expected one of {', '.join(OPTIMIZERS)}, got {self.optim!r}")
        if self.attn_implementation not in ("sdpa", "eager"):
            raise UserError(f"--attn_implementation: expected sdpa or eager, got {self.attn_implementation!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"--lora_dropout: expected a probability in [0, 1), got {self.lora_dropout}")


@dataclass(frozen=True)
class Linear:
    name: str  # path inside one decoder block, e.g. "self_attn.q_proj"
    in_features: int
    out_features: int
    bias: bool = False


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_word_embeddings: bool
    layer_linears: tuple[Linear, ...]
    # Linears reading the same input tensor, and that input's width: it is saved once when any of them trains.
    input_groups: tuple[tuple[tuple[str, ...], int], ...]
    layer_norm_parameters: int  # norms inside one block (weights and biases)
    position_embeddings: int
    final_norm_parameters: int
    qk_norm: bool = False

    @property
    def layer_norm_kind(self) -> str:
        return "layer" if self.model_type == "gpt2" else "rms"


def model_shape(config) -> ModelShape:
    """Layer shapes of a LLaMA/Mistral/Qwen2/Qwen3 or GPT-2 config (a `PretrainedConfig` or any object with its
    fields)."""
    model_type = getattr(config, "model_type", None)
    if model_type == "gpt2":
        h, layers, heads = config.n_embd, config.n_layer, config.n_head
        i = config.n_inner or 4 * h
        return ModelShape(
            model_type,
            h,
            i,
            layers,
            heads,
            heads,
            h // heads,
            config.vocab_size,
            bool(getattr(config, "tie_word_embeddings", True)),
            (
                Linear("attn.c_attn", h, 3 * h, True),
                Linear("attn.c_proj", h, h, True),
                Linear("mlp.c_fc", h, i, True),
                Linear("mlp.c_proj", i, h, True),
            ),
            ((("attn.c_attn",), h), (("attn.c_proj",), h), (("mlp.c_fc",), h), (("mlp.c_proj",), i)),
            layer_norm_parameters=4 * h,
            position_embeddings=config.n_positions * h,
            final_norm_parameters=2 * h,
        )
    if model_type not in LLAMA_FAMILY:
        raise UserError(
            f"MODEL: model_type {model_type!r} is not supported; expected one of {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    h, i, heads = config.hidden_size, config.intermediate_size, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    q, kv = heads * head_dim, kv_heads * head_dim
    qkv_bias = model_type == "qwen2" or bool(getattr(config, "attention_bias", False))
    o_bias = model_type == "llama" and bool(getattr(config, "attention_bias", False))
    mlp_bias = bool(getattr(config, "mlp_bias", False))
    qk_norm = model_type == "qwen3"
    linears = (
        Linear("self_attn.q_proj", h, q, qkv_bias),
        Linear("self_attn.k_proj", h, kv, qkv_bias),
        Linear("self_attn.v_proj", h, kv, qkv_bias),
        Linear("self_attn.o_proj", q, h, o_bias),
        Linear("mlp.gate_proj", h, i, mlp_bias),
        Linear("mlp.up_proj", h, i, mlp_bias),
        Linear("mlp.down_proj", i, h, mlp_bias),
    )
    groups = (
        (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), h),
        (("self_attn.o_proj",), q),
        (("mlp.gate_proj", "mlp.up_proj"), h),
        (("mlp.down_proj",), i),
    )
    return ModelShape(
        model_type,
        h,
        i,
        config.num_hidden_layers,
        heads,
        kv_heads,
        head_dim,
        config.vocab_size,
        bool(getattr(config, "tie_word_embeddings", False)),
        linears,
        groups,
        layer_norm_parameters=2 * h + (2 * head_dim if qk_norm else 0),
        position_embeddings=0,
        final_norm_parameters=h,
        qk_norm=qk_norm,
    )


def linear_tensor_sizes(shape: ModelShape) -> list[int]:
    """Element counts of the decoder blocks' linear weights (what bitsandbytes quantizes)."""
    return [lin.in_features * lin.out_features for lin in shape.layer_linears] * shape.num_layers


def other_tensor_sizes(shape: ModelShape) -> list[int]:
    """Element counts of everything that stays in the compute dtype: embeddings, lm_head, norms, biases."""
    per_layer = [lin.out_features for lin in shape.layer_linears if lin.bias] + [shape.layer_norm_parameters]
    sizes = [shape.vocab_size * shape.hidden_size, shape.position_embeddings, shape.final_norm_parameters]
    if not shape.tie_word_embeddings:
        sizes.append(shape.vocab_size * shape.hidden_size)
    return [n for n in sizes + per_layer * shape.num_layers if n]


def parameter_count(shape: ModelShape) -> int:
    return sum(linear_tensor_sizes(shape)) + sum(other_tensor_sizes(shape))


def lora_targets(shape: ModelShape, target_modules: str) -> list[Linear]:
    """The block's linears that LoRA wraps; a name matches a module path exactly or as its suffix after a dot."""
    if target_modules.strip() == "all-linear":
        return list(shape.layer_linears)
    names = [name.strip() for name in target_modules.split(",") if name.strip()]
    targets = [lin for lin in shape.layer_linears if any(lin.name == n or lin.name.endswith("." + n) for n in names)]
    unmatched = [n for n in names if not any(lin.name == n or lin.name.endswith("." + n) for lin in targets)]
    if not names or unmatched:
        known = ", ".join(lin.name.split(".")[-1] for lin in shape.layer_linears)
        raise UserError(
            f"--lora_target_modules: {', '.join(unmatched) or 'nothing given'} matches no linear layer "
            f"of a {shape.model_type} block; expected all-linear or some of: {known}"
        )
    return targets


def lora_tensor_sizes(shape: ModelShape, r: int, target_modules: str) -> list[int]:
    """A is r x in, B is out x r, for each targeted linear of each block."""
    per_layer = [n for lin in lora_targets(shape, target_modules) for n in (r * lin.in_features, lin.out_features * r)]
    return per_layer * shape.num_layers


def nf4_bytes(numel: int, double_quant: bool = True) -> int:
    """Bytes bitsandbytes keeps for one NF4 tensor: packed 4-bit values, block absmaxes and their own constants."""
    blocks = math.ceil(numel / NF4_BLOCK)
    if not double_quant:
        return math.ceil(numel / 2) + 4 * blocks
    return math.ceil(numel / 2) + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + 4  # + fp32 offset


def base_weight_bytes(shape: ModelShape, dtype: str, double_quant: bool = True) -> int:
    compute = compute_bytes(dtype)
    others = compute * sum(other_tensor_sizes(shape))
    if dtype in STORAGE_BYTES:
        return others + STORAGE_BYTES[dtype] * sum(linear_tensor_sizes(shape))
    if dtype == "int8":
        return others + shape.num_layers * sum(
            lin.in_features * lin.out_features + 4 * lin.out_features for lin in shape.layer_linears
        )
    return others + sum(nf4_bytes(n, double_quant) for n in linear_tensor_sizes(shape))


def compute_bytes(dtype: str) -> int:
    return 4 if dtype == "fp32" else 2


def optimizer_bytes(sizes: list[int], optim: str, master_copy: bool) -> int:
    """Adam's m and v for each trainable tensor, plus an fp32 master copy of 16-bit trainables."""
    total = 4 * sum(sizes) if master_copy else 0
    for n in sizes:
        if optim == "adamw" or n < ADAM_8BIT_MIN_SIZE:
            total += 8 * n
        else:
            total += 2 * n + 2 * 4 * math.ceil(n / ADAM_8BIT_BLOCK)
    return total


def layer_activation_bytes(shape: ModelShape, s: MemorySettings, e: int, targets: set[str], full: bool) -> int:
    """Bytes one decoder block saves for backward, per token (see the module docstring)."""
    h, i, a, kv_heads, d = (
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_heads,
        shape.num_kv_heads,
        shape.head_dim,
    )
    q, kv = a * d, kv_heads * d
    adapter, sdpa = 4, s.attn_implementation == "sdpa"
    if shape.layer_norm_kind == "rms":
        norms = 2 * (4 * h + 4 + (e * h if full else 0))
    else:  # LayerNorm saves its input, mean and rstd
        norms = 2 * (e * h + 8)
    if shape.qk_norm:
        norms += 4 * (q + kv) + 4 * (a + kv_heads) + (e * (q + kv) if full else 0)
    if sdpa:
        attention = e * (2 * q + 2 * kv) + 4 * a
    else:
        attention = 3 * e * q + (4 + (e if e != 4 else 0)) * a * s.seq
    mlp = 3 * e * i if shape.model_type != "gpt2" else 4 * e * i  # GELU (tanh form) keeps about four i-wide tensors
    inputs = 0
    for names, width in shape.input_groups:
        already_saved = sdpa and names[0].endswith(("o_proj", "attn.c_proj"))  # a view of the saved attention output
        shared = 0 if already_saved else e * width
        if full:
            inputs += shared
            continue
        hits = [n for n in names if n in targets]
        if not hits:
            continue
        if s.lora_dropout > 0:
            inputs += len(hits) * (adapter * width + width)
        elif adapter == e:
            inputs += shared  # the cast to the adapter dtype is a no-op: every module reuses the input
        else:
            inputs += len(hits) * adapter * width
    return norms + attention + mlp + inputs + adapter * s.lora_r * len(targets)


@dataclass
class Activations:
    per_layer: int  # one block, all tokens
    layers: int  # every block
    tail: int  # final norm and lm_head input
    logits: int
    layer_inputs: int  # what gradient checkpointing keeps between blocks
    checkpointed_logits: int  # the logits under gradient checkpointing (PPO's chunk is smaller then)

    @property
    def total(self) -> int:
        return self.layers + self.tail + self.logits

    @property
    def checkpointed(self) -> int:
        return self.layer_inputs + self.per_layer + self.tail + self.checkpointed_logits


def training_activations(
    shape: ModelShape, s: MemorySettings, dtype: str, targets: set[str], full: bool
) -> Activations:
    e, tokens = compute_bytes(dtype), sequences(s) * s.seq
    per_layer = tokens * layer_activation_bytes(shape, s, e, targets, full)
    h, vocab = shape.hidden_size, shape.vocab_size
    final_norm = 4 * h + 4 + (e * h if full else 0) if shape.layer_norm_kind == "rms" else e * h + 8
    if s.stage == "sft":  # TRL's fused LM head: its input, log Z and entropy saved; one tile of logits at a time
        tail = tokens * (final_norm + e * h + 8)
        tile = min(tokens, TRL_HEAD_TOKENS) * min(vocab, TRL_HEAD_VOCAB) * (e + 4)
        logits = tile + tokens * 4 * h + (4 * vocab * h if full else 0)
        checkpointed_logits = logits
    else:  # a trained scalar head, or the chunked output head, saves its input; scores, or one chunk of logits
        tail = tokens * (final_norm + e * h)
        logits = tokens * e if s.stage == "reward" else min(tokens, CHUNK_TOKENS) * vocab * (4 + e)
        checkpointed_logits = (
            logits if s.stage == "reward" else min(tokens, CHECKPOINTED_CHUNK_TOKENS) * vocab * (4 + e)
        )
    # With frozen embeddings nothing before the first adapter needs a gradient, so the first block's input norm
    # (which saves what a frozen final norm saves) keeps nothing.
    first_norm_unsaved = 0 if full else tokens * final_norm
    return Activations(
        per_layer,
        per_layer * shape.num_layers - first_norm_unsaved,
        tail,
        logits,
        layer_inputs=tokens * e * h * shape.num_layers,
        checkpointed_logits=checkpointed_logits,
    )


def sequences(s: MemorySettings) -> int:
    """Sequences in one forward: a reward batch of B pairs is 2B sequences, of B rankings of K answers KB."""
    return s.batch * ((s.ranking_size or 2) if s.stage == "reward" else 1)


def block_working_bytes(shape: ModelShape, e: int, tokens: int) -> int:
    """One block's working set in a no-grad forward over `tokens` tokens: its input plus gate and up outputs."""
    return e * tokens * (shape.hidden_size + (2 if shape.model_type != "gpt2" else 1) * shape.intermediate_size)


def inference_bytes(shape: ModelShape, s: MemorySettings, dtype: str) -> dict[str, int]:
    """Generation with a KV cache of batch x seq: weights, the cache, one block's working set at prefill, and the
    last position's fp32 logits. A rough peak (the working set is the block input plus gate and up outputs)."""
    e, tokens = compute_bytes(dtype), s.batch * s.seq
    kv_cache = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * e * tokens
    working = block_working_bytes(shape, e, tokens) + 4 * s.batch * shape.vocab_size
    if s.attn_implementation == "eager":
        working += (4 + e) * s.batch * shape.num_heads * s.seq * s.seq
    weights = base_weight_bytes(shape, dtype, s.double_quant)
    return {"weights": weights, "kv_cache": kv_cache, "activations": working, "total": weights + kv_cache + working}


def scoring_bytes(shape: ModelShape, s: MemorySettings, dtype: str, chunk: int = CHUNK_TOKENS) -> int:
    """A PPO rollout's no-grad scoring pass over batch x seq tokens (ref log-probs, values, reward; see the module
    docstring): one block's working set, and the output head on one `chunk` of rows (CHECKPOINTED_CHUNK_TOKENS on a
    base loaded with gradient checkpointing)."""
    e, tokens = compute_bytes(dtype), s.batch * s.seq
    head = min(tokens, chunk) * shape.vocab_size * (e + 9)  # the logits, 2.25 float32 copies of them
    return block_working_bytes(shape, e, tokens) + head


def training_bytes(shape: ModelShape, s: MemorySettings, dtype: str) -> dict[str, int] | str:
    """Bytes for one training step, or why this method cannot train with this dtype."""
    quantized = dtype in ("int8", "int4/nf4")
    if s.method == "full" and quantized:
        return "quantized weights cannot be trained; see --method qlora"
    if s.method == "lora" and quantized:
        return "a quantized base is --method qlora"
    if s.method == "qlora" and not quantized:
        return "qlora quantizes the base; see --method lora"
    full = s.method == "full"
    weights = base_weight_bytes(shape, dtype, s.double_quant)
    if s.stage == "reward" and not shape.tie_word_embeddings:  # a sequence-classification model has no lm_head
        weights -= compute_bytes(dtype) * shape.vocab_size * shape.hidden_size
    if full:
        sizes = linear_tensor_sizes(shape) + other_tensor_sizes(shape)
        if s.stage == "reward":  # the scalar head trains; an untied lm_head does not exist
            if not shape.tie_word_embeddings:
                sizes.remove(shape.vocab_size * shape.hidden_size)
            sizes.append(shape.hidden_size)
        trainable_bytes, targets = STORAGE_BYTES[dtype], set()
    else:
        sizes = trainable_tensor_sizes(shape, s)
        trainable_bytes = 4  # peft upcasts adapters to fp32 (and the scalar heads train in fp32)
        targets = {lin.name for lin in lora_targets(shape, s.lora_target_modules)}
        weights += trainable_bytes * (sum(adapter_tensor_sizes(shape, s)))
    gradients = trainable_bytes * sum(sizes)
    optimizer = optimizer_bytes(sizes, s.optim, master_copy=trainable_bytes < 4)
    activations = training_activations(shape, s, dtype, targets, full)
    total, checkpointed = activations.total, activations.checkpointed
    if s.stage == "ppo":  # the rollout's generation and scoring come before the update, never beside it
        rollout = inference_bytes(shape, s, dtype)
        generation = rollout["kv_cache"] + rollout["activations"]
        total = max(total, generation, scoring_bytes(shape, s, dtype))
        checkpointed = max(checkpointed, generation, scoring_bytes(shape, s, dtype, CHECKPOINTED_CHUNK_TOKENS))
    states = weights + gradients + optimizer
    return {
        "weights": weights,
        "gradients": gradients,
        "optimizer": optimizer,
        "activations": total,
        "activations_checkpointed": checkpointed,
        "total": states + total,
        "total_checkpointed": states + checkpointed,
    }


def adapter_tensor_sizes(shape: ModelShape, s: MemorySettings) -> list[int]:
    """What the stage adds to the base: one LoRA (sft); LoRA and scalar head (reward); four LoRAs (policy, ref, value,
    reward) and two scalar heads (value, reward) on the one base (ppo)."""
    lora = lora_tensor_sizes(shape, s.lora_r, s.lora_target_modules)
    head = [shape.hidden_size]
    return {"sft": lora, "reward": lora + head, "ppo": lora * 4 + head * 2}[s.stage]


def trainable_tensor_sizes(shape: ModelShape, s: MemorySettings) -> list[int]:
    """What trains: the LoRA (sft); LoRA and head (reward); the policy's and the value's LoRA and the value head."""
    lora = lora_tensor_sizes(shape, s.lora_r, s.lora_target_modules)
    head = [shape.hidden_size]
    return {"sft": lora, "reward": lora + head, "ppo": lora * 2 + head}[s.stage]


@dataclass
class MemoryEstimate:
    model_type: str
    parameters: int
    trainable_parameters: int
    settings: MemorySettings
    inference: dict[str, dict[str, int]]
    training: dict[str, dict[str, int] | str]

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_memory(config, settings: MemorySettings | None = None) -> MemoryEstimate:
    """Inference and training bytes for every dtype row, from a config (or a `ModelShape`)."""
    settings = settings or MemorySettings()
    settings.validate()
    shape = config if isinstance(config, ModelShape) else model_shape(config)
    total = parameter_count(shape)
    trainable = total if settings.method == "full" else sum(trainable_tensor_sizes(shape, settings))
    return MemoryEstimate(
        shape.model_type,
        total,
        trainable,
        settings,
        {dtype: inference_bytes(shape, settings, dtype) for dtype in DTYPES},
        {dtype: training_bytes(shape, settings, dtype) for dtype in DTYPES},
    )
