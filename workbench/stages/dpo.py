"""`workbench dpo --config recipes/<model>/dpo.yaml`: DPO on the labelers' preference pairs with TRL's DPOTrainer.

The policy starts from the SFT adapter and the reference IS the SFT adapter, both on ONE (4-bit) base: the SFT
adapter is attached as `default` (trained), and TRL's DPOTrainer, given a PeftModel that already carries an adapter
and no `ref_model`, adds a frozen copy of it named `ref` and switches to it for the reference log-probs
(trl/trainer/dpo_trainer.py). No second model is loaded. Every loss TRL has is a recipe key (`loss_type`, `beta`,
`label_smoothing` for conservative DPO on noisy labels, ...).

Output folder: `adapter/` (the DPO policy: PEFT files + workbench.json naming its SFT parent and the preference
datasets with their labeling round), `recipe.yaml`, `metrics.json` (held-out preference accuracy and margins of the
implicit reward), `checkpoint-*/` (for `--resume`), `wandb/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.data.preference_data import PreferenceDataConfig

STAGE = "dpo"
FINISHED = ["adapter/workbench.json", "metrics.json"]


@dataclass
class DPODataConfig(PreferenceDataConfig):
    """What DPO starts from and learns from (TRL's DPOConfig holds the training hyper-parameters)."""

    sft_adapter: str | None = field(
        default=None,
        metadata={"help": "SFT adapter folder (a `workbench sft` output_dir/adapter): the start and the reference."},
    )


def parse(argv: list[str]):
    import torch
    from trl import DPOConfig

    from workbench.modeling.arguments import ModelArguments
    from workbench.output_dir import ResumeArguments
    from workbench.recipe import RecipeParser, check_trainer_arguments
    from workbench.tracking import TrackingConfig

    cuda = torch.cuda.is_available()
    defaults = dict(output_dir="outputs/dpo", report_to=["wandb"], use_cpu=not cuda, bf16=cuda, logging_steps=5)
    parser = RecipeParser(
        [DPODataConfig, ModelArguments, ResumeArguments, TrackingConfig, DPOConfig],
        "workbench dpo",
        defaults,
        model_groups=("base", "device", "precision"),
        unread_why="the policy continues the SFT adapter, with its own LoRA settings",
    )
    parsed = parser.parse(argv)
    check_trainer_arguments(parsed[-1], argv)
    if not parsed[0].sft_adapter:
        from workbench.errors import UserError

        raise UserError("sft_adapter is required: the folder a `workbench sft` run wrote (its adapter/)")
    return (*parsed, parser.given)


def main(argv: list[str]) -> int:
    data_cfg, model_args, run_args, tracking_cfg, dpo_cfg, given = parse(argv)
    configs = (data_cfg, model_args, tracking_cfg, dpo_cfg)

    from transformers import set_seed

    from workbench import tracking
    from workbench.data.mixture import fingerprint
    from workbench.data.preference_data import load_train_and_eval
    from workbench.errors import UserError
    from workbench.fileio import write_json_atomic
    from workbench.modeling import adapters, loading
    from workbench.modeling.arguments import base_of
    from workbench.output_dir import claim_output_dir, trainer_checkpoint
    from workbench.recipe import resolved_recipe, write_resolved_recipe

    # ── lineage: the SFT adapter names the base ──────────────────────────────────────────────────────────────────
    sft_manifest = adapters.read_manifest(data_cfg.sft_adapter, "CAUSAL_LM", "sft_adapter")
    model_args = base_of(model_args, sft_manifest.base_model)

    output_dir = Path(dpo_cfg.output_dir)
    recipe = partial(write_resolved_recipe, output_dir / "recipe.yaml", STAGE, given, *configs)
    resume_from = claim_output_dir(output_dir, run_args, STAGE, FINISHED, trainer_checkpoint, recipe)
    set_seed(dpo_cfg.seed)

    # ── data ─────────────────────────────────────────────────────────────────────────────────────────────────────
    # DPO's loss has no margin term: the pairs' order is what it learns (use_margin False drops the column). TRL's
    # DPOTrainer has no per-pair weight either, so annotator agreement acts through `workbench label pull
    # --min_agreement` (which pairs come at all); label_smoothing (cDPO) or loss_type robust allow for wrong labels.
    train_dataset, eval_dataset, kind, sources = load_train_and_eval(data_cfg, dpo_cfg.seed, use_margin=False)
    print(f"workbench dpo: {len(train_dataset)} training pairs ({kind}), {len(eval_dataset or [])} eval pairs")

    # ── tokenizer ────────────────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(model_args)

    # ── model: one base; the SFT adapter as `default` (TRL adds its frozen copy `ref`) ───────────────────────────
    quant = loading.get_quantization(model_args)
    model = loading.load_model(model_args, for_training=True, gradient_checkpointing=dpo_cfg.gradient_checkpointing)
    base_info = model.workbench_base
    model = adapters.attach(model, "default", path=data_cfg.sft_adapter, trainable=True)

    # ── trainer ──────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, dpo_cfg.run_name, resolved_recipe(given, *configs))
    if run is None:
        dpo_cfg.report_to = []
    if eval_dataset is None:
        dpo_cfg.eval_strategy = "no"
    trainer = trainer_class()(
        model=model,
        args=dpo_cfg,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )
    if "ref" not in trainer.model.peft_config or trainer.ref_model is not None:
        raise RuntimeError("TRL's DPOTrainer did not add the `ref` adapter on the one base")  # a TRL change
    if len(trainer.train_dataset) == 0:
        raise UserError(f"max_length: no training pair of at most {dpo_cfg.max_length} tokens; raise max_length")
    print(
        f"workbench dpo: adapters {sorted(trainer.model.peft_config)} on one {quant.describe()} base; "
        f"loss {', '.join(dpo_cfg.loss_type)}, beta {dpo_cfg.beta}"
    )

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = {f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()}
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
        print(
            f"workbench dpo: held-out preference accuracy {metrics['eval_rewards/accuracies']:.3f} "
            f"(implicit reward margin {metrics['eval_rewards/margins']:.3f}) on {len(trainer.eval_dataset)} pairs"
        )
    metrics["global_step"] = trainer.state.global_step

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    if trainer.accelerator.is_main_process:
        sft_parent = {
            "kind": "adapter",
            "role": "sft",
            "stage": sft_manifest.stage,
            "path": str(Path(data_cfg.sft_adapter).resolve()),
            "created_at": sft_manifest.created_at,
        }
        manifest = adapters.AdapterManifest(
            stage=STAGE,
            base_model=base_info.to_dict(),
            peft_method=sft_manifest.peft_method,
            parents=[sft_parent, *sources],
            data_fingerprint=fingerprint(train_dataset, eval_dataset),
            metrics=metrics,
            wandb_run=tracking.run_reference(run),
            extra={"loss_type": dpo_cfg.loss_type, "beta": dpo_cfg.beta, "reference": "the SFT adapter (ref)"},
        )
        adapter_dir = adapters.save(trainer.model, "default", output_dir / "adapter", manifest, tokenizer)
        write_json_atomic(output_dir / "metrics.json", metrics)
        tracking.log_artifact(run, adapter_dir, f"{STAGE}-adapter-{output_dir.name}", "adapter", manifest.extra)
        print(f"workbench dpo: adapter saved to {adapter_dir}")
        print(json.dumps(metrics, indent=2))
    tracking.finish(run)
    return 0


def trainer_class():
    from trl import DPOTrainer

    from workbench.modeling.adapters import ResumeKeepsAdapterDtype

    class WorkbenchDPOTrainer(ResumeKeepsAdapterDtype, DPOTrainer):
        """TRL's DPOTrainer; a resumed run keeps the adapter dtype it was checkpointed in."""

    return WorkbenchDPOTrainer
