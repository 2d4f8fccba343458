"""THE quantized loading module: the only place that builds a BitsAndBytesConfig or calls `from_pretrained`.

Every stage loads its base model and tokenizer through here, from its `ModelArguments` (workbench/modeling/
arguments.py): `load_model(args)` -> `get_quantization(args)` -> `bnb_config(quant)` -> `from_pretrained`. Our own
`get_quantization` rather than TRL's because it checks impossible combinations, keeps the scalar heads out of 4-bit
(`llm_int8_skip_modules`) and records the quantization in the adapter manifests. A base is identified the same way
everywhere (`BaseModelInfo`: where it came from, its revision, a hash of its weight files and how it was quantized),
so adapter manifests can refuse a base that does not match.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from workbench.errors import UserError
from workbench.fileio import write_text_atomic
from workbench.modeling.arguments import ModelArguments, base_of
from workbench.modeling.default_model import cache_home, is_alias, resolve_alias

DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16"}
DTYPES["fp16"] = "float16"
QUANT_TYPES = ("nf4", "fp4")
Head = Literal["causal_lm", "scalar"]


@dataclass(frozen=True)
class Quantization:
    """How the base weights are held: `bits` 16/32 (none), 8 or 4, and the 4-bit details."""

    bits: int = 16
    quant_type: str | None = None
    double_quant: bool = False
    compute_dtype: str = "bfloat16"
    # dtype the packed 4-bit weights are stored in; FSDP and ZeRO-3 shard them only when it equals the compute dtype
    quant_storage: str = "uint8"

    def describe(self) -> str:
        if self.bits == 4:
            nested = "+double-quant" if self.double_quant else ""
            return f"4-bit {self.quant_type}{nested}, compute {self.compute_dtype}"
        if self.bits == 8:
            return "8-bit (LLM.int8)"
        return f"none ({self.compute_dtype})"


@dataclass(frozen=True)
class BaseModelInfo:
    """What an adapter was trained on: recorded in every manifest and checked when the adapter is loaded again."""

    name_or_path: str
    resolved_path: str
    revision: str | None
    content_hash: str
    quantization: dict

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_model_path(name_or_path: str) -> tuple[str, bool]:
    """(path or hub id, is_local) for an alias, a local directory or a hub id."""
    if is_alias(name_or_path):
        return str(resolve_alias(name_or_path)), True
    expanded = Path(name_or_path).expanduser()
    if expanded.exists():
        if not (expanded / "config.json").is_file():
            raise UserError(f"model path {name_or_path} exists but holds no config.json (is it an adapter folder?)")
        return str(expanded.resolve()), True
    if name_or_path.startswith((".", "/", "~")):
        raise UserError(f"model path {name_or_path} does not exist")
    return name_or_path, False


def load_config(name_or_path: str, revision: str | None = None):
    """The model's `PretrainedConfig` alone (no weights): for the memory estimator and shape checks."""
    from transformers import AutoConfig

    path, _ = resolve_model_path(name_or_path)
    return AutoConfig.from_pretrained(path, revision=revision)


def decoder_layers(args: ModelArguments) -> int:
    """How many decoder layers the base `args` names has (from its config; no weights are loaded)."""
    args = base_of(args)
    return load_config(args.model_name_or_path, args.model_revision).get_text_config().num_hidden_layers


def weights_hash(path: str) -> str:
    """sha256 over config and weight files, cached by (name, size, mtime) so a 270 MB checkpoint hashes once."""
    directory = Path(path)
    files = sorted(p for p in directory.iterdir() if p.suffix in (".safetensors", ".bin") or p.name == "config.json")
    key = json.dumps([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files])
    cache_file = cache_home() / "weight-hashes.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    if key in cache:
        return cache[key]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    cache[key] = "sha256:" + digest.hexdigest()
    write_text_atomic(cache_file, json.dumps(cache))
    return cache[key]


def _base_info(name_or_path: str, path: str, is_local: bool, revision: str | None, quant: Quantization):
    if is_local:
        content_hash = weights_hash(path)
    else:
        # A hub checkpoint is identified by the commit its files were resolved at, which is content-addressed.
        from huggingface_hub import snapshot_download

        local = snapshot_download(path, revision=revision, allow_patterns=["config.json"])
        content_hash = "hub-commit:" + Path(local).name
    return BaseModelInfo(name_or_path, path, revision, content_hash, asdict(quant))


def get_quantization(args: ModelArguments) -> Quantization:
    """The quantization the precision keys of `args` ask for, checked: says what to change when it cannot work."""
    dtype = DTYPES.get(args.dtype or "float32")
    if dtype is None:
        raise UserError(f"dtype must be one of {sorted(DTYPES)}; got {args.dtype!r}")
    compute = DTYPES.get(args.bnb_4bit_compute_dtype or dtype)
    if compute is None:
        raise UserError(f"bnb_4bit_compute_dtype must be one of {sorted(DTYPES)}; got {args.bnb_4bit_compute_dtype!r}")
    if args.load_in_4bit and args.load_in_8bit:
        raise UserError("load_in_4bit and load_in_8bit are both set: choose one (QLoRA uses load_in_4bit: true)")
    if args.load_in_4bit and args.bnb_4bit_quant_type not in QUANT_TYPES:
        raise UserError(f"bnb_4bit_quant_type must be one of {QUANT_TYPES}; got {args.bnb_4bit_quant_type!r}")
    if (args.load_in_4bit or args.load_in_8bit) and not args.use_peft:
        raise UserError(
            "quantized weights cannot be trained directly: set use_peft: true (QLoRA) "
            "or load_in_4bit: false and load_in_8bit: false"
        )
    storage = args.bnb_4bit_quant_storage
    storage = DTYPES.get(storage, storage) if storage else "uint8"
    if storage not in ("uint8", "float32", "bfloat16", "float16"):
        raise UserError(
            f"bnb_4bit_quant_storage must be uint8, bfloat16, float16 or float32; got {args.bnb_4bit_quant_storage!r}"
        )
    if args.load_in_4bit:
        return Quantization(4, args.bnb_4bit_quant_type, args.use_bnb_nested_quant, compute, storage)
    if args.load_in_8bit:
        return Quantization(8, None, False, compute)
    return Quantization(16 if dtype != "float32" else 32, None, False, dtype)


def bnb_config(quant: Quantization):
    import torch
    from transformers import BitsAndBytesConfig

    if quant.bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant.quant_type,
            bnb_4bit_use_double_quant=quant.double_quant,
            bnb_4bit_compute_dtype=getattr(torch, quant.compute_dtype),
            bnb_4bit_quant_storage=getattr(torch, quant.quant_storage),
            # Keep the scalar head and lm_head out of 4-bit: they are small and the reward must stay precise.
            llm_int8_skip_modules=["score", "lm_head", "v_head"],
        )
    if quant.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=["score", "lm_head", "v_head"])
    return None


def _sharded_launch() -> bool:
    """Whether `accelerate launch` started this process under FSDP or DeepSpeed ZeRO-3."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return True
    return (
        os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    )


def resolve_device_map(device_map: str | None, quant: Quantization):
    """`auto`, `cpu`, `cuda`, `cuda:N` or None; quantized training on several GPUs pins each process to its own GPU."""
    import torch

    if _sharded_launch():
        # FSDP and ZeRO-3 place (and shard) the weights themselves; transformers refuses a device_map with ZeRO-3.
        return None
    if device_map in (None, "", "none"):
        device_map = "auto"
    if device_map.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device_map {device_map!r} asks for CUDA but no CUDA device is visible; use device_map: cpu")
    if device_map == "auto":
        if not torch.cuda.is_available():
            return {"": "cpu"}
        # With accelerate launching one process per GPU, each process loads its whole quantized copy on its GPU.
        from accelerate import PartialState

        return {"": PartialState().local_process_index} if quant.bits in (4, 8) else "auto"
    if device_map in ("cpu", "cuda") or device_map.startswith("cuda:"):
        return {"": device_map}
    raise UserError(f"device_map must be auto, cpu, cuda or cuda:N; got {device_map!r}")


def load_tokenizer(args: ModelArguments | str, padding_side: str = "right", assistant_only_loss: bool = False):
    """The base's tokenizer (of `args`' base, or of a model path or alias) with a pad token distinct from EOS
    where the vocabulary has one, and its chat template (marked for assistant-only loss when asked)."""
    from transformers import AutoTokenizer

    from workbench.modeling.chat_templates import training_chat_template

    args = base_of(ModelArguments(model_name_or_path=args) if isinstance(args, str) else args)
    path, _ = resolve_model_path(args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=args.model_revision)
    tokenizer.padding_side = padding_side
    if assistant_only_loss:
        tokenizer.chat_template = training_chat_template(tokenizer.chat_template) or tokenizer.chat_template
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token:
        # A pad equal to EOS makes sequence-classification heads and loss masks treat real EOS tokens as padding.
        vocab = tokenizer.get_vocab()
        for candidate in ("<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "<|endoftext|>", tokenizer.unk_token):
            if candidate and candidate in vocab and candidate != tokenizer.eos_token:
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    args: ModelArguments,
    *,
    head: Head = "causal_lm",
    for_training: bool = False,
    gradient_checkpointing: bool = False,
    pad_token_id: int | None = None,
    num_hidden_layers: int | None = None,
):
    """The base that `args` names (base, device and precision groups), with a causal-LM or a scalar head, ready for
    k-bit training if asked. The one `from_pretrained` of a model in the workbench. `num_hidden_layers`: only the
    first that many decoder layers, then the final norm (a reward model reading a middle layer: `reward_layer`).

    The returned model carries `workbench_base`, the `BaseModelInfo` that adapter manifests record and check.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    args = base_of(args)
    quant = get_quantization(args)
    path, is_local = resolve_model_path(args.model_name_or_path)
    kwargs = dict(
        revision=args.model_revision,
        dtype=getattr(torch, quant.compute_dtype),
        device_map=resolve_device_map(args.device_map, quant),
        quantization_config=bnb_config(quant),
    )
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    if num_hidden_layers is not None:
        kwargs["num_hidden_layers"] = num_hidden_layers
    if head == "scalar":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
        if pad_token_id is not None:
            model.config.pad_token_id = pad_token_id
    elif head == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    else:
        raise UserError(f"head must be causal_lm or scalar; got {head!r}")
    if for_training and quant.bits == 4:
        keep_4bit_weights_unpacked(model)
    if for_training and quant.bits in (4, 8):
        freeze_quantized_base(model, head)
    if for_training and gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.workbench_base = _base_info(args.model_name_or_path, path, is_local, args.model_revision, quant)
    return model


def recomputes_activations(model) -> bool:
    """Whether `model` (a base or a PeftModel over one) was loaded with gradient checkpointing: backward then runs
    each layer's forward again, under whatever adapter is active at that moment."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    # transformers 5.23 renamed `is_gradient_checkpointing` (a deprecated alias there) to `is_activation_checkpointing`
    name = "is_activation_checkpointing"
    return bool(getattr(inner, name if hasattr(type(inner), name) else "is_gradient_checkpointing", False))


def freeze_quantized_base(model, head: str) -> None:
    """Freeze a k-bit base for adapter training, its unquantized weights (embeddings, output head, norms) left in the
    compute dtype; a new scalar head trains in float32.

    Not peft's `prepare_model_for_kbit_training`: it also casts every unquantized weight to float32, and the float32
    embeddings then carry a float32 residual stream through every layer. Measured on an H200 with Llama-3.1-8B's shape
    (4-bit, bf16 compute, batch 4 x 512, bench/results/model_sizes-h200.json): 7.35 GiB allocated before the first SFT
    step instead of 5.4, and more activations. TRL's trainers (1.16) no longer call it either.
    """
    import torch

    for parameter in model.parameters():
        parameter.requires_grad_(False)
    if head == "scalar":  # initialised here, not pretrained: a 16-bit trainable weight would lose its small updates
        model.score.to(torch.float32)


def keep_4bit_weights_unpacked(model) -> int:
    """Keep the 4-bit layers of a model that will be trained off bitsandbytes' AVX512-BF16 inference path; returns how
    many layers. Our own code: bitsandbytes (0.50) has no switch for it in its config.

    On a CPU with AVX512-BF16, a `Linear4bit`'s first forward in eval mode without gradients repacks its weights for
    a fused kernel (`gemv_4bit`) that every later forward then takes, also in training, and that kernel has no
    backward: gradients stop at every 4-bit layer. Measured on such a machine: after one no-grad eval forward
    (Trainer's evaluation, a PPO rollout), no LoRA weight of the tiny model received a gradient. Saving a checkpoint
    unpacks the weights again, lossily (block scales rounded to bf16), on the saving process only, so two processes
    then diverged.
    Inference-only models keep the fused path: it decodes 1.7-2.5x faster on the default model (measured).
    """
    import bitsandbytes as bnb

    layers = [module for module in model.modules() if isinstance(module, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def count_bnb_layers(model) -> dict[str, int]:
    """How many bitsandbytes 4-bit and 8-bit linear layers the model holds (proof that quantization happened)."""
    import bitsandbytes as bnb

    counts = {"Linear4bit": 0, "Linear8bitLt": 0}
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            counts["Linear4bit"] += 1
        elif isinstance(module, bnb.nn.Linear8bitLt):
            counts["Linear8bitLt"] += 1
    return counts
