"""One path from a recipe key to the model: every model key reaches its library call, in every stage that reads it.

`ModelArguments` (workbench/modeling/arguments.py) is the only place model keys are declared; each group of keys is
consumed whole by one function (precision: loading.get_quantization, adapter: adapters.get_peft_config, base and
device: loading.load_model); stages pass the dataclass on and never copy its fields; a stage refuses the keys of the
groups it does not read.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest
import torch
from model_args import margs

from workbench.errors import UserError
from workbench.modeling import adapters, loading
from workbench.modeling.arguments import ModelArguments, fields_of, from_manifest

STAGES_DIR = Path(__file__).resolve().parents[1] / "workbench" / "stages"
QUANTIZATION_RECIPE = (
    "load_in_4bit: true\nbnb_4bit_quant_type: fp4\nuse_bnb_nested_quant: false\ndtype: float32\n"
    "bnb_4bit_compute_dtype: bfloat16\nbnb_4bit_quant_storage: bfloat16\n"
)


class Reads(ModelArguments):
    """ModelArguments that records which fields were read (to prove a function consumes a whole group)."""

    def __getattribute__(self, name):
        if name in {f.name for f in dataclasses.fields(ModelArguments)}:
            object.__getattribute__(self, "__dict__").setdefault("_read", set()).add(name)
        return object.__getattribute__(self, name)

    @property
    def read(self) -> set[str]:
        return self.__dict__.get("_read", set())


def reads(**fields) -> Reads:
    return Reads(**{f.name: getattr(ModelArguments(), f.name) for f in dataclasses.fields(ModelArguments)} | fields)


def test_every_precision_key_is_read_by_get_quantization():
    args = reads(load_in_4bit=True)
    loading.get_quantization(args)
    assert set(fields_of("precision")) <= args.read | {"load_in_8bit"} and "load_in_8bit" in args.read


def test_every_adapter_key_is_read_by_get_peft_config():
    seen: set[str] = set()
    for method, extra in (("lora", {}), ("ia3", {}), ("prompt_tuning", {"prompt_tuning_init_text": "Be kind."})):
        args = reads(peft_method=method, model_name_or_path="tiny-llama", **extra)
        adapters.get_peft_config(args, "CAUSAL_LM")
        seen |= args.read
    assert set(fields_of("adapter")) <= seen


def test_every_base_and_device_key_is_read_by_load_model(tiny_model_path):
    args = reads(model_name_or_path=str(tiny_model_path), load_in_4bit=False, dtype="float32", device_map="cpu")
    loading.load_model(args)
    assert set(fields_of("base", "device")) <= args.read


def test_adapter_keys_reach_the_lora_config():
    args = ModelArguments(lora_r=7, lora_alpha=3, lora_dropout=0.25, lora_target_modules=["q_proj"], use_rslora=True)
    config = adapters.get_peft_config(args, "SEQ_CLS")
    assert (config.r, config.lora_alpha, config.lora_dropout, config.use_rslora) == (7, 3, 0.25, True)
    assert config.target_modules == {"q_proj"} and config.task_type == "SEQ_CLS"
    assert adapters.get_peft_config(ModelArguments(use_peft=False)) is None


def _stage_args(stage: str, recipe: Path) -> ModelArguments:
    from workbench.stages import evaluate, generate, ppo, reward, sft

    parse = {"sft": sft.parse, "reward": reward.parse, "ppo": ppo.parse, "generate": generate.parse}
    parse["eval"] = evaluate.parse
    parsed = parse[stage](["--config", str(recipe)])
    return next(item for item in parsed if isinstance(item, ModelArguments))


@pytest.mark.parametrize("stage", ["sft", "reward", "ppo", "generate"])
def test_every_quantization_key_reaches_the_bitsandbytes_config_of_every_stage(stage, tmp_path):
    recipe = tmp_path / f"{stage}.yaml"
    recipe.write_text(QUANTIZATION_RECIPE)
    config = loading.bnb_config(loading.get_quantization(_stage_args(stage, recipe)))
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "fp4" and not config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16 and config.bnb_4bit_quant_storage == torch.bfloat16


def test_eval_and_reward_score_load_the_reward_stage_precision(tiny_model_path):
    """Stages that score with a reward adapter rebuild its precision from the manifest: every key round-trips."""
    args = dataclasses.replace(
        margs(tiny_model_path),
        load_in_4bit=True,
        bnb_4bit_quant_type="fp4",
        use_bnb_nested_quant=True,
        bnb_4bit_quant_storage="bfloat16",
    )
    quant = loading.get_quantization(args)
    record = {"name_or_path": str(tiny_model_path), "revision": None, "quantization": dataclasses.asdict(quant)}
    assert loading.get_quantization(from_manifest(record, ModelArguments(device_map="cpu"))) == quant


@pytest.mark.parametrize(
    "stage,key",
    [("ppo", "lora_r"), ("generate", "peft_method"), ("eval", "load_in_4bit"), ("eval", "model_name_or_path")],
)
def test_a_key_the_stage_does_not_read_is_refused_with_file_and_line(stage, key, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"seed: 1\n{key}: 8\n" if key != "model_name_or_path" else f"seed: 1\n{key}: tiny-llama\n")
    with pytest.raises(UserError, match=rf"{recipe}:2: key '{key}' .* is not read by `workbench {stage}`"):
        _stage_args(stage, recipe)


def test_stages_never_build_models_or_copy_model_fields():
    """Stages hand ModelArguments to workbench/modeling/ whole: no from_pretrained, no library configs, no field
    read one by one (a copied field is a second path from the recipe key to the model)."""
    model_fields = set(fields_of("precision", "adapter")) | {"model_revision"}
    for path in sorted(STAGES_DIR.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in {"from_pretrained", "BitsAndBytesConfig", "LoraConfig"}, path.name
                on_args = isinstance(node.value, ast.Name) and node.value.id == "model_args"
                copies = on_args and node.attr in model_fields and path.name != "merge.py"
                assert not copies, f"{path.name} reads .{node.attr}"
            if isinstance(node, ast.Name):
                assert node.id not in {"BitsAndBytesConfig", "LoraConfig"}, path.name
