"""`workbench raft --config recipes/<model>/raft.yaml`: rejection-sampling fine-tuning (RAFT): N answers to each
training prompt from the policy, the reward model keeps the best one, and TRL's SFTTrainer fine-tunes the policy on
the kept answers.

The method of Llama 2's rejection-sampling rounds (Touvron et al. 2023), RAFT (Dong et al. 2023) and ReST's improve
step (Gulcehre et al. 2023); OpenRLHF runs it as three scripts (batch inference, reward scoring, SFT). TRL 1.16 has no
trainer for it (its BestOfNSampler and IterativeSFTTrainer are gone), so this stage joins shared pieces: sampling and
scoring on one base as the eval's best-of-N row does (workbench/evaluation/policies.py: the policy and `reward` as
adapters, the base in the reward stage's precision, as its manifest records it), then TRL's SFTTrainer as `workbench
sft` runs it, on the start adapter (the base in the recipe's precision). The policy learns only answers it
wrote itself, so it stays near them without a KL penalty (the eval reports its KL to SFT).

Output folder: `samples.jsonl` (every prompt's N answers, their rewards and which one was kept; a `--resume` after a
kill during training reuses them), `adapter/` (the policy: PEFT files + workbench.json naming its SFT, reward and
start parents), `recipe.yaml`, `metrics.json` (the reward of the kept answers against all samples, training loss),
`checkpoint-*/` (for `--resume`), `wandb/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.errors import UserError

STAGE = "raft"
FINISHED = ["adapter/workbench.json", "metrics.json"]
SAMPLES = "samples.jsonl"


@dataclass
class RAFTConfig:
    """What RAFT samples from, judges with and learns on (TRL's SFTConfig holds the training hyper-parameters,
    Sampling the answers' settings)."""

    sft_adapter: str | None = field(
        default=None,
        metadata={"help": "SFT adapter folder (a `workbench sft` output_dir/adapter): the policy starts from it."},
    )
    policy_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Start from this policy adapter instead of sft_adapter (a later labeling round continues the last "
            "round's policy); the same kind of adapter as sft_adapter."
        },
    )
    reward_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Reward adapter folder (a `workbench reward` output_dir/adapter): it keeps one answer of N."
        },
    )
    prompts: list[dict] = field(
        default_factory=lambda: [{"path": "bundled:prompts", "where": {"split": "train"}}],
        metadata={"help": "Training prompts: datasets as in PPO's `prompts` (path, where, max_samples)."},
    )
    max_prompts: int | None = field(
        default=None,
        metadata={
            "help": "Use this many prompts, drawn at random (under `seed`) from `prompts`; default all of them."
        },
    )
    num_samples: int = field(
        default=4, metadata={"help": "N: answers sampled per prompt; the reward model keeps the best one (2 or more)."}
    )
    sampling_batch_size: int = field(default=64, metadata={"help": "Answers sampled, and scored, together."})

    def check(self) -> None:
        for key in ("sft_adapter", "reward_adapter"):
            if not getattr(self, key):
                raise UserError(
                    f"{key} is required: the folder a `workbench {key.split('_')[0]}` run wrote (adapter/)"
                )
        if self.num_samples < 2:
            raise UserError(
                f"num_samples must be at least 2 (the reward model keeps one of N); got {self.num_samples}"
            )
        if self.sampling_batch_size < 1 or (self.max_prompts is not None and self.max_prompts < 1):
            raise UserError(
                f"sampling_batch_size and max_prompts must be at least 1; got {self.sampling_batch_size}, "
                f"{self.max_prompts}"
            )


def parse(argv: list[str]):
    import torch
    from trl import SFTConfig

    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.generation import Sampling
    from workbench.output_dir import ResumeArguments
    from workbench.recipe import RecipeParser, check_trainer_arguments
    from workbench.tracking import TrackingConfig

    cuda = torch.cuda.is_available()
    defaults = dict(
        output_dir="outputs/raft",
        report_to=["wandb"],
        use_cpu=not cuda,
        bf16=cuda,
        logging_steps=5,
        assistant_only_loss=True,
        temperature=0.7,
        max_new_tokens=128,
        min_new_tokens=1,
    )
    parser = RecipeParser(
        [RAFTConfig, Sampling, ModelArguments, ResumeArguments, TrackingConfig, SFTConfig],
        "workbench raft",
        defaults,
        model_groups=("base", "device", "precision"),
        unread_why="the policy continues the SFT adapter, with its own LoRA settings",
    )
    parsed = parser.parse(argv)
    check_trainer_arguments(parsed[-1], argv)
    parsed[0].check()
    parsed[1].check()
    return (*parsed, parser.given)


def sampling_record(cfg: RAFTConfig, sampling, start: tuple, reward_manifest, seed: int, rows: list[dict]) -> dict:
    """What the samples depend on (`start`: the policy adapter's folder and manifest): a run resumed with the same
    record reuses them. An adapter is named by its folder and when it was written (one retrained in place differs)."""
    import hashlib

    ids = json.dumps([row["prompt_id"] for row in rows]).encode()
    return {
        "policy": [str(Path(start[0]).resolve()), start[1].created_at],
        "reward": [str(Path(cfg.reward_adapter).resolve()), reward_manifest.created_at],
        "n": cfg.num_samples,
        **vars(sampling),
        "seed": seed,
        "batch_size": cfg.sampling_batch_size,
        "prompts_sha256": hashlib.sha256(ids).hexdigest(),
    }


def saved_samples(path: Path, record: dict) -> list[dict] | None:
    """The samples a killed run wrote, when they were drawn exactly as this run would draw them."""
    from workbench.jsonl import read_jsonl

    if not path.is_file():
        return None
    rows = [row for _, row in read_jsonl(path)]
    return rows if rows and rows[0].get("sampling") == record else None


def draw_samples(cfg: RAFTConfig, sampling, model_args, start: str, rows: list[dict], seed: int) -> list[dict]:
    """N answers per prompt from the start policy, each answer's reward, and the one best-of-N keeps."""
    import gc

    from workbench.evaluation import policies as scoring
    from workbench.modeling.generation import generate_completions

    policy = {"name": "policy", "adapter": start, "runs_as": "policy"}
    model, tokenizer = scoring.load(cfg.reward_adapter, [policy], model_args)
    prompts = [row["prompt"] for row in rows]
    with scoring.active(model, "policy", start):
        texts = generate_completions(
            model, tokenizer, prompts, cfg.num_samples, sampling, cfg.sampling_batch_size, seed
        )
    print(f"workbench raft: scoring {sum(map(len, texts))} answers with the reward model")
    rewards = scoring.candidate_rewards(model, tokenizer, prompts, texts, cfg.sampling_batch_size)
    del model
    gc.collect()
    return [
        {**row, "completions": answers, "rewards": scores, "kept": scoring.best_index(scores)}
        for row, answers, scores in zip(rows, texts, rewards)
    ]


def summary(samples: list[dict]) -> dict:
    """The reward model's view of what was kept: mean reward of the kept answers against every sample's."""
    every = [reward for row in samples for reward in row["rewards"]]
    kept = [row["rewards"][row["kept"]] for row in samples]
    words = [len(row["completions"][row["kept"]].split()) for row in samples]
    return {
        "prompts": len(samples),
        "samples": len(every),
        "reward_mean_samples": sum(every) / len(every),
        "reward_mean_kept": sum(kept) / len(kept),
        "words_mean_kept": sum(words) / len(words),
        "empty_kept": sum(1 for row in samples if not row["completions"][row["kept"]].strip()),
    }


def main(argv: list[str]) -> int:
    cfg, sampling, model_args, run_args, tracking_cfg, sft_cfg, given = parse(argv)
    configs = (cfg, sampling, model_args, tracking_cfg, sft_cfg)

    import random

    from datasets import Dataset
    from transformers import set_seed

    from workbench import tracking
    from workbench.data.prompts import load_prompts
    from workbench.distributed import on_main_process
    from workbench.fileio import write_json_atomic, write_jsonl_atomic
    from workbench.modeling import adapters, loading
    from workbench.modeling.arguments import base_of
    from workbench.output_dir import claim_output_dir, trainer_checkpoint
    from workbench.recipe import resolved_recipe, write_resolved_recipe
    from workbench.stages.ppo import parent
    from workbench.stages.sft import trainer_class

    # ── lineage: the SFT adapter names the base; the reward adapter must sit on the same one ──────────────────────
    sft_manifest = adapters.read_manifest(cfg.sft_adapter, "CAUSAL_LM", "sft_adapter")
    reward_manifest = adapters.read_manifest(cfg.reward_adapter, "SEQ_CLS", "reward_adapter")
    policy_manifest = adapters.read_policy_manifest(cfg.policy_adapter, cfg.sft_adapter, sft_manifest)
    start, start_manifest = cfg.sft_adapter, sft_manifest
    if policy_manifest:
        start, start_manifest = cfg.policy_adapter, policy_manifest
    model_args = base_of(model_args, sft_manifest.base_model)

    output_dir = Path(sft_cfg.output_dir)
    recipe = partial(write_resolved_recipe, output_dir / "recipe.yaml", STAGE, given, *configs)
    resume_from = claim_output_dir(output_dir, run_args, STAGE, FINISHED, trainer_checkpoint, recipe)
    set_seed(sft_cfg.seed)

    # ── prompts: max_prompts of them at random ───────────────────────────────────────────────────────────────────
    rows = load_prompts(cfg.prompts, "prompts", need_ids=False)
    if cfg.max_prompts is not None and cfg.max_prompts < len(rows):
        rows = random.Random(sft_cfg.seed).sample(rows, cfg.max_prompts)
    print(f"workbench raft: {len(rows)} prompts x {cfg.num_samples} answers; the reward model keeps one of each")

    # ── samples: N answers per prompt, the best one kept (a resumed run reuses the ones it drew) ────────────────────
    record = sampling_record(cfg, sampling, (start, start_manifest), reward_manifest, sft_cfg.seed, rows)

    def sampled() -> list[dict]:
        path = output_dir / SAMPLES
        samples = None if run_args.overwrite else saved_samples(path, record)
        if samples is not None:
            print(f"workbench raft: reusing the {len(samples)} prompts' answers in {path}")
            return samples
        if resume_from is not None:  # the checkpoint trained on answers this recipe would not draw
            raise UserError(
                f"{path}: expected the answers {resume_from.name} trained on, drawn with this recipe's prompts, "
                "policy, reward model and sampling settings; found other ones or none: pass --overwrite to begin again"
            )
        samples = draw_samples(cfg, sampling, model_args, start, rows, sft_cfg.seed)
        write_jsonl_atomic(path, [{**row, "sampling": record} for row in samples])
        return samples

    samples = on_main_process(sampled)
    drawn = summary(samples)
    print(
        f"workbench raft: mean reward {drawn['reward_mean_kept']:.3f} kept against {drawn['reward_mean_samples']:.3f} "
        f"over all {drawn['samples']} answers"
    )
    kept = [row["prompt"] + [{"role": "assistant", "content": row["completions"][row["kept"]]}] for row in samples]
    train_dataset = Dataset.from_list([{"messages": messages} for messages in kept])

    # ── tokenizer ────────────────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(model_args, assistant_only_loss=sft_cfg.assistant_only_loss)

    # ── model: the start adapter, trained on ─────────────────────────────────────────────────────────────────────
    model = loading.load_model(model_args, for_training=True, gradient_checkpointing=sft_cfg.gradient_checkpointing)
    base_info = model.workbench_base
    model = adapters.attach(model, "default", path=start, trainable=True)

    # ── trainer ──────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, sft_cfg.run_name, resolved_recipe(given, *configs))
    if run is None:
        sft_cfg.report_to = []
    sft_cfg.eval_strategy = "no"
    trainer = trainer_class()(model=model, args=sft_cfg, train_dataset=train_dataset, processing_class=tokenizer)

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    result = trainer.train(resume_from_checkpoint=resume_from)
    metrics = {**drawn, **{f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()}}
    metrics["global_step"] = trainer.state.global_step

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    if trainer.accelerator.is_main_process:
        parents = [parent("sft", cfg.sft_adapter, sft_manifest), parent("reward", cfg.reward_adapter, reward_manifest)]
        if cfg.policy_adapter:
            parents.append(parent("policy", cfg.policy_adapter, start_manifest))
        manifest = adapters.AdapterManifest(
            stage=STAGE,
            base_model=base_info.to_dict(),
            peft_method=sft_manifest.peft_method,
            parents=parents,
            data_fingerprint=sft_manifest.data_fingerprint,
            metrics=metrics,
            wandb_run=tracking.run_reference(run),
            extra={"prompts": cfg.prompts, "num_samples": cfg.num_samples, "temperature": sampling.temperature},
        )
        adapter_dir = adapters.save(trainer.model, "default", output_dir / "adapter", manifest, tokenizer)
        write_json_atomic(output_dir / "metrics.json", metrics)
        if run is not None:
            import wandb

            table = wandb.Table(columns=["prompt_id", "prompt", "kept", "reward", "mean reward of the N"])
            for row in samples[:50]:
                mean = sum(row["rewards"]) / len(row["rewards"])
                answer, reward = row["completions"][row["kept"]], row["rewards"][row["kept"]]
                table.add_data(row["prompt_id"], row["prompt"][-1]["content"], answer, reward, mean)
            run.log({f"raft/{k}": v for k, v in drawn.items()} | {"kept": table})
            run.summary.update(metrics)
        tracking.log_artifact(run, adapter_dir, f"{STAGE}-adapter-{output_dir.name}", "adapter", manifest.extra)
        print(f"workbench raft: adapter saved to {adapter_dir}")
        print(json.dumps(metrics, indent=2))
    tracking.finish(run)
    return 0
