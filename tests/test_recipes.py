"""Every recipe under recipes/ loads with its stage's parser and opens with the command that runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
STAGE_RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)


def stage_of(recipe: Path) -> str:
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# workbench "), f"{recipe} must open with the command that runs it"
    words = first[2:].split()
    assert words[2:4] == ["--config", str(recipe.relative_to(ROOT))], f"{recipe}: first line names another file"
    return words[1]


def parser_for(stage: str):
    from workbench.stages import generate, ppo, reward, sft

    parsers = {"sft": sft.parse, "generate": generate.parse, "ppo": ppo.parse, "reward": reward.parse}
    return parsers[stage]


@pytest.mark.parametrize("recipe", STAGE_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_parses(recipe):
    stage = stage_of(recipe)
    parsed = parser_for(stage)(["--config", str(recipe)])
    given = parsed[-1]
    assert set(yaml.safe_load(recipe.read_text())) <= given


def test_recipes_exist():
    assert any(p.name == "sft.yaml" for p in STAGE_RECIPES)


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    from workbench.stages import sft

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model_name_or_path: tiny-llama\nlearning_rat: 0.1\n")
    with pytest.raises(UserError) as error:
        sft.parse(["--config", str(recipe)])
    message = str(error.value)
    assert f"{recipe}:2" in message and "'learning_rat'" in message and "learning_rate" in message


def test_cli_overrides_recipe(tmp_path):
    from workbench.stages import sft

    recipe = tmp_path / "r.yaml"
    recipe.write_text("learning_rate: 0.1\nlora_r: 4\n")
    _, model_cfg, _, sft_cfg, _ = sft.parse(["--config", str(recipe), "--learning_rate", "0.5"])
    assert sft_cfg.learning_rate == 0.5 and model_cfg.lora_r == 4


def test_qlora_is_the_default():
    from workbench.stages import sft

    _, model_cfg, _, _, _ = sft.parse([])
    assert model_cfg.load_in_4bit and model_cfg.use_peft and model_cfg.use_bnb_nested_quant


def test_bad_recipe_exits_2_with_message(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("datasetz: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "sft", "--config", str(recipe)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown key 'datasetz'" in result.stderr and "Traceback" not in result.stderr


def test_help_documents_every_field():
    from dataclasses import fields

    from trl import SFTConfig

    from workbench.config import TrackingConfig, WorkbenchModelConfig
    from workbench.stages.sft import SFTDataConfig

    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "sft", "--help"], capture_output=True, text=True, check=True
    )
    for dataclass_type in (SFTDataConfig, WorkbenchModelConfig, TrackingConfig, SFTConfig):
        for item in fields(dataclass_type):
            if item.init:
                assert f"--{item.name}" in result.stdout, f"--help does not document {item.name}"
    for item in fields(SFTDataConfig) + fields(TrackingConfig):
        assert item.metadata.get("help"), f"{item.name} has no help text"


def test_resolved_recipe_round_trips_through_the_parser(tmp_path):
    """recipe.yaml written by a stage parses again to the same values (enums, lists, nested dataset specs)."""
    from workbench.config import write_resolved_recipe
    from workbench.stages import sft

    recipe = tmp_path / "in.yaml"
    recipe.write_text(
        "eval_strategy: 'no'\nlr_scheduler_type: cosine\nlora_target_modules: [q_proj, v_proj]\n"
        "datasets:\n  - {path: bundled:quotes, template: 'Quote: {quote}', weight: 2}\n"
    )
    *configs, given = sft.parse(["--config", str(recipe), "--learning_rate", "0.01", "--overwrite"])
    write_resolved_recipe(tmp_path / "out.yaml", "sft", given, *configs)
    text = (tmp_path / "out.yaml").read_text()
    assert "overwrite" not in text
    *again, _ = sft.parse(["--config", str(tmp_path / "out.yaml")])
    for first, second in zip(configs, again):
        for name in given - {"overwrite"}:
            if hasattr(first, name):
                assert getattr(first, name) == getattr(second, name), name
