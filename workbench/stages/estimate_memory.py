"""`workbench estimate-memory MODEL`: memory for inference and training per dtype, from the model's config alone.

Unlike `accelerate estimate-memory`, training on an int8 or NF4 base (LoRA/QLoRA) gets an answer, and activations
are counted with and without gradient checkpointing. The formulas are in `workbench.modeling.memory`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from workbench.errors import UserError
from workbench.modeling.memory import DTYPES, MemoryEstimate, MemorySettings, estimate_memory

USAGE = (
    "workbench estimate-memory MODEL [--method full|lora|qlora] [--stage sft|reward|ppo] [--batch B] [--seq S] "
    "[--json] [...]"
)


@dataclass
class EstimateMemoryArguments(MemorySettings):
    model: str = field(
        default="",
        metadata={
            "help": "Alias (smollm2-135m-instruct), local directory or config.json, or hub id; may be given "
            "as the first positional argument. Only the config is read, never weights."
        },
    )
    json: bool = field(default=False, metadata={"help": "Print the estimate as JSON (bytes) instead of tables."})


def parse_arguments(argv: list[str]) -> EstimateMemoryArguments:
    from transformers import HfArgumentParser

    argv = list(argv)
    positional_model = argv.pop(0) if argv and not argv[0].startswith("-") else None
    parser = HfArgumentParser(EstimateMemoryArguments, prog="workbench estimate-memory", usage=USAGE)
    (arguments,) = parser.parse_args_into_dataclasses(args=argv)
    if positional_model is not None:
        if arguments.model and arguments.model != positional_model:
            raise UserError(f"MODEL: given twice ({positional_model!r} and --model {arguments.model!r}); give one")
        arguments.model = positional_model
    if not arguments.model:
        raise UserError("MODEL: expected a model alias, local directory or hub id as the first argument")
    return arguments


def resolve_config(name_or_path: str):
    """A local config.json or directory holding one is read here; anything else goes to the shared loader."""
    from transformers import AutoConfig

    if os.path.isfile(name_or_path) and name_or_path.endswith(".json"):
        values = _config_values(name_or_path)
        if "model_type" not in values:
            raise UserError(f"MODEL: {name_or_path} has no model_type; expected a transformers config.json")
        config = AutoConfig.for_model(**values)
        _check_sizes(config, values, name_or_path)
        return config
    if os.path.isdir(name_or_path):
        path = os.path.join(name_or_path, "config.json")
        if not os.path.isfile(path):
            raise UserError(f"MODEL: directory {name_or_path} has no config.json")
        values = _config_values(path)
    from workbench.modeling.loading import load_config

    config = load_config(name_or_path)
    if os.path.isdir(name_or_path):
        _check_sizes(config, values, path)
    return config


# The sizes the estimate is made of; a config without one would silently get the model class's default.
REQUIRED_SIZES = ("hidden_size", "num_hidden_layers", "vocab_size")


def _config_values(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}:{error.lineno}: expected a transformers config (JSON), found {error.msg}") from error
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: expected a transformers config (UTF-8 JSON), found {error.reason}") from error
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a transformers config (a JSON object), found {type(values).__name__}")
    return values


def _check_sizes(config, values: dict, path: str) -> None:
    aliases = getattr(config, "attribute_map", {})  # e.g. GPT-2: hidden_size is n_embd
    missing = [key for key in REQUIRED_SIZES if key not in values and aliases.get(key) not in values]
    if missing:
        default = getattr(config, missing[0], None)
        raise UserError(
            f"{path}: expected {missing[0]!r} (the estimate is made of {', '.join(REQUIRED_SIZES)}), found none "
            f"(the {type(config).__name__} default would be {default}; say the model's own)"
        )


def human_bytes(count: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            return f"{count / size:.2f} {unit}"
    return f"{count} B"


def print_tables(estimate: MemoryEstimate, model: str) -> None:
    from rich.console import Console
    from rich.table import Table

    settings = estimate.settings
    console = Console(width=max(Console().width, 120))
    console.print(
        f"[bold]{model}[/bold] ({estimate.model_type}): {estimate.parameters:,} parameters, "
        f"{estimate.trainable_parameters:,} trainable ({settings.method}, stage {settings.stage}); "
        f"batch {settings.batch}{_items(settings)} x seq {settings.seq}"
    )
    inference = Table(title="Inference (generation with a KV cache of batch x seq)")
    for column in ("dtype", "weights", "KV cache", "activations", "total"):
        inference.add_column(column, justify="left" if column == "dtype" else "right")
    for dtype in DTYPES:
        row = estimate.inference[dtype]
        inference.add_row(dtype, *(human_bytes(row[key]) for key in ("weights", "kv_cache", "activations", "total")))
    console.print(inference)

    optimizer = settings.optim + ("" if settings.method == "full" else f", LoRA r={settings.lora_r}")
    training = Table(title=f"Training, {settings.method} ({optimizer}); ckpt = gradient checkpointing")
    columns = {
        "weights": "weights",
        "gradients": "grads",
        "optimizer": "optimizer",
        "activations": "activations",
        "activations_checkpointed": "act. (ckpt)",
        "total": "total",
        "total_checkpointed": "total (ckpt)",
    }
    training.add_column("dtype")
    for label in columns.values():
        training.add_column(label, justify="right")
    notes = []
    for dtype in DTYPES:
        row = estimate.training[dtype]
        if isinstance(row, str):
            training.add_row(dtype, "N/A", *[""] * (len(columns) - 1))
            notes.append(f"{dtype}: {row}")
        else:
            training.add_row(dtype, *(human_bytes(row[key]) for key in columns))
    training.caption = "N/A: " + "; ".join(notes) if notes else None
    console.print(training)


def main(argv: list[str]) -> int:
    arguments = parse_arguments(argv)
    settings = MemorySettings(**{name: getattr(arguments, name) for name in MemorySettings.__dataclass_fields__})
    estimate = estimate_memory(resolve_config(arguments.model), settings)
    if arguments.json:
        print(json.dumps({"model": arguments.model, **estimate.to_dict()}, indent=2))
    else:
        print_tables(estimate, arguments.model)
    return 0


def _items(settings) -> str:
    """What --batch counts for the reward stage: pairs, or rankings of ranking_size answers."""
    if settings.stage != "reward":
        return ""
    return f" rankings of {settings.ranking_size}" if settings.ranking_size else " pairs"
