"""`workbench ppo --config recipes/<model>/ppo.yaml`: PPO with policy, reference, value and reward on ONE 4-bit base.

The base is loaded once; the SFT adapter is attached twice (`policy`, trained, and `ref`, frozen), the reward
adapter twice (`reward`, frozen, and `value`, trained), each with the reward stage's scalar head for the last two.
The loop is ours (workbench/rl/trainer.py): TRL deleted its PPOTrainer (DESIGN.md).

Output folder: `adapter/` (the PPO policy: PEFT files + workbench.json naming its SFT and reward parents),
`value_adapter/`, `recipe.yaml`, `metrics.json` (every step's metrics and a summary), `checkpoint-*/` (for
`--resume`, which continues exactly), `wandb/` (offline runs).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from workbench.errors import UserError

STAGE = "ppo"


def parse(argv: list[str]):
    from workbench.config import RecipeParser, TrackingConfig, WorkbenchModelConfig
    from workbench.rl.trainer import PPOConfig

    parser = RecipeParser([PPOConfig, WorkbenchModelConfig, TrackingConfig], "workbench ppo")
    return (*parser.parse(argv), parser.given)


def load_prompts(specs: list, column: str, tokenizer) -> list[list[dict]]:
    """Prompts as chat messages from the recipe's `prompts:` datasets (bundled:NAME, a file, a folder, a hub id)."""
    from workbench.data import formats
    from workbench.data.mixture import DatasetSpec, load_raw
    from workbench.rl.rollout import as_messages

    if not specs:
        raise UserError("recipe key `prompts` is empty: list at least one dataset (path: ...)")
    prompts: list[list[dict]] = []
    for index, raw in enumerate(specs):
        where = f"prompts[{index}]"
        spec = DatasetSpec.from_recipe(raw, where)
        dataset = load_raw(spec, f"{where} ({spec.path})")
        formats.check_columns(dataset.column_names, [column, *(spec.where or {})], where)
        rows = [row for row in dataset if all(row[k] == v for k, v in (spec.where or {}).items())]
        prompts += [as_messages(row[column], f"{where} row {i}") for i, row in enumerate(rows[: spec.max_samples])]
    if not prompts:
        raise UserError("the `prompts` datasets have no rows (after their `where` filters)")
    if tokenizer.chat_template is None:
        raise UserError("the base model's tokenizer has no chat template; PPO prompts are chat conversations")
    return prompts


def parent(role: str, adapter_dir: str, manifest) -> dict:
    return {
        "role": role,
        "path": str(Path(adapter_dir).resolve()),
        "stage": manifest.stage,
        "created_at": manifest.created_at,
        "wandb_run": manifest.wandb_run,
    }


def main(argv: list[str]) -> int:
    ppo_cfg, model_cfg, tracking_cfg, given = parse(argv)
    ppo_cfg.check()

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from workbench import tracking
    from workbench.config import resolved_recipe, write_resolved_recipe
    from workbench.fileio import write_json_atomic
    from workbench.modeling import adapters, heads, loading
    from workbench.rl import checkpoint
    from workbench.rl.rollout import load_single_base
    from workbench.rl.trainer import PPOTrainer

    output_dir = Path(ppo_cfg.output_dir)
    last_checkpoint = checkpoint.latest_checkpoint(output_dir)
    if last_checkpoint and not (ppo_cfg.resume or ppo_cfg.overwrite):
        raise UserError(f"{output_dir} holds {last_checkpoint.name}: pass --resume to continue or --overwrite")
    if ppo_cfg.overwrite and not ppo_cfg.resume:  # a fresh run: older checkpoints must not be resumed later
        for old in checkpoint.list_checkpoints(output_dir):
            shutil.rmtree(old)
        last_checkpoint = None
    if ppo_cfg.resume and not last_checkpoint:
        print(f"workbench ppo: no checkpoint in {output_dir}; starting from the beginning")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    set_seed(ppo_cfg.seed)

    # ── lineage: the SFT adapter names the base; the reward adapter must sit on the same one ──────────────────────
    sft_manifest = adapters.read_manifest(ppo_cfg.sft_adapter)
    reward_manifest = adapters.read_manifest(ppo_cfg.reward_adapter)
    base = model_cfg.model_name_or_path if "model_name_or_path" in given else sft_manifest.base_model["name_or_path"]

    # ── tokenizer and prompts ────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(base, model_cfg.model_revision, padding_side="left")
    prompts = load_prompts(ppo_cfg.prompts, ppo_cfg.prompt_column, tokenizer)
    print(f"workbench ppo: {len(prompts)} prompts, {ppo_cfg.total_steps} steps of {ppo_cfg.batch_size} per process")

    # ── one quantized base, four adapters ────────────────────────────────────────────────────────────────────────
    quant = loading.quantization_for(model_cfg)
    model = load_single_base(
        base,
        quant=quant,
        sft_adapter=ppo_cfg.sft_adapter,
        reward_adapter=ppo_cfg.reward_adapter,
        revision=model_cfg.model_revision,
        device_map=model_cfg.device_map,
        attn_implementation=model_cfg.attn_implementation,
        gradient_checkpointing=ppo_cfg.gradient_checkpointing,
    )
    base_info = model.workbench_base
    trainer = PPOTrainer(model, tokenizer, prompts, ppo_cfg, accelerator)
    trained = sum(p.numel() for p in trainer.tensors.values())
    print(f"workbench ppo: adapters {sorted(model.peft_config)} on one {quant.describe()} base; {trained:,} trained")
    if ppo_cfg.resume and last_checkpoint:
        trainer.resume(last_checkpoint)
        print(f"workbench ppo: resumed from {last_checkpoint.name} (step {trainer.step_count})")

    # ── tracking ─────────────────────────────────────────────────────────────────────────────────────────────────
    config_for_tracking = resolved_recipe(given, ppo_cfg, model_cfg, tracking_cfg)
    run = None
    if accelerator.is_main_process:
        run = tracking.start_run(STAGE, tracking_cfg, output_dir, ppo_cfg.run_name, config_for_tracking)
        write_resolved_recipe(output_dir / "recipe.yaml", STAGE, given, ppo_cfg, model_cfg, tracking_cfg)

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    progress = tqdm(
        total=ppo_cfg.total_steps, initial=trainer.step_count, desc="ppo", disable=not accelerator.is_main_process
    )
    while trainer.step_count < ppo_cfg.total_steps:
        metrics = trainer.step()
        if run is not None:
            run.log(metrics, step=trainer.step_count)
        progress.update(1)
        progress.set_postfix(reward=f"{metrics['reward/mean']:.3f}", kl=f"{metrics['objective/kl']:.3f}")
        if trainer.step_count % ppo_cfg.save_steps == 0 or trainer.step_count == ppo_cfg.total_steps:
            trainer.save(output_dir)
    progress.close()

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    if accelerator.is_main_process:
        summary = trainer.summary()
        manifest = adapters.AdapterManifest(
            stage=STAGE,
            base_model=base_info.to_dict(),
            peft_method=sft_manifest.peft_method,
            parents=[
                parent("sft", ppo_cfg.sft_adapter, sft_manifest),
                parent("reward", ppo_cfg.reward_adapter, reward_manifest),
            ],
            data_fingerprint=sft_manifest.data_fingerprint,
            metrics=summary,
            wandb_run=tracking.run_reference(run),
            extra={"prompts": ppo_cfg.prompts, "kl_estimator": ppo_cfg.kl_estimator},
        )
        adapter_dir = adapters.save(model, "policy", output_dir / "adapter", manifest)
        tokenizer.save_pretrained(adapter_dir)
        value_manifest = dataclasses.replace(manifest, task_type="SEQ_CLS", extra={**manifest.extra, "role": "value"})
        heads.save_scalar_adapter(model, "value", output_dir / "value_adapter", value_manifest)
        write_json_atomic(output_dir / "metrics.json", {"summary": summary, "history": trainer.history})
        if run is not None:
            import wandb

            table = wandb.Table(columns=["step", "prompt", "response", "reward"], data=trainer.samples)
            run.log({"samples": table}, step=trainer.step_count)
            run.summary.update(summary)
        tracking.log_artifact(run, adapter_dir, f"{STAGE}-adapter-{output_dir.name}", "adapter", manifest.extra)
        print(f"workbench ppo: adapter saved to {adapter_dir}")
        print(json.dumps(summary, indent=2))
    tracking.finish(run)
    return 0
