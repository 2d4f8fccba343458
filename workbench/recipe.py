"""Recipes: flat YAML files whose keys are dataclass fields, parsed by TRL's `TrlParser` (CLI flags override).

TRL's parser already rejects unknown keys; we add what a user needs to fix one: the file, the line, and the closest
field names. A stage that reads only some groups of `ModelArguments` (workbench/modeling/arguments.py) refuses the
others' keys the same way: a key that would do nothing is an error. `--help` lists every field with its help text.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
from pathlib import Path

import yaml
from trl import TrlParser

from workbench.errors import UserError
from workbench.fileio import write_text_atomic
from workbench.modeling.arguments import GROUPS, ModelArguments, group_of
from workbench.tracking import SECRET_KEY


def _key_lines(path: Path) -> dict[str, int]:
    """Line number (1-based) of each top-level key in a YAML mapping."""
    node = yaml.compose(read_recipe_text(path))
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


def read_recipe_text(path: Path) -> str:
    """The recipe file's text, or a one-line UserError (missing, not UTF-8)."""
    if not path.is_file():
        raise UserError(f"recipe {path} does not exist")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        found = error.object[error.start : error.start + 1].hex()
        raise UserError(f"{path}:{line}: expected UTF-8 text, found the byte 0x{found}") from error


def load_recipe(path: Path) -> dict:
    text = read_recipe_text(path)
    try:
        recipe = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = " ".join(filter(None, [getattr(error, "context", None), getattr(error, "problem", None)]))
        raise UserError(
            f"{where}: expected a YAML mapping of field: value, found invalid YAML ({problem or error})"
        ) from error
    if recipe is None:
        return {}
    if not isinstance(recipe, dict):
        raise UserError(f"recipe {path} must be a YAML mapping of field: value, got {type(recipe).__name__}")
    return recipe


def check_value(argv: list[str], key: str, ok: bool, expected: str, found) -> None:
    """A parsed value out of its range: one line naming where it came from (the recipe file and line, or the
    flag; else the stage default), the key, what was expected and what was found."""
    if ok:
        return
    recipe_path = _recipe_path(argv)
    if any(arg == f"--{key}" or arg.startswith(f"--{key}=") for arg in argv) or recipe_path is None:
        where = f"--{key}"
    else:
        line = _key_lines(recipe_path).get(key)
        where = f"{recipe_path}:{line}: {key}" if line else f"{recipe_path}: {key} (its default)"
    raise UserError(f"{where}: expected {expected}, found {found!r}")


def check_trainer_arguments(args, argv: list[str]) -> None:
    """The sizes and rates a transformers Trainer divides by or steps with, checked at parse time (a zero batch
    size otherwise surfaces as a traceback from deep inside torch after the model has loaded)."""
    for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        check_value(argv, key, getattr(args, key) >= 1, "1 or more", getattr(args, key))
    check_value(argv, "learning_rate", args.learning_rate >= 0, "a learning rate of 0 or more", args.learning_rate)
    check_value(argv, "max_steps", args.max_steps != 0, "a number of steps (or -1: num_train_epochs)", args.max_steps)
    if args.max_steps < 0:
        check_value(argv, "num_train_epochs", args.num_train_epochs > 0, "more than 0", args.num_train_epochs)
    if getattr(args, "max_length", None) is not None:
        check_value(argv, "max_length", args.max_length >= 1, "1 or more tokens", args.max_length)


class RecipeParser(TrlParser):
    """TrlParser that names the file, line and nearest field for an unknown recipe key, and exits cleanly."""

    def __init__(
        self,
        dataclass_types,
        prog: str,
        defaults: dict | None = None,
        model_groups: tuple[str, ...] = GROUPS,
        unread_why: str = "",
    ):
        """`model_groups`: the ModelArguments groups this command reads (when ModelArguments is one of the
        dataclasses); `unread_why` says where the other keys' settings come from instead."""
        super().__init__(dataclass_types, prog=prog)
        self.stage_defaults = dict(defaults or {})
        if defaults:
            self.set_defaults(**defaults)
        self.given: set[str] = set()
        reads_model = ModelArguments in dataclass_types
        self.unread = {f.name for f in dataclasses.fields(ModelArguments)} if reads_model else set()
        self.unread = {name for name in self.unread if group_of(name) not in model_groups}
        self.unread_why = unread_why

    def _refuse_unread(self, keys: list[str], recipe_path: Path | None) -> None:
        if not keys:
            return
        key = keys[0]
        where = f"{recipe_path}:{_key_lines(recipe_path).get(key, '?')}: " if recipe_path else f"--{key}: "
        why = f" ({self.unread_why})" if self.unread_why else ""
        raise UserError(f"{where}key {key!r} ({group_of(key)} settings) is not read by `{self.prog}`{why}; remove it")

    def known_fields(self) -> set[str]:
        return {action.dest for action in self._actions}

    def error(self, message: str):
        """argparse's errors (a value of the wrong type, a bad choice) as one line naming the recipe file, line and
        key when the value came from the recipe, instead of the usage text."""
        match = re.match(r"argument --([\w-]+)(?:/[^:]*)?: (.*)", message)
        recipe_path = getattr(self, "_recipe_path", None)
        if match and recipe_path is not None:
            key = match.group(1).replace("-", "_")
            lines = _key_lines(recipe_path)
            if key in lines and f"--{key}" not in getattr(self, "_argv", []):
                raise UserError(f"{recipe_path}:{lines[key]}: key {key!r}: {match.group(2)}")
        if match:
            raise UserError(f"--{match.group(1)}: {match.group(2)} (`{self.prog} --help` lists every option)")
        raise UserError(f"{message} (`{self.prog} --help` lists every option)")

    def parse(self, argv: list[str]):
        argv = list(argv)
        recipe_path = _recipe_path(argv)
        self._recipe_path, self._argv = recipe_path, argv  # for error()
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
            self._refuse_unread([key for key in recipe if key in self.unread], recipe_path)
        self._refuse_unread(sorted(cli_keys & self.unread), None)
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
