"""A reward model trained with a separate length term that it leaves behind: the length bias goes there, not into the
head that scores answers for RL.

A policy's answers differ in length, and labelers' rankings mix what length explains with what it does not: on the
quickstart, candidates that ran out of tokens lost to shorter ones, and PPO followed the reward model down to
one-line answers ("You can ask for a meeting with your manager to discuss your concerns.") that the labelers' rubric
scores lower. ODIN (Chen et al. 2024, "Disentangled Reward Mitigates Hacking in RLHF") trains a length head beside
the quality head, keeps the quality head's scores uncorrelated with length, and gives RL the quality head alone.
This is its linear form, in two loss terms:
- every pair's score difference gets w * (tokens of chosen - tokens of rejected) / 10, w one learned scalar, so
  the preference that length explains is fitted by w;
- `length_decorrelation` times |cosine| between the head's score differences and the length differences over the
  batch's pairs, so the head does not rank by length itself (without it the head learns length as fast as w does);
  while the head's scores are small, `length_decorrelation_floor` makes it the length-aligned part of the
  differences instead (see `head_length_correlation`).
The saved adapter is the head alone. Both answers of a pair follow the same prompt, so the difference of whole
sequences is the difference of answers. TRL's RewardTrainer and OpenRLHF have no such option.

w has its own learning rate (a scalar that must reach ~1 in a few dozen steps, where LoRA's rate is 1e-4..1e-3), is
saved in every checkpoint (`length_term.json`) and restored on resume, and is logged as `length_weight`; the
batch's head-length correlation as `head_length_correlation`.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import UserError

FILE = "length_term.json"
TOKENS_PER_UNIT = 10.0


def length_differences(attention_mask, pair_index):
    """Tokens of chosen minus tokens of rejected, per [chosen, rejected] row of `pair_index`."""
    lengths = attention_mask.sum(-1).float()
    return lengths[pair_index[:, 0]] - lengths[pair_index[:, 1]]


class LengthTermMixin:
    """For a TRL `RewardTrainer` subclass: `length_term_learning_rate` set adds the learned length term to the
    training loss (see the module). `pair_length_term(attention_mask, pair_index)` is what the loss adds.

    w is not a parameter of the model, so the Trainer's `model.zero_grad()` does not reach it and DDP does not
    average its gradient: a callback averages it over processes before each optimizer step and clears it after.
    DeepSpeed builds its own optimizer from the model and skips `_load_from_checkpoint`: refused there."""

    def __init__(
        self,
        *args,
        length_term_learning_rate: float | None = None,
        length_decorrelation=1.0,
        length_decorrelation_floor=1.0,
        **kwargs,
    ):
        import torch

        self.length_term_learning_rate = length_term_learning_rate
        self.length_decorrelation = length_decorrelation
        self.length_decorrelation_floor = length_decorrelation_floor
        self.length_weight = torch.nn.Parameter(torch.zeros(())) if length_term_learning_rate else None
        super().__init__(*args, **kwargs)
        if self.length_weight is not None:
            if self.is_deepspeed_enabled:
                raise UserError("length_term: not supported under DeepSpeed; use DDP or FSDP, or length_term: false")
            self.add_callback(_length_weight_step(self))

    def pair_length_term(self, attention_mask, pair_index):
        """w * (length of chosen - length of rejected) / 10 for each [chosen, rejected] row of `pair_index`."""
        weight = self.length_weight.to(attention_mask.device)
        return weight * length_differences(attention_mask, pair_index) / TOKENS_PER_UNIT

    def head_length_correlation(self, head_differences, attention_mask, pair_index):
        """(decorrelation loss, |cosine|) between the head's score differences and the length differences over the
        batch's pairs (ODIN's decorrelation; uncentred, so a pair's orientation does not matter); 0 when no pair
        differs in length.

        The loss is the |cosine| with the head's norm floored at `length_decorrelation_floor` * sqrt(pairs): a
        cosine alone is blind to scale, so its gradient grows as 1 / |head differences|, and a fresh head's small
        scores (an RMS difference ~0.3) get a push in a new direction every batch that outweighs the ranking loss;
        on the quickstart it kept some heads from learning at all in 40 steps (held-out mean margin 0.01). Below
        the floor the loss is the length-aligned part of the differences in reward units, whose gradient stays
        bounded; above it, the cosine."""
        import torch

        lengths = length_differences(attention_mask, pair_index)
        norm = head_differences.norm()
        if norm.item() == 0 or lengths.norm().item() == 0:
            zero = head_differences.sum() * 0.0
            return zero, zero.detach()
        aligned = torch.abs((head_differences * lengths).sum()) / lengths.norm()
        floor = self.length_decorrelation_floor * len(head_differences) ** 0.5
        return aligned / torch.clamp(norm, min=floor), (aligned / norm).detach()

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.length_weight is not None and not any(
            p is self.length_weight for group in optimizer.param_groups for p in group["params"]
        ):
            self.length_weight.data = self.length_weight.data.to(self.accelerator.device)  # the same Parameter
            group = {"params": [self.length_weight], "lr": self.length_term_learning_rate, "weight_decay": 0.0}
            optimizer.add_param_group(group)
        return optimizer

    def save_model(self, output_dir=None, _internal_call=False):
        super().save_model(output_dir, _internal_call)
        if self.length_weight is not None and self.args.should_save:
            folder = Path(output_dir or self.args.output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / FILE).write_text(json.dumps({"length_weight": self.length_weight.item()}))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = Path(resume_from_checkpoint) / FILE
        if (self.length_weight is not None) != saved.exists():
            found = "has no length term" if self.length_weight is not None else "was trained with a length term"
            raise UserError(
                f"length_term: {resume_from_checkpoint} {found}; resume with the setting it was trained with, or "
                "start again with --overwrite"
            )
        if self.length_weight is not None:
            self.length_weight.data.fill_(json.loads(saved.read_text())["length_weight"])

    def final_length_weight(self) -> float | None:
        """w as it goes with the saved head: the best checkpoint's with load_best_model_at_end, else the last."""
        if self.length_weight is None:
            return None
        best = self.state.best_model_checkpoint if self.args.load_best_model_at_end else None
        if best and (Path(best) / FILE).exists():
            return json.loads((Path(best) / FILE).read_text())["length_weight"]
        return self.length_weight.item()

    def log(self, logs, *args, **kwargs):
        if self.length_weight is not None:
            logs["length_weight"] = self.length_weight.item()  # in place: TRL adds its metrics to this same dict
        return super().log(logs, *args, **kwargs)


def _length_weight_step(trainer):
    """The callback that steps w like a model parameter: its gradient averaged over processes before the optimizer
    step (DDP does this for the model's), cleared after it (the Trainer's model.zero_grad() does for the model's)."""
    from transformers import TrainerCallback

    class LengthWeightStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            weight = trainer.length_weight
            processes = trainer.accelerator.num_processes
            if processes > 1 and weight.grad is not None:
                import torch.distributed as dist

                dist.all_reduce(weight.grad, op=dist.ReduceOp.SUM)  # gloo has no AVG
                weight.grad /= processes

        def on_optimizer_step(self, args, state, control, **kwargs):
            trainer.length_weight.grad = None

    return LengthWeightStep()
