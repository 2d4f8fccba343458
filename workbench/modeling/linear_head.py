"""The reward head fitted alone on the frozen model's features: linear probing before (or instead of) fine-tuning.

A small reward model trained end to end for a few dozen steps on a few hundred ranked pairs learns its head from noisy
gradients, and its LoRA moves the features under it at the same time. Fitting the head first as a convex problem, the
training pairs' Bradley-Terry likelihood over the frozen features with an L2 penalty, gives the head a solution
instead of a start (LP-FT: Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features"; ArmoRM, Wang et al.
2024, fits its reward heads on a frozen backbone's last-token features). Fine-tuning follows (the stage's max_steps)
unless `train_after_head_fit: false`.

The fit: x = (features of chosen - features of rejected) / s, s each feature's standard deviation over the training
pairs' differences; minimise mean softplus(-(x . w + v * length difference)) + l2 * |w|^2 with torch's L-BFGS; the
head is w / s. With the reward stage's length term (workbench/modeling/length_term.py), v is its weight and is not
penalised, so the preference that length explains goes to v and not to the head. TRL's RewardTrainer has no such
step (it trains by SGD steps from a random head).
"""

from __future__ import annotations

import torch

from workbench.modeling.length_term import TOKENS_PER_UNIT


def fit(
    features: torch.Tensor, pairs: torch.Tensor, l2: float, lengths: torch.Tensor | None = None, max_iter: int = 500
) -> dict:
    """The head [d] (and the length weight, with `lengths`) that orders `pairs` (rows [chosen, rejected] of indices
    into `features` [n, d]) under an L2 penalty `l2` on the standardised weights; also the standardisation `scale`
    [d] and the fit's training accuracy."""
    if not l2 > 0:
        raise ValueError(f"l2 must be > 0; got {l2}")
    features = features.double()
    differences = features[pairs[:, 0]] - features[pairs[:, 1]]
    scale = differences.std(dim=0).clamp_min(1e-6) if len(differences) > 1 else torch.ones(features.shape[1])
    x = differences / scale
    length = None
    if lengths is not None:
        length = (lengths[pairs[:, 0]] - lengths[pairs[:, 1]]).double() / TOKENS_PER_UNIT
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    v = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, v], max_iter=max_iter, line_search_fn="strong_wolfe")

    def margins():
        return x @ w + (v * length if length is not None else 0.0)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.softplus(-margins()).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        accuracy = (margins() > 0).double().mean().item() if len(x) else None
    return {
        "weight": (w.detach() / scale).float(),
        "scale": scale,  # s: the fit's coordinates are the differences / s, its weights w = weight * s
        "length_weight": v.item() if length is not None else None,
        "train_accuracy": accuracy,
        "pairs": len(x),
    }


def fit_reward_head(trainer, l2: float) -> dict:
    """Fit the reward trainer's score head (and its length term's weight, if it has one) on its training pairs, the
    model's current features (the LoRA as it starts: a fresh LoRA changes nothing). Returns the fit's summary."""
    from workbench.modeling import reward_uncertainty
    from workbench.modeling.reward_model import final_features

    sequences, pairs = reward_uncertainty.training_answers(trainer.train_dataset)
    model = trainer.accelerator.unwrap_model(trainer.model)
    pad = trainer.processing_class.pad_token_id
    features = final_features(model, sequences, pad, trainer.args.per_device_eval_batch_size)
    with_length = getattr(trainer, "length_weight", None) is not None
    lengths = torch.tensor([len(sequence) for sequence in sequences]) if with_length else None
    result = fit(features, pairs, l2, lengths)
    # the trained copy: PEFT's modules_to_save wrapper keeps `score.modules_to_save.default` beside a frozen original
    heads = [p for name, p in model.named_parameters() if p.requires_grad and ".score." in f".{name}"]
    if len(heads) != 1:
        raise RuntimeError(f"expected one trainable score head to fit; found {len(heads)}")
    with torch.no_grad():
        heads[0].copy_(result["weight"].reshape(heads[0].shape).to(heads[0].dtype))
        if with_length:
            trainer.length_weight.fill_(result["length_weight"])
    print(
        f"workbench reward: head fitted on {result['pairs']} pairs over {len(sequences)} answers "
        f"(training accuracy {result['train_accuracy']:.3f})"
    )
    return {"linear_head_pairs": result["pairs"], "linear_head_train_accuracy": result["train_accuracy"]}
