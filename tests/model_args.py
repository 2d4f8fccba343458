"""ModelArguments for tests: tiny models on the CPU, unquantized float32 unless a test asks for a precision."""

from __future__ import annotations

from workbench.modeling.arguments import ModelArguments


def quant(
    load_in_4bit: bool = False,
    load_in_8bit: bool = False,
    quant_type: str = "nf4",
    double_quant: bool = False,
    dtype: str = "bfloat16",
    compute_dtype: str | None = None,
    quant_storage: str | None = None,
) -> dict:
    """The precision keys of ModelArguments (the old `quantization_from_args` names and defaults)."""
    return dict(
        load_in_4bit=load_in_4bit,
        load_in_8bit=load_in_8bit,
        bnb_4bit_quant_type=quant_type,
        use_bnb_nested_quant=double_quant,
        dtype=dtype,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=quant_storage,
    )


def margs(path, precision: dict | None = None, device_map: str = "cpu", **fields) -> ModelArguments:
    """ModelArguments for the base at `path` with these precision keys (default unquantized float32) on the CPU."""
    precision = precision or quant(dtype="float32")
    path = None if path is None else str(path)
    return ModelArguments(model_name_or_path=path, device_map=device_map, **precision, **fields)


def lora(task_type: str = "CAUSAL_LM", r: int = 4, alpha: int = 8, dropout: float = 0.05, **fields):
    """A LoRA config through the stages' own path (adapters.get_peft_config)."""
    from workbench.modeling import adapters

    args = ModelArguments(lora_r=r, lora_alpha=alpha, lora_dropout=dropout, **fields)
    return adapters.get_peft_config(args, task_type)
