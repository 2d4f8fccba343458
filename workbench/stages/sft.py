"""`workbench sft --config recipes/<model>/sft.yaml`: supervised fine-tuning with TRL's SFTTrainer, QLoRA by default.

Output folder: `adapter/` (PEFT files + workbench.json manifest), `recipe.yaml` (the recipe as run), `metrics.json`,
`checkpoint-*/` (for `--resume`), `wandb/` (offline runs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import write_json_atomic

STAGE = "sft"
FINISHED = ["adapter/workbench.json", "model/workbench.json", "metrics.json"]


@dataclass
class SFTDataConfig:
    """What to train on and how to run the stage (TRL's SFTConfig holds the training hyper-parameters)."""

    datasets: list[dict] = field(
        default_factory=lambda: [{"path": "bundled:instructions", "where": {"split": "train"}}],
        metadata={
            "help": "Training datasets, a weighted mixture: a list of {path, weight, split, where, template, "
            "prompt_template, completion_template, max_samples}. path: a .jsonl/.json/.parquet/.csv file, a folder "
            "saved with save_to_disk, bundled:NAME, or a hub id."
        },
    )
    eval_datasets: list[dict] | None = field(
        default=None, metadata={"help": "Held-out datasets (same form as `datasets`); eval loss is reported on them."}
    )
    eval_split_size: float = field(
        default=0.0, metadata={"help": "If no eval_datasets: hold out this fraction of the training mixture."}
    )
    mixture_size: int | None = field(
        default=None,
        metadata={"help": "Rows in the training mixture; default: the largest mixture that repeats no row."},
    )


def trainer_class():
    from trl import SFTTrainer

    from workbench.modeling.adapters import ResumeKeepsAdapterDtype
    from workbench.modeling.padding_free import PaddingFreeKeepsMaxLength

    class WorkbenchSFTTrainer(PaddingFreeKeepsMaxLength, ResumeKeepsAdapterDtype, SFTTrainer):
        pass

    return WorkbenchSFTTrainer


def parse(argv: list[str]):
    import torch
    from trl import SFTConfig

    from workbench.modeling.arguments import ModelArguments
    from workbench.output_dir import ResumeArguments
    from workbench.recipe import RecipeParser, check_trainer_arguments, check_value
    from workbench.tracking import TrackingConfig

    defaults = dict(
        output_dir="outputs/sft", report_to=["wandb"], use_cpu=not torch.cuda.is_available(), logging_steps=5
    )
    dataclasses = [SFTDataConfig, ModelArguments, ResumeArguments, TrackingConfig, SFTConfig]
    parser = RecipeParser(dataclasses, "workbench sft", defaults)
    parsed = parser.parse(argv)
    data_cfg, sft_cfg = parsed[0], parsed[-1]
    check_trainer_arguments(sft_cfg, argv)
    split = data_cfg.eval_split_size
    check_value(argv, "eval_split_size", 0 <= split < 1, "a fraction in [0, 1) (0: no held-out split)", split)
    return (*parsed, parser.given)


def main(argv: list[str]) -> int:
    data_cfg, model_args, run_args, tracking_cfg, sft_cfg, given = parse(argv)
    configs = (data_cfg, model_args, tracking_cfg, sft_cfg)

    from transformers import set_seed

    from workbench import tracking
    from workbench.data.mixture import build_mixture, fingerprint
    from workbench.modeling import adapters, loading
    from workbench.output_dir import claim_output_dir, trainer_checkpoint
    from workbench.recipe import resolved_recipe, write_resolved_recipe

    output_dir = Path(sft_cfg.output_dir)
    recipe = partial(write_resolved_recipe, output_dir / "recipe.yaml", STAGE, given, *configs)
    resume_from = claim_output_dir(output_dir, run_args, STAGE, FINISHED, trainer_checkpoint, recipe)
    set_seed(sft_cfg.seed)

    # ── tokenizer ────────────────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(model_args, assistant_only_loss=sft_cfg.assistant_only_loss)

    # ── data ─────────────────────────────────────────────────────────────────────────────────────────────────────
    train_dataset, kind = build_mixture(
        data_cfg.datasets, tokenizer, sft_cfg.seed, "datasets", total=data_cfg.mixture_size
    )
    eval_dataset = None
    if data_cfg.eval_datasets:
        eval_dataset, _ = build_mixture(data_cfg.eval_datasets, tokenizer, sft_cfg.seed, "eval_datasets")
    elif data_cfg.eval_split_size > 0:
        split = train_dataset.train_test_split(test_size=data_cfg.eval_split_size, seed=sft_cfg.seed)
        train_dataset, eval_dataset = split["train"], split["test"]
    if sft_cfg.assistant_only_loss and kind != "messages":
        raise UserError(f"assistant_only_loss needs conversational `messages` data; the training data is {kind}")
    if eval_dataset is None:
        sft_cfg.eval_strategy = "no"
    elif "eval_strategy" not in given:  # with held-out data, evaluate as often as we checkpoint unless told otherwise
        sft_cfg.eval_strategy, sft_cfg.eval_steps = "steps", sft_cfg.eval_steps or sft_cfg.save_steps
    print(f"workbench sft: {len(train_dataset)} training rows ({kind}), {len(eval_dataset or [])} eval rows")

    # ── model ────────────────────────────────────────────────────────────────────────────────────────────────────
    model = loading.load_model(model_args, for_training=True, gradient_checkpointing=sft_cfg.gradient_checkpointing)
    base_info = model.workbench_base

    # ── adapters ─────────────────────────────────────────────────────────────────────────────────────────────────
    peft_config = adapters.get_peft_config(model_args, task_type="CAUSAL_LM")
    if peft_config is not None:
        model = adapters.attach(model, "default", config=peft_config)
        model.print_trainable_parameters()

    # ── trainer ──────────────────────────────────────────────────────────────────────────────────────────────────
    if eval_dataset is not None and resume_from is None:
        # Held-out loss before the first step, inside train(): an evaluate() before train() would leave the model
        # marked prepared, and accelerate would then train it without DDP under `accelerate launch` (measured).
        sft_cfg.eval_on_start = True
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, sft_cfg.run_name, resolved_recipe(given, *configs))
    if run is None:
        sft_cfg.report_to = []
    trainer = trainer_class()(
        model=model, args=sft_cfg, train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=tokenizer
    )

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    metrics: dict = {}
    result = trainer.train(resume_from_checkpoint=resume_from)
    base_eval = [e["eval_loss"] for e in trainer.state.log_history if e.get("step") == 0 and "eval_loss" in e]
    if base_eval:  # the adapter starts as the identity (LoRA B = 0): the base model's held-out loss
        metrics["base_eval_loss"] = base_eval[0]
    metrics.update({f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()})
    if eval_dataset is not None:
        metrics["eval_loss"] = trainer.evaluate()["eval_loss"]
    metrics["global_step"] = trainer.state.global_step

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    if trainer.accelerator.is_main_process:
        manifest = adapters.AdapterManifest(
            stage=STAGE,
            base_model=base_info.to_dict(),
            peft_method=peft_config.peft_type.value.lower() if peft_config is not None else "full",
            data_fingerprint=fingerprint(train_dataset, eval_dataset),
            metrics=metrics,
            wandb_run=tracking.run_reference(run),
            extra={"datasets": data_cfg.datasets, "eval_datasets": data_cfg.eval_datasets, "format": kind},
        )
        if peft_config is not None:
            adapter_dir = adapters.save(trainer.model, "default", output_dir / "adapter", manifest, tokenizer)
        else:
            adapter_dir = output_dir / "model"
            trainer.save_model(str(adapter_dir))
            manifest.write(adapter_dir)
        write_json_atomic(output_dir / "metrics.json", metrics)
        tracking.log_artifact(run, adapter_dir, f"{STAGE}-adapter-{output_dir.name}", "adapter", manifest.extra)
        print(f"workbench sft: adapter saved to {adapter_dir}")
        print(json.dumps(metrics, indent=2))
    tracking.finish(run)
    return 0
