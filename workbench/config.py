"""Recipes: flat YAML files whose keys are dataclass fields, parsed by TRL's `TrlParser` (CLI flags override).

TRL's parser already rejects unknown keys; we add what a user needs to fix one: the file, the line, and the closest
field names. `--help` lists every field of every dataclass with its help text.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import ModelConfig, TrlParser

from workbench.errors import UserError
from workbench.fileio import write_text_atomic
from workbench.tracking import SECRET_KEY


@dataclass
class WorkbenchModelConfig(ModelConfig):
    """TRL's ModelConfig with QLoRA as the default and the few options TRL does not have."""

    model_name_or_path: str | None = field(
        default="smollm2-135m-instruct",
        metadata={
            "help": "Base model: a local checkpoint, a hub id, or an alias (smollm2-135m-instruct, tiny-llama)."
        },
    )
    dtype: str | None = field(
        default="bfloat16",
        metadata={"help": "Weights dtype for unquantized parts and 4-bit compute: bfloat16, float16 or float32."},
    )
    use_peft: bool = field(default=True, metadata={"help": "Train an adapter (PEFT) instead of the full model."})
    load_in_4bit: bool = field(default=True, metadata={"help": "Load the base in 4-bit with bitsandbytes (QLoRA)."})
    use_bnb_nested_quant: bool = field(
        default=True,
        metadata={"help": "Double quantization: quantize the 4-bit absmax constants too (~0.4 bit/param)."},
    )
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "Modules to adapt: all-linear (every linear layer but the output head) or a list of names."},
    )
    peft_method: str = field(
        default="lora", metadata={"help": "PEFT method: lora (with use_dora/use_rslora), ia3, prompt_tuning."}
    )
    num_virtual_tokens: int = field(default=20, metadata={"help": "prompt_tuning: number of virtual tokens."})
    prompt_tuning_init_text: str | None = field(
        default=None, metadata={"help": "prompt_tuning: initialise the virtual tokens from this text."}
    )
    bnb_4bit_compute_dtype: str | None = field(
        default=None, metadata={"help": "Compute dtype of the 4-bit layers; defaults to `dtype`."}
    )
    device_map: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N."})


@dataclass
class TrackingConfig:
    """Weights & Biases settings. Offline automatically when no WANDB_API_KEY is set."""

    wandb_project: str = field(default="alignment-workbench", metadata={"help": "W&B project."})
    wandb_group: str | None = field(default=None, metadata={"help": "W&B group (a pipeline run groups its stages)."})
    wandb_job_type: str | None = field(default=None, metadata={"help": "W&B job type; defaults to the stage name."})
    wandb_mode: str = field(
        default="auto",
        metadata={"help": "auto (online if WANDB_API_KEY is set, else offline), online, offline or disabled."},
    )
    wandb_tags: list[str] | None = field(default=None, metadata={"help": "W&B tags."})


def _key_lines(path: Path) -> dict[str, int]:
    """Line number (1-based) of each top-level key in a YAML mapping."""
    node = yaml.compose(path.read_text())
    if node is None or not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value}


def _recipe_path(argv: list[str]) -> Path | None:
    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise UserError("--config needs a recipe path")
    return Path(argv[index + 1])


def load_recipe(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist")
    try:
        recipe = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise UserError(f"recipe {path} is not valid YAML: {error}") from error
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of field: value, got {type(recipe).__name__}")
    return recipe


class RecipeParser(TrlParser):
    """TrlParser that names the file, line and nearest field for an unknown recipe key, and exits cleanly."""

    def __init__(self, dataclass_types, prog: str, defaults: dict | None = None):
        super().__init__(dataclass_types, prog=prog)
        self.stage_defaults = dict(defaults or {})
        if defaults:
            self.set_defaults(**defaults)
        self.given: set[str] = set()

    def known_fields(self) -> set[str]:
        return {action.dest for action in self._actions}

    def parse(self, argv: list[str]):
        argv = list(argv)
        recipe_path = _recipe_path(argv)
        cli_keys = {arg[2:].split("=")[0].replace("-", "_") for arg in argv if arg.startswith("--")} - {"config"}
        self.given = set(self.stage_defaults) | cli_keys
        if recipe_path is not None:
            recipe = load_recipe(recipe_path)
            self.given |= set(recipe)
            unknown = [key for key in recipe if key not in self.known_fields() and key != "env"]
            if unknown:
                lines = _key_lines(recipe_path)
                key = unknown[0]
                close = difflib.get_close_matches(key, sorted(self.known_fields()), n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise UserError(
                    f"{recipe_path}:{lines.get(key, '?')}: unknown key {key!r}{hint} "
                    f"(a recipe key must be a field listed by `{self.prog} --help`)"
                )
        try:
            return self.parse_args_and_config(argv)
        except ValueError as error:
            where = f"{recipe_path}: " if recipe_path else ""
            raise UserError(f"{where}{error}") from error


RUNTIME_FLAGS = {"resume", "overwrite", "force"}


def resolved_recipe(given: set[str], *configs) -> dict:
    """Final values of every key the recipe or the command line gave: a recipe that reproduces the run.

    Only given keys, because dataclass post-init rewrites many defaults and those differ between library versions.
    Runtime flags (resume, overwrite) and anything secret-looking are left out.
    """
    resolved: dict = {}
    for config in configs:
        for item in dataclasses.fields(config):
            if item.name in given and item.name not in RUNTIME_FLAGS and not SECRET_KEY.search(item.name):
                resolved[item.name] = _plain(getattr(config, item.name))
    return resolved


def _plain(value):
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, enum.Enum):  # before str: TrainingArguments' strategies are str enums
        return value.value
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def write_resolved_recipe(path: Path, command: str, given: set[str], *configs) -> None:
    """The recipe as run (recipe file + CLI overrides), opening with the command that reruns it."""
    header = (
        f"# Resolved recipe, written by the workbench. Rerun with:\n#   workbench {command} --config {path.name}\n"
    )
    body = yaml.safe_dump(resolved_recipe(given, *configs), sort_keys=True, allow_unicode=True)
    write_text_atomic(path, header + body)
