"""Every recipe under recipes/ loads with its stage's parser and opens with the command that runs it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from workbench.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
STAGE_RECIPES = sorted(p for p in (ROOT / "recipes").rglob("*.yaml") if "accelerate" not in p.parts)
ACCELERATE_CONFIGS = sorted((ROOT / "recipes" / "accelerate").glob("*.yaml"))
# Recipes for real models: recipes/<model>/ with the model's published config.json under recipes/configs/<model>/.
REAL_MODEL_RECIPES = [p for p in STAGE_RECIPES if (ROOT / "recipes" / "configs" / p.parent.name).is_dir()]


def stage_of(recipe: Path) -> str:
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# workbench "), f"{recipe} must open with the command that runs it"
    words = first[2:].split()
    assert words[2:4] == ["--config", str(recipe.relative_to(ROOT))], f"{recipe}: first line names another file"
    return words[1]


def parser_for(stage: str):
    from workbench.stages import dpo, evaluate, generate, pipeline, ppo, raft, reward, sft

    parsers = {"sft": sft.parse, "generate": generate.parse, "ppo": ppo.parse, "reward": reward.parse}
    parsers["dpo"], parsers["raft"] = dpo.parse, raft.parse
    parsers["eval"] = evaluate.parse
    parsers["pipeline"] = pipeline.parse
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
    _, model_cfg, _, _, sft_cfg, _ = sft.parse(["--config", str(recipe), "--learning_rate", "0.5"])
    assert sft_cfg.learning_rate == 0.5 and model_cfg.lora_r == 4


def test_qlora_is_the_default():
    from workbench.stages import sft

    _, model_cfg, _, _, _, _ = sft.parse([])
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

    from workbench.modeling.arguments import ModelArguments
    from workbench.stages.sft import SFTDataConfig
    from workbench.tracking import TrackingConfig

    result = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "sft", "--help"], capture_output=True, text=True, check=True
    )
    for dataclass_type in (SFTDataConfig, ModelArguments, TrackingConfig, SFTConfig):
        for item in fields(dataclass_type):
            if item.init:
                assert f"--{item.name}" in result.stdout, f"--help does not document {item.name}"
    for item in fields(SFTDataConfig) + fields(ModelArguments) + fields(TrackingConfig):
        assert item.metadata.get("help"), f"{item.name} has no help text"


def test_resolved_recipe_round_trips_through_the_parser(tmp_path):
    """recipe.yaml written by a stage parses again to the same values (enums, lists, nested dataset specs)."""
    from workbench.recipe import write_resolved_recipe
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


# ── accelerate configs ───────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_and_validates(config):
    """What `accelerate launch --config_file` does with it: load, check every key, merge into the launch arguments."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    loaded = load_config_from_file(str(config))  # raises on unknown top-level keys
    assert isinstance(loaded, ClusterConfig)
    parser = launch_command_parser()
    launch_options = {action.dest for action in parser._actions}
    for section in ("fsdp_config", "deepspeed_config"):  # nested keys become launch options; typos would be ignored
        unknown = set(getattr(loaded, section) or {}) - launch_options
        assert not unknown, f"{config.name}: {section} keys accelerate does not know: {sorted(unknown)}"
    command = ["--config_file", str(config), "-m", "workbench.cli", "sft", "--config", "r.yaml"]
    args, _, _ = _validate_launch_command(parser.parse_args(command))
    expected = {"single_gpu": "NO", "multi_gpu": "MULTI_GPU", "fsdp": "FSDP", "deepspeed_zero3": "DEEPSPEED"}
    assert loaded.distributed_type.value == expected[config.stem]
    assert (args.multi_gpu, args.use_fsdp, args.use_deepspeed) == (
        config.stem == "multi_gpu",
        config.stem == "fsdp",
        config.stem == "deepspeed_zero3",
    )
    assert args.mixed_precision == "bf16" and args.module and args.training_script == "workbench.cli"
    if config.stem == "deepspeed_zero3":
        assert loaded.deepspeed_config["zero_stage"] == 3
    if config.stem == "fsdp":
        assert loaded.fsdp_config["fsdp_use_orig_params"] is False  # QLoRA + FSDP


def test_accelerate_configs_exist():
    assert {p.stem for p in ACCELERATE_CONFIGS} >= {"single_gpu", "multi_gpu", "fsdp", "deepspeed_zero3"}


# ── real-model recipes: multi-GPU command and estimate-memory figures in the header ─────────────────────────────────

FIGURE = re.compile(
    r"^(training, gradient checkpointing|training, no gradient checkpointing|inference): "
    r"([0-9.]+) GiB$",
    re.MULTILINE,
)


def header(recipe: Path) -> str:
    """The opening comment block, '#' stripped, backslash-continued lines joined."""
    lines = []
    for line in recipe.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines).replace("\\\n", " ")


def memory_blocks(text: str) -> list[tuple[str, dict[str, float]]]:
    """Each `workbench estimate-memory ARGS` in the header with the figures (GiB) stated after it."""
    commands = list(re.finditer(r"`workbench estimate-memory ([^`]+)`", text))
    blocks = []
    for index, match in enumerate(commands):
        end = commands[index + 1].start() if index + 1 < len(commands) else len(text)
        blocks.append((match.group(1), {k: float(v) for k, v in FIGURE.findall(text[match.end() : end])}))
    return blocks


def test_real_model_recipes_exist():
    models = {p.parent.name for p in REAL_MODEL_RECIPES}
    assert {"llama-3.1-8b-instruct", "qwen2.5-7b-instruct"} <= models
    for model in models:
        assert {p.stem for p in REAL_MODEL_RECIPES if p.parent.name == model} >= {"sft", "reward", "ppo", "dpo"}


@pytest.mark.parametrize("recipe", REAL_MODEL_RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_real_model_recipe_header(recipe):
    """Line 2 is the multi-GPU command; the estimate-memory figures match what the estimator computes now for the
    recipe's own batch, sequence length, LoRA rank, dropout and optimizer."""
    from workbench.modeling.memory import MemorySettings, estimate_memory
    from workbench.stages.estimate_memory import parse_arguments, resolve_config

    stage, relative = stage_of(recipe), str(recipe.relative_to(ROOT))
    second = recipe.read_text().splitlines()[1]
    launch = re.fullmatch(r"# accelerate launch --config_file (\S+) -m workbench\.cli (\S+) --config (\S+)", second)
    assert launch, f"{relative}: line 2 must be the `accelerate launch ... -m workbench.cli` command"
    assert (ROOT / launch.group(1)).is_file() and launch.group(2, 3) == (stage, relative)

    values = yaml.safe_load(recipe.read_text())
    sft_recipe = yaml.safe_load((recipe.parent / "sft.yaml").read_text())  # PPO's adapters come from the SFT run
    if stage == "ppo":
        seq = values["max_prompt_length"] + values["max_new_tokens"]
        train_batch = values["mini_batch_size"] // values["gradient_accumulation_steps"]
        expected = {"training": (train_batch, seq), "inference": (values["forward_batch_size"], seq)}
        lora_r, lora_dropout = sft_recipe["lora_r"], 0.0  # the PPO loop turns dropout off
    else:  # RewardTrainer and DPOTrainer run chosen and rejected in one batch
        batch = values["per_device_train_batch_size"] * (2 if stage in ("reward", "dpo") else 1)
        expected = {"training": (batch, values["max_length"]), "inference": (batch, values["max_length"])}
        lora_r, lora_dropout = values.get("lora_r"), values.get("lora_dropout")
    if stage == "dpo":  # DPO continues the SFT adapter, with DPOTrainer's dropout off
        lora_r, lora_dropout = sft_recipe["lora_r"], 0.0

    blocks = memory_blocks(header(recipe))
    assert blocks, f"{relative}: no `workbench estimate-memory ...` figures in the header"
    stated = set()
    for arguments, figures in blocks:
        parsed = parse_arguments(shlex.split(arguments))
        assert parsed.model == f"recipes/configs/{recipe.parent.name}"
        assert (parsed.method, parsed.lora_r, parsed.lora_dropout, parsed.optim) == (
            "qlora",
            lora_r,
            lora_dropout,
            values["optim"],
        ), arguments
        settings = MemorySettings(**{name: getattr(parsed, name) for name in MemorySettings.__dataclass_fields__})
        config = resolve_config(str(ROOT / parsed.model))
        estimate = estimate_memory(config, settings)
        training, inference = estimate.training["int4/nf4"], estimate.inference["int4/nf4"]
        computed = {
            "training, gradient checkpointing": training["total_checkpointed"],
            "training, no gradient checkpointing": training["total"],
            "inference": inference["total"],
        }
        for label, gib in figures.items():
            assert gib == round(computed[label] / 2**30, 2), f"{relative}: {label} is {computed[label] / 2**30:.2f}"
            kind = label.split(",")[0]
            batch = parsed.batch * (2 if parsed.stage == "reward" else 1)  # --stage reward counts pairs
            assert (batch, parsed.seq) == expected[kind], f"{relative}: {label} is not for this recipe's sizes"
            if stage in ("reward", "ppo") and kind == "training":  # the stage's own model, not a causal LM's
                assert parsed.stage == stage, f"{relative}: the training figures need --stage {stage}"
        stated |= set(figures)
    assert stated >= {"training, gradient checkpointing", "training, no gradient checkpointing", "inference"}
    assert values["gradient_checkpointing"] is True and values["optim"] == "paged_adamw_8bit"
    hub_id = values.get("model_name_or_path", sft_recipe["model_name_or_path"])
    assert hub_id == sft_recipe["model_name_or_path"] and hub_id.split("/")[-1].lower() == recipe.parent.name


def test_real_model_configs_are_the_published_shapes():
    """Parameter counts of the published checkpoints (safetensors totals on the hub)."""
    from workbench.modeling.memory import model_shape, parameter_count
    from workbench.stages.estimate_memory import resolve_config

    published = {"llama-3.1-8b-instruct": 8_030_261_248, "qwen2.5-7b-instruct": 7_615_616_512}
    for model, count in published.items():
        assert parameter_count(model_shape(resolve_config(str(ROOT / "recipes" / "configs" / model)))) == count


CRITIC_ONLY = {
    "critic_warmup_steps",
    "value_learning_rate",
    "value_max_grad_norm",
    "value_model",
    "vf_coef",
    "cliprange_value",
    "lam",
}


@pytest.mark.parametrize(
    "recipe",
    sorted(p for p in STAGE_RECIPES if p.stem in ("grpo", "reinforce++")),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_critic_free_recipes_are_their_ppo_recipe_with_the_pipelines_method_keys(recipe):
    """recipes/<model>/{grpo,reinforce++}.yaml repeat the folder's ppo.yaml (a flat YAML cannot include it): they
    must stay that recipe without the critic's keys, with the keys the pipeline gives the method (RL_METHODS) and the
    same sequences per step, so a change to ppo.yaml that is not carried over fails here."""
    from workbench.pipeline.pipeline_recipe import CRITIC_FREE, RL_METHODS

    ppo, mine = yaml.safe_load((recipe.parent / "ppo.yaml").read_text()), yaml.safe_load(recipe.read_text())
    method = {k: v for k, v in RL_METHODS[recipe.stem].items() if k not in CRITIC_FREE}
    k = method.get("rollouts_per_prompt", 1)
    expected = {key: value for key, value in ppo.items() if key not in CRITIC_ONLY} | method
    expected |= {
        "batch_size": ppo["batch_size"] // k,
        "output_dir": ppo["output_dir"].replace("/ppo", f"/{recipe.stem}"),
    }
    expected["wandb_job_type"] = recipe.stem
    assert mine == expected
