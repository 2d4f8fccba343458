"""`workbench ppo --config recipes/<model>/ppo.yaml`: PPO with policy, reference, value and reward on ONE 4-bit base.

The base is loaded once; the SFT adapter is attached twice (`policy`, trained, and `ref`, frozen), the reward
adapter twice (`reward`, frozen, and `value`, trained), each with the reward stage's scalar head for the last two.
With `value_model: ref_features` the critic is a trained copy of the reward head alone, read on the `ref` pass's
hidden states (no `value` adapter). With a critic-free `advantage_estimator` (rloo, grpo, reinforce++,
reinforce++_baseline) there is no critic.
The loop is ours (workbench/rl/trainer.py): TRL deleted its PPOTrainer (docs/ARCHITECTURE.md).

Output folder: `adapter/` (the PPO policy: PEFT files + workbench.json naming its SFT and reward parents),
`value_adapter/` (with a critic), `recipe.yaml`, `metrics.json` (every step's metrics and a summary),
`checkpoint-*/` (for `--resume`, which continues exactly), `wandb/` (offline runs).
"""

from __future__ import annotations

import dataclasses
import json
from functools import partial
from pathlib import Path

STAGE = "ppo"
FINISHED = ["adapter/workbench.json", "metrics.json"]


def parse(argv: list[str]):
    from workbench.modeling.arguments import ModelArguments
    from workbench.output_dir import ResumeArguments
    from workbench.recipe import RecipeParser
    from workbench.rl.ppo_config import PPOConfig
    from workbench.tracking import TrackingConfig

    parser = RecipeParser(
        [PPOConfig, ModelArguments, ResumeArguments, TrackingConfig],
        "workbench ppo",
        model_groups=("base", "device", "precision"),
        unread_why="the policy continues the SFT adapter and the value the reward adapter, with their own settings",
    )
    parsed = parser.parse(argv)
    parsed[0].check(inputs=False)  # here too: `workbench pipeline` refuses a recipe that cannot work before any stage
    return (*parsed, parser.given)


def parent(role: str, adapter_dir: str, manifest) -> dict:
    return {
        "role": role,
        "path": str(Path(adapter_dir).resolve()),
        "stage": manifest.stage,
        "created_at": manifest.created_at,
        "wandb_run": manifest.wandb_run,
    }


def main(argv: list[str]) -> int:
    ppo_cfg, model_args, run_args, tracking_cfg, given = parse(argv)
    configs = (ppo_cfg, model_args, tracking_cfg)
    ppo_cfg.check()

    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from workbench import tracking
    from workbench.data.prompts import load_prompts
    from workbench.fileio import write_json_atomic
    from workbench.modeling import adapters, heads, loading
    from workbench.modeling.arguments import base_of
    from workbench.modeling.single_base import load_single_base
    from workbench.output_dir import claim_output_dir
    from workbench.recipe import resolved_recipe, write_resolved_recipe
    from workbench.rl import checkpoint
    from workbench.rl.trainer import PPOTrainer

    output_dir = Path(ppo_cfg.output_dir)
    # ── lineage: the SFT adapter names the base; the reward adapter must sit on the same one ──────────────────────
    sft_manifest = adapters.read_manifest(ppo_cfg.sft_adapter, "CAUSAL_LM", "sft_adapter")
    reward_manifest = adapters.read_manifest(ppo_cfg.reward_adapter, "SEQ_CLS", "reward_adapter")
    policy_manifest = adapters.read_policy_manifest(ppo_cfg.policy_adapter, ppo_cfg.sft_adapter, sft_manifest)
    model_args = base_of(model_args, sft_manifest.base_model)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    recipe = partial(write_resolved_recipe, output_dir / "recipe.yaml", STAGE, given, *configs)
    last_checkpoint = claim_output_dir(output_dir, run_args, STAGE, FINISHED, checkpoint.latest_checkpoint, recipe)
    set_seed(ppo_cfg.seed)

    # ── tokenizer and prompts ────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(model_args, padding_side="left")
    rows = load_prompts(ppo_cfg.prompts, "prompts", column=ppo_cfg.prompt_column, need_ids=False)
    prompts = [row["prompt"] for row in rows]
    per_step = f"{ppo_cfg.batch_size} prompts x {ppo_cfg.rollouts_per_prompt} responses"
    print(f"workbench ppo: {len(prompts)} prompts, {ppo_cfg.total_steps} steps of {per_step} per process")
    critic = f", critic: value {ppo_cfg.value_model}" if ppo_cfg.critic else ""
    print(f"workbench ppo: advantage estimator {ppo_cfg.advantage_estimator}{critic}")

    # ── one quantized base, four adapters ────────────────────────────────────────────────────────────────────────
    quant = loading.get_quantization(model_args)
    model = load_single_base(
        model_args,
        sft_adapter=ppo_cfg.sft_adapter,
        reward_adapter=ppo_cfg.reward_adapter,
        gradient_checkpointing=ppo_cfg.gradient_checkpointing,
        value=ppo_cfg.critic,
        policy_adapter=ppo_cfg.policy_adapter,
        value_model=ppo_cfg.value_model,
        reward_uncertainty_coef=ppo_cfg.reward_uncertainty_coef,
    )
    base_info = model.workbench_base
    trainer = PPOTrainer(model, tokenizer, prompts, ppo_cfg, accelerator)
    trained = sum(p.numel() for p in trainer.tensors.values())
    print(f"workbench ppo: adapters {sorted(model.peft_config)} on one {quant.describe()} base; {trained:,} trained")
    if last_checkpoint:
        trainer.resume(last_checkpoint)
        print(f"workbench ppo: resumed from {last_checkpoint.name} (step {trainer.step_count})")

    # ── tracking ─────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, ppo_cfg.run_name, resolved_recipe(given, *configs))

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    desc = "ppo" if ppo_cfg.critic else ppo_cfg.advantage_estimator
    progress = tqdm(
        total=ppo_cfg.total_steps, initial=trainer.step_count, desc=desc, disable=not accelerator.is_main_process
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
            ]
            + ([parent("policy", ppo_cfg.policy_adapter, policy_manifest)] if policy_manifest else []),
            data_fingerprint=sft_manifest.data_fingerprint,
            metrics=summary,
            wandb_run=tracking.run_reference(run),
            extra={
                "prompts": ppo_cfg.prompts,
                "kl_estimator": ppo_cfg.kl_estimator,
                "advantage_estimator": ppo_cfg.advantage_estimator,
                **({"value_model": ppo_cfg.value_model} if ppo_cfg.critic else {}),
            },
        )
        adapter_dir = adapters.save(model, "policy", output_dir / "adapter", manifest)
        tokenizer.save_pretrained(adapter_dir)
        value_extra = {**manifest.extra, "role": "value"}
        if ppo_cfg.critic:  # the critic reads the reward head's layer (the reward stage's reward_layer)
            value_extra["head"] = {"module": "score", "layer": heads.head_layer(model, "value")}
        value_manifest = dataclasses.replace(manifest, task_type="SEQ_CLS", extra=value_extra)
        if ppo_cfg.critic:  # on ref features the critic is the ref LoRA (the SFT adapter) with the value head
            lora = "ref" if ppo_cfg.value_on_ref_features else "value"
            heads.save_scalar_adapter(model, lora, output_dir / "value_adapter", value_manifest, head="value")
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
