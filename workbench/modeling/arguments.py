"""`ModelArguments`: the one dataclass every stage reads its base model, precision and adapter keys from.

The field names are TRL's `ModelConfig` names (a TRL recipe's model keys work here unchanged). It is our own
dataclass rather than a subclass because TRL's carries keys no stage here reads (`lora_task_type`: the stage knows
its task; `lora_target_parameters`) and lacks ones we need (`peft_method`, `device_map`, prompt tuning): a recipe key
that does nothing must fail like an unknown key.

Each field belongs to one GROUP, and each group is consumed whole by one function in workbench/modeling/:

    base       model_name_or_path, model_revision                      loading.load_model / load_tokenizer
    device     device_map, attn_implementation                         loading.load_model
    precision  dtype, load_in_4bit, load_in_8bit, bnb_4bit_*, ...      loading.get_quantization
    adapter    use_peft, peft_method, lora_*, use_rslora, use_dora, ...  adapters.get_peft_config

A stage names the groups it reads (`RecipeParser(..., model_groups=...)`); a recipe key of a group it does not read
is refused with the file and line. tests/test_model_arguments.py proves each group reaches its function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_MODEL = "smollm2-135m-instruct"
GROUPS = ("base", "device", "precision", "adapter")


def _field(default, group: str, help_: str):
    """A dataclass field with its help; `group` documents the declaration (GROUP_FIELDS below is the table, kept out
    of `metadata` because HfArgumentParser hands every metadata key to argparse)."""
    if callable(default) and not isinstance(default, type):
        return field(default_factory=default, metadata={"help": help_})
    return field(default=default, metadata={"help": help_})


@dataclass
class ModelArguments:
    """Base model, how it is held in memory, and the adapter trained on it (QLoRA by default)."""

    # ── base ─────────────────────────────────────────────────────────────────────────────────────────────────────
    model_name_or_path: str | None = _field(
        None,
        "base",
        f"Base model: a local checkpoint, a hub id, or an alias (smollm2-135m-instruct, tiny-llama). Default: the "
        f"base named in the input adapter's manifest where the stage reads one, else {DEFAULT_MODEL}.",
    )
    model_revision: str | None = _field(None, "base", "Hub revision (branch, tag or commit) of the base.")
    # ── device ───────────────────────────────────────────────────────────────────────────────────────────────────
    device_map: str = _field("auto", "device", "auto, cpu, cuda or cuda:N.")
    attn_implementation: str | None = _field(None, "device", "Attention kernel: eager, sdpa, flash_attention_2.")
    # ── precision ────────────────────────────────────────────────────────────────────────────────────────────────
    dtype: str = _field(
        "bfloat16", "precision", "Weights dtype for unquantized parts and 4-bit compute: bfloat16, float16, float32."
    )
    load_in_4bit: bool = _field(True, "precision", "Load the base in 4-bit with bitsandbytes (QLoRA).")
    load_in_8bit: bool = _field(False, "precision", "Load the base in 8-bit with bitsandbytes (LLM.int8).")
    bnb_4bit_quant_type: str = _field("nf4", "precision", "4-bit data type: nf4 or fp4.")
    use_bnb_nested_quant: bool = _field(
        True, "precision", "Double quantization: quantize the 4-bit absmax constants too (~0.4 bit/param)."
    )
    bnb_4bit_compute_dtype: str | None = _field(
        None, "precision", "Compute dtype of the 4-bit layers; defaults to `dtype`."
    )
    bnb_4bit_quant_storage: str | None = _field(
        None,
        "precision",
        "dtype the packed 4-bit weights are stored in (default uint8); FSDP and ZeRO-3 need it equal to `dtype`.",
    )
    # ── adapter ──────────────────────────────────────────────────────────────────────────────────────────────────
    use_peft: bool = _field(True, "adapter", "Train an adapter (PEFT) instead of the full model.")
    peft_method: str = _field("lora", "adapter", "PEFT method: lora (with use_dora/use_rslora), ia3, prompt_tuning.")
    lora_r: int = _field(16, "adapter", "LoRA rank.")
    lora_alpha: int = _field(32, "adapter", "LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).")
    lora_dropout: float = _field(0.05, "adapter", "Dropout on the LoRA input.")
    lora_target_modules: list[str] | None = _field(
        lambda: ["all-linear"],
        "adapter",
        "Modules to adapt: all-linear (every linear layer but the output head) or a list of names.",
    )
    lora_modules_to_save: list[str] | None = _field(
        None, "adapter", "Modules trained in full and saved with the adapter (e.g. embed_tokens)."
    )
    use_rslora: bool = _field(False, "adapter", "Rank-stabilised LoRA: scale by alpha / sqrt(r).")
    use_dora: bool = _field(False, "adapter", "Weight-decomposed LoRA (DoRA).")
    num_virtual_tokens: int = _field(20, "adapter", "prompt_tuning: number of virtual tokens.")
    prompt_tuning_init_text: str | None = _field(
        None, "adapter", "prompt_tuning: initialise the virtual tokens from this text."
    )


GROUP_FIELDS = {
    "base": ("model_name_or_path", "model_revision"),
    "device": ("device_map", "attn_implementation"),
    "precision": (
        "dtype",
        "load_in_4bit",
        "load_in_8bit",
        "bnb_4bit_quant_type",
        "use_bnb_nested_quant",
        "bnb_4bit_compute_dtype",
        "bnb_4bit_quant_storage",
    ),
    "adapter": (
        "use_peft",
        "peft_method",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "lora_modules_to_save",
        "use_rslora",
        "use_dora",
        "num_virtual_tokens",
        "prompt_tuning_init_text",
    ),
}
assert sorted(sum(GROUP_FIELDS.values(), ())) == sorted(f.name for f in dataclasses.fields(ModelArguments))


def group_of(name: str) -> str:
    """The group of a ModelArguments field."""
    return next(group for group, names in GROUP_FIELDS.items() if name in names)


def fields_of(*groups: str) -> list[str]:
    """Names of the ModelArguments fields in these groups."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"no ModelArguments group {sorted(unknown)}; groups: {GROUPS}")
    return [name for group in groups for name in GROUP_FIELDS[group]]


def base_of(args: ModelArguments, base_model: dict | None = None) -> ModelArguments:
    """`args` with the base filled in: the one the user named, else the manifest's (`base_model` record), else the
    default model. Only the base group changes."""
    if args.model_name_or_path:
        return args
    if base_model is not None:
        return dataclasses.replace(
            args, model_name_or_path=base_model["name_or_path"], model_revision=base_model.get("revision")
        )
    return dataclasses.replace(args, model_name_or_path=DEFAULT_MODEL)


def from_manifest(base_model: dict, args: ModelArguments | None = None) -> ModelArguments:
    """ModelArguments that load a base in the precision an adapter's manifest records (its `base_model` record), for
    stages that must reproduce another stage's model (the reward stage's precision when scoring). The base is the
    manifest's unless `args` names one (same weights required: checked on attach); the device group is `args`'."""
    quant = base_model["quantization"]
    args = base_of(args or ModelArguments(), base_model)
    return dataclasses.replace(
        args,
        dtype=quant["compute_dtype"],
        load_in_4bit=quant["bits"] == 4,
        load_in_8bit=quant["bits"] == 8,
        bnb_4bit_quant_type=quant.get("quant_type") or "nf4",
        use_bnb_nested_quant=bool(quant.get("double_quant")),
        bnb_4bit_compute_dtype=quant["compute_dtype"],
        bnb_4bit_quant_storage=quant.get("quant_storage"),
        use_peft=True,
    )
