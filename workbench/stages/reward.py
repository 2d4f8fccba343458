"""`workbench reward --config recipes/<model>/reward.yaml`: a QLoRA reward model with TRL's RewardTrainer.

The base in 4-bit with a scalar head (`score`), a LoRA sequence-classification adapter whose head is saved with it
(PEFT `modules_to_save`), trained on preference pairs (prompt, chosen, rejected, optional margin). Output folder:
`adapter/` (PEFT files + workbench.json: the preference datasets and their labeling round, the SFT parent if any),
`recipe.yaml`, `metrics.json` (held-out pairwise accuracy, mean margin, calibration), `checkpoint-*/`, `wandb/`.
`workbench reward score ...` scores completions with the adapter (workbench/stages/reward_score.py);
`workbench reward average ...` averages several reward adapters' weights into one (workbench/stages/reward_average.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from workbench.data.preference_data import PreferenceDataConfig
from workbench.errors import UserError

STAGE = "reward"
FINISHED = ["adapter/workbench.json", "model/workbench.json", "metrics.json"]


@dataclass
class RewardDataConfig(PreferenceDataConfig):
    """Preference data and how to run the stage (TRL's RewardConfig holds the training hyper-parameters)."""

    use_margin: bool = field(
        default=True, metadata={"help": "Use the `margin` column when present: loss -log sigmoid(r_c - r_r - m)."}
    )
    margin_scale: float = field(default=1.0, metadata={"help": "Multiply every margin by this (reward units)."})
    sft_adapter: str | None = field(
        default=None,
        metadata={
            "help": "The SFT adapter this reward model belongs with: checked against the base and recorded as a "
            "parent in the manifest. The reward LoRA starts from the base unless init_from_sft."
        },
    )
    init_from_sft: bool = field(
        default=False,
        metadata={
            "help": "Start the reward LoRA from sft_adapter's LoRA weights (InstructGPT starts its reward model from "
            "the SFT model); the score head starts fresh. Needs the same LoRA settings as the SFT recipe."
        },
    )
    init_adapter: str | None = field(
        default=None,
        metadata={
            "help": "Warm start: begin from this reward adapter folder (a finished reward stage's adapter/), its LoRA "
            "weights and its score head, instead of a fresh LoRA and head; e.g. the previous labeling round's reward "
            "model (the pipeline's reward_warm_start). Same base and LoRA settings; not with init_from_sft."
        },
    )
    group_rankings: bool = field(
        default=False,
        metadata={
            "help": "Train each ranking's pairs together, every distinct answer scored once (InstructGPT's K-choose-2 "
            "batching, workbench/modeling/ranking_batches.py): the same pairwise loss at a third of the passes for "
            "rankings of 4. per_device_train_batch_size then counts rankings (groups of pairs sharing answers)."
        },
    )
    share_prompt_tokens: bool = field(
        default=True,
        metadata={
            "help": "With group_rankings: run each ranking's prompt tokens once for all its answers, their KV cache "
            "copied to every answer (ranking_batches.shared_prompt_rewards): the same scores and gradients from "
            "fewer tokens. Runs whole rows where it cannot (several processes, gradient checkpointing)."
        },
    )
    off_topic_pairs: bool = field(
        default=False,
        metadata={
            "help": "Add one training pair per prompt: its best-ranked answer over another prompt's best-ranked "
            "answer shown under it (an answer to another question ranks below any answer to this one; "
            "workbench/data/off_topic_pairs.py). Needs a `prompt` column; held-out pairs are left as they are."
        },
    )
    off_topic_pairs_per_prompt: int = field(
        default=1,
        metadata={
            "help": "With off_topic_pairs: how many off-topic pairs each prompt gets, each against a different "
            "other prompt's best-ranked answer (at most the number of other prompts)."
        },
    )
    length_term: bool = field(
        default=False,
        metadata={
            "help": "Train with a learned length term beside the head: each pair's score difference plus w * (tokens "
            "of chosen - tokens of rejected) / 10, one scalar w; the saved head leaves it out, so RL is not paid for "
            "the length preference it explains (ODIN's length head, linear; workbench/modeling/length_term.py)."
        },
    )
    length_term_learning_rate: float = field(
        default=0.05, metadata={"help": "Learning rate of the length term's weight w (with length_term: true)."}
    )
    length_decorrelation: float = field(
        default=1.0,
        metadata={
            "help": "With length_term: true, add this times |cosine| between the head's score differences and the "
            "pairs' length differences to the loss (ODIN's decorrelation: the head must not rank by length)."
        },
    )
    length_decorrelation_floor: float = field(
        default=1.0,
        metadata={
            "help": "With length_decorrelation: the RMS score difference (reward units) below which the "
            "decorrelation term is the length-aligned part of the head's differences rather than their cosine with "
            "length, so a fresh head's small scores are not pushed about by it (0: the cosine at any scale, which "
            "kept some quickstart heads from learning; workbench/modeling/length_term.py)."
        },
    )
    uncertainty_prior_precision: float = field(
        default=1.0,
        metadata={
            "help": "Save the head's Laplace posterior with this prior precision beside the adapter "
            "(reward_uncertainty.safetensors: one pass over the training answers), for RL's reward_uncertainty_coef "
            "(workbench/modeling/reward_uncertainty.py); 0 saves none."
        },
    )
    reward_layer: int = field(
        default=0,
        metadata={
            "help": "Train the reward model on the base's first N decoder layers (then its final norm): the head "
            "reads layer N's last token. 0: every layer. On the quickstart's 135M base a frozen linear probe on "
            "layer 15 of 30 ordered held-out answers as the gold rubric does more often than one on the last layer "
            "(four runs of five), at half the cost. The manifest records N; PPO, eval and `reward score` read it."
        },
    )
    linear_head_fit: bool = field(
        default=False,
        metadata={
            "help": "Before training, fit the score head alone on the frozen model's features of the training "
            "answers: an L2-penalised logistic (Bradley-Terry) regression, the length term's weight beside it "
            "(workbench/modeling/linear_head.py). Then max_steps of fine-tuning as usual, unless "
            "train_after_head_fit: false. Margins are not used by the fit."
        },
    )
    train_after_head_fit: bool = field(
        default=True,
        metadata={"help": "With linear_head_fit: fine-tune the LoRA and head after the fit; false: the fit alone."},
    )
    linear_head_l2: float = field(
        default=1.0,
        metadata={"help": "With linear_head_fit: the L2 penalty on the head's weights over standardised features."},
    )
    calibration_bins: int = field(default=10, metadata={"help": "Confidence bins for the calibration report."})
    eval_base: bool = field(
        default=True,
        metadata={"help": "Also score the held-out pairs before training (the untrained head's accuracy)."},
    )


def trainer_class():
    from trl import RewardTrainer

    from workbench.modeling.adapters import ResumeKeepsAdapterDtype
    from workbench.modeling.length_term import LengthTermMixin
    from workbench.modeling.ranking_batches import RankingLossMixin

    class WorkbenchRewardTrainer(ResumeKeepsAdapterDtype, LengthTermMixin, RankingLossMixin, RewardTrainer):
        def __init__(self, *args, head_dtype=None, **kwargs):
            super().__init__(*args, **kwargs)
            # TRL casts every trainable parameter of a quantized model to bf16, the scalar head too; the head must
            # match the compute dtype of the hidden states it reads (and the reward stays precise).
            for name, parameter in self.model.named_parameters():
                if parameter.requires_grad and "modules_to_save" in name and head_dtype is not None:
                    parameter.data = parameter.data.to(head_dtype)
            # Without autocast (a CPU run with bf16 off) the hidden states reach the head in the base's dtype, which
            # need not be the head's: the head reads them in its own dtype.
            for name, module in self.model.named_modules():
                if name.endswith("modules_to_save.default") and hasattr(module, "weight"):
                    module.register_forward_pre_hook(lambda head, args: (args[0].to(head.weight.dtype), *args[1:]))

    return WorkbenchRewardTrainer


def head_posterior(trainer, prior_precision: float) -> dict:
    """The trained head's Laplace posterior from the training pairs (workbench/modeling/reward_uncertainty.py), and
    the median uncertainty of the training answers under it (`training_median`)."""
    from workbench.modeling import reward_uncertainty
    from workbench.modeling.reward_model import final_features

    sequences, pairs = reward_uncertainty.training_answers(trainer.train_dataset)
    model = trainer.accelerator.unwrap_model(trainer.model)  # every process: the whole training set, no gather
    pad = trainer.processing_class.pad_token_id
    features = final_features(model, sequences, pad, trainer.args.per_device_eval_batch_size)
    head = model.get_base_model().score if hasattr(model, "get_base_model") else model.score
    posterior = reward_uncertainty.fit(features, pairs, head.weight.detach().float().cpu(), prior_precision)
    spread = reward_uncertainty.uncertainty(features.double(), posterior["mean"], posterior["covariance"])
    print(f"workbench reward: head posterior from {len(pairs)} pairs over {len(sequences)} answers")
    return {**posterior, "pairs": len(pairs), "training_median": spread.median().item()}


def save_posterior(posterior: dict, prior_precision: float, staging: Path) -> None:
    from workbench.modeling import reward_uncertainty

    reward_uncertainty.save(staging, posterior, prior_precision, posterior["pairs"])


def parse(argv: list[str]):
    import torch
    from trl import RewardConfig

    from workbench.modeling.arguments import ModelArguments
    from workbench.output_dir import ResumeArguments
    from workbench.recipe import RecipeParser, check_trainer_arguments
    from workbench.tracking import TrackingConfig

    cuda = torch.cuda.is_available()
    defaults = dict(output_dir="outputs/reward", report_to=["wandb"], use_cpu=not cuda, bf16=cuda, logging_steps=5)
    dataclasses = [RewardDataConfig, ModelArguments, ResumeArguments, TrackingConfig, RewardConfig]
    parser = RecipeParser(dataclasses, "workbench reward", defaults)
    parsed = parser.parse(argv)
    check_trainer_arguments(parsed[-1], argv)
    return (*parsed, parser.given)


def main(argv: list[str]) -> int:
    if argv[:1] == ["score"]:
        from workbench.stages import reward_score

        return reward_score.main(argv[1:])
    if argv[:1] == ["average"]:
        from workbench.stages import reward_average

        return reward_average.main(argv[1:])
    data_cfg, model_args, run_args, tracking_cfg, reward_cfg, given = parse(argv)
    configs = (data_cfg, model_args, tracking_cfg, reward_cfg)
    # SEQ_CLS: PEFT adds the `score` head to modules_to_save, so it is trained and saved with the adapter
    from workbench.modeling import adapters

    peft_config = adapters.get_peft_config(model_args, task_type="SEQ_CLS")
    if data_cfg.init_from_sft and not (data_cfg.sft_adapter and peft_config is not None):
        raise UserError("init_from_sft: true needs sft_adapter (the SFT adapter folder) and use_peft: true")
    if data_cfg.init_adapter and data_cfg.init_from_sft:
        raise UserError("init_adapter: expected one starting point for the reward LoRA; found init_from_sft: true too")
    if data_cfg.init_adapter and peft_config is None:
        raise UserError("init_adapter: needs use_peft: true (it continues a LoRA reward model); found use_peft: false")
    from workbench.recipe import check_value

    for key, zero in (("length_decorrelation", "no decorrelation"), ("length_decorrelation_floor", "no floor")):
        value = getattr(data_cfg, key)
        check_value(argv, key, value >= 0, f"a number >= 0 (0: {zero})", value)
    per_prompt = data_cfg.off_topic_pairs_per_prompt
    check_value(argv, "off_topic_pairs_per_prompt", per_prompt >= 1, "a whole number >= 1", per_prompt)
    if not data_cfg.uncertainty_prior_precision >= 0:
        found = data_cfg.uncertainty_prior_precision
        raise UserError(f"uncertainty_prior_precision: expected a number >= 0 (0 saves no posterior); found {found}")
    check_value(argv, "linear_head_l2", data_cfg.linear_head_l2 > 0, "a number > 0", data_cfg.linear_head_l2)
    if not data_cfg.train_after_head_fit and not data_cfg.linear_head_fit:
        check_value(argv, "train_after_head_fit", False, "true unless linear_head_fit: true (nothing trains)", False)
    from workbench.modeling.loading import decoder_layers

    layers = decoder_layers(model_args)
    expected = f"a decoder layer 1 to {layers} of the base, or 0 for all"
    check_value(argv, "reward_layer", 0 <= data_cfg.reward_layer <= layers, expected, data_cfg.reward_layer)
    if data_cfg.length_term and not data_cfg.length_term_learning_rate > 0:
        rate = data_cfg.length_term_learning_rate
        raise UserError(f"length_term_learning_rate: expected a number > 0 (with length_term: true); found {rate}")

    import torch
    from transformers import set_seed

    from workbench import tracking
    from workbench.data.mixture import fingerprint
    from workbench.data.preference_data import load_train_and_eval
    from workbench.evaluation.pairwise import evaluate_pairs, log_metrics
    from workbench.fileio import write_json_atomic
    from workbench.modeling import loading
    from workbench.output_dir import claim_output_dir, trainer_checkpoint
    from workbench.recipe import resolved_recipe, write_resolved_recipe

    output_dir = Path(reward_cfg.output_dir)
    recipe = partial(write_resolved_recipe, output_dir / "recipe.yaml", STAGE, given, *configs)
    resume_from = claim_output_dir(output_dir, run_args, STAGE, FINISHED, trainer_checkpoint, recipe)
    set_seed(reward_cfg.seed)

    # ── data ─────────────────────────────────────────────────────────────────────────────────────────────────────
    margins = dict(use_margin=data_cfg.use_margin, margin_scale=data_cfg.margin_scale)
    train_dataset, eval_dataset, kind, sources = load_train_and_eval(data_cfg, reward_cfg.seed, **margins)
    if eval_dataset is not None and "margin" in eval_dataset.column_names:
        eval_dataset = eval_dataset.remove_columns("margin")  # held-out accuracy is about the ranking alone
    if data_cfg.off_topic_pairs:
        from workbench.data.off_topic_pairs import add_off_topic_pairs

        train_dataset, added = add_off_topic_pairs(train_dataset, reward_cfg.seed, data_cfg.off_topic_pairs_per_prompt)
        print(f"workbench reward: {added} off-topic pairs added (each prompt's best answer over another prompt's)")
    print(f"workbench reward: {len(train_dataset)} training pairs ({kind}), {len(eval_dataset or [])} eval pairs")

    # ── tokenizer ────────────────────────────────────────────────────────────────────────────────────────────────
    tokenizer = loading.load_tokenizer(model_args)

    # ── model ────────────────────────────────────────────────────────────────────────────────────────────────────
    quant = loading.get_quantization(model_args)
    model = loading.load_model(
        model_args,
        head="scalar",
        for_training=True,
        gradient_checkpointing=reward_cfg.gradient_checkpointing,
        pad_token_id=tokenizer.pad_token_id,
        num_hidden_layers=data_cfg.reward_layer or None,
    )
    base_info = model.workbench_base
    parents = list(sources)
    if data_cfg.sft_adapter:
        # the policy it scores for (lineage); its weights are read only to initialise from it
        sft_manifest = adapters.read_manifest(data_cfg.sft_adapter, "CAUSAL_LM", "sft_adapter", data_cfg.init_from_sft)
        adapters.check_base(sft_manifest, base_info, data_cfg.sft_adapter)
        path = str(Path(data_cfg.sft_adapter).resolve())
        parents.append({"kind": "adapter", "stage": sft_manifest.stage, "path": path, "role": "policy"})
    if data_cfg.init_adapter:
        init_manifest = adapters.read_manifest(data_cfg.init_adapter, "SEQ_CLS", "init_adapter")
        adapters.check_base(init_manifest, base_info, data_cfg.init_adapter)
        path = str(Path(data_cfg.init_adapter).resolve())
        parents.append({"kind": "adapter", "stage": init_manifest.stage, "path": path, "role": "init"})

    # ── adapters ─────────────────────────────────────────────────────────────────────────────────────────────────
    if peft_config is not None:
        model = adapters.attach(model, "default", config=peft_config)
        if data_cfg.init_from_sft:
            copied = adapters.init_lora_from(model, "default", data_cfg.sft_adapter)
            print(f"workbench reward: LoRA initialised from {data_cfg.sft_adapter} ({copied} tensors)")
        model.print_trainable_parameters()

    # ── trainer ──────────────────────────────────────────────────────────────────────────────────────────────────
    run = tracking.start_run(STAGE, tracking_cfg, output_dir, reward_cfg.run_name, resolved_recipe(given, *configs))
    if run is None:
        reward_cfg.report_to = []
    if eval_dataset is None:
        reward_cfg.eval_strategy = "no"
    trainer = trainer_class()(
        model=model,
        args=reward_cfg,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        head_dtype=getattr(torch, quant.compute_dtype),
        group_rankings=data_cfg.group_rankings,
        share_prompt_tokens=data_cfg.share_prompt_tokens,
        length_term_learning_rate=data_cfg.length_term_learning_rate if data_cfg.length_term else None,
        length_decorrelation=data_cfg.length_decorrelation,
        length_decorrelation_floor=data_cfg.length_decorrelation_floor,
    )
    if data_cfg.init_adapter:  # once the trainer has cast the weights (a quantized model's head goes via bf16)
        copied = adapters.init_lora_from(trainer.model, "default", data_cfg.init_adapter, heads=True)
        print(f"workbench reward: warm start from {data_cfg.init_adapter} (LoRA and head, {copied} tensors)")
    if len(trainer.train_dataset) == 0:  # TRL drops the pairs longer than max_length
        raise UserError(
            f"max_length: expected training pairs of at most {reward_cfg.max_length} tokens, found none of the "
            f"{len(train_dataset)} that short (TRL drops longer ones); raise max_length"
        )
    if data_cfg.group_rankings:
        print(f"workbench reward: {len(trainer.train_dataset)} rankings (groups of pairs sharing answers) per epoch")

    # ── train ────────────────────────────────────────────────────────────────────────────────────────────────────
    metrics: dict = {}
    if eval_dataset is not None and data_cfg.eval_base and resume_from is None:
        base = evaluate_pairs(trainer, trainer.eval_dataset, data_cfg.calibration_bins)
        metrics.update({"base_eval_accuracy": base["accuracy"], "base_eval_mean_margin": base["mean_margin"]})
    if data_cfg.linear_head_fit and resume_from is None:  # a resumed run's checkpoint holds the fitted head
        from workbench.modeling.linear_head import fit_reward_head

        metrics.update(fit_reward_head(trainer, data_cfg.linear_head_l2))
    if data_cfg.train_after_head_fit:
        result = trainer.train(resume_from_checkpoint=resume_from)
        metrics.update({f"train_{k}" if not k.startswith("train") else k: v for k, v in result.metrics.items()})
    if eval_dataset is not None:
        held_out = evaluate_pairs(trainer, trainer.eval_dataset, data_cfg.calibration_bins)
        metrics.update({f"eval_{k}": v for k, v in held_out.items()})
        print(
            f"workbench reward: held-out pairwise accuracy {held_out['accuracy']:.3f} "
            f"± {held_out['accuracy_stderr']:.3f} on {held_out['pairs']} pairs"
        )
    metrics["global_step"] = trainer.state.global_step
    if trainer.length_weight is not None:  # the length preference the head was spared, per 10 tokens
        metrics["length_weight"] = trainer.final_length_weight()
    posterior = None
    if data_cfg.uncertainty_prior_precision > 0:  # the head's posterior, for RL's pessimistic reward
        posterior = head_posterior(trainer, data_cfg.uncertainty_prior_precision)
        metrics["uncertainty_training_median"] = posterior.pop("training_median")
    log_metrics(run, metrics)

    # ── save ─────────────────────────────────────────────────────────────────────────────────────────────────────
    if trainer.accelerator.is_main_process:
        hidden = model.config.get_text_config().hidden_size
        manifest = adapters.AdapterManifest(
            stage=STAGE,
            base_model=base_info.to_dict(),
            peft_method=peft_config.peft_type.value.lower() if peft_config is not None else "full",
            task_type="SEQ_CLS",
            parents=parents,
            data_fingerprint=fingerprint(train_dataset, eval_dataset),
            metrics=metrics,
            wandb_run=tracking.run_reference(run),
            extra={
                "head": {
                    "module": "score",
                    "hidden_size": hidden,
                    "pooling": "last non-pad token",
                    "layer": data_cfg.reward_layer or None,  # the decoder layers the head reads (None: all)
                },
                "format": kind,
                "use_margin": "margin" in train_dataset.column_names,
                "margin_scale": data_cfg.margin_scale,
                # the learned length preference, per 10 tokens, that the saved head leaves out
                "length_term": metrics.get("length_weight"),
            },
        )
        extra = partial(save_posterior, posterior, data_cfg.uncertainty_prior_precision) if posterior else None
        if peft_config is not None:
            adapter_dir = adapters.save(trainer.model, "default", output_dir / "adapter", manifest, tokenizer, extra)
        else:
            adapter_dir = output_dir / "model"
            trainer.save_model(str(adapter_dir))
            if extra is not None:
                extra(adapter_dir)
            manifest.write(adapter_dir)
        write_json_atomic(output_dir / "metrics.json", metrics)
        tracking.log_artifact(run, adapter_dir, f"{STAGE}-adapter-{output_dir.name}", "adapter", manifest.extra)
        print(f"workbench reward: adapter saved to {adapter_dir}")
        print(json.dumps({k: v for k, v in metrics.items() if k != "eval_calibration"}, indent=2))
    tracking.finish(run)
    return 0
