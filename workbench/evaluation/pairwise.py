"""Held-out pairwise metrics of a reward model: accuracy (with its standard error), mean margin and calibration.

The reward stage reports them on its held-out pairs (`evaluate_pairs`), `workbench reward score` on any preference
rows (`pairwise_metrics` over score differences).
"""

from __future__ import annotations

import math


def pairwise_metrics(margins: list[float], bins: int = 10) -> dict:
    """Accuracy, mean margin and calibration of pairwise preferences from margins (score_chosen - score_rejected).

    The model's P(chosen preferred) is sigmoid(margin). It predicts the higher-scored answer with confidence
    sigmoid(|margin|) in [0.5, 1]; pairs are binned by that confidence and each bin reports how often the prediction
    was right. The expected calibration error is the pair-weighted mean gap between confidence and accuracy.
    `accuracy_stderr` is the binomial standard error; pairs sharing a prompt are correlated, so it is a lower bound.
    """
    if not margins:
        return {"pairs": 0}
    n = len(margins)
    correct = [m > 0 for m in margins]  # a tie counts as wrong, as in TRL's accuracy
    confidence = [1 / (1 + math.exp(-abs(m))) for m in margins]
    table, ece = [], 0.0
    for b in range(bins):
        lower, upper = 0.5 + 0.5 * b / bins, 0.5 + 0.5 * (b + 1) / bins
        members = [i for i, c in enumerate(confidence) if lower <= c < upper or (b == bins - 1 and c >= upper)]
        if not members:
            table.append({"lower": lower, "upper": upper, "pairs": 0, "confidence": None, "accuracy": None})
            continue
        mean_conf = sum(confidence[i] for i in members) / len(members)
        accuracy = sum(correct[i] for i in members) / len(members)
        ece += len(members) / n * abs(accuracy - mean_conf)
        table.append(
            {"lower": lower, "upper": upper, "pairs": len(members), "confidence": mean_conf, "accuracy": accuracy}
        )
    overall = sum(correct) / n
    return {
        "pairs": n,
        "accuracy": overall,
        "accuracy_stderr": math.sqrt(overall * (1 - overall) / n),
        "mean_margin": sum(margins) / n,
        "mean_confidence": sum(confidence) / n,
        "ece": ece,
        "calibration": table,
    }


def evaluate_pairs(trainer, dataset, bins: int) -> dict:
    """Pairwise accuracy, mean margin and calibration of the trainer's model on a tokenized preference dataset.

    Each distinct answer is scored once, and the answers of pairs that share a prefix (their prompt) run it once
    (`score_sequences` with groups): the scores the model gives each pair's two sequences run whole."""
    from workbench.modeling.reward_model import score_sequences
    from workbench.modeling.reward_uncertainty import training_answers
    from workbench.modeling.shared_prefix import common_prefix_length

    sequences, pairs = training_answers(dataset)
    pairs = pairs.tolist()
    groups: list = [None] * len(sequences)
    for chosen, rejected in pairs:  # an answer joins the group of the first pair it is in: the tokens they share
        shared = tuple(sequences[chosen][: common_prefix_length([sequences[chosen], sequences[rejected]])])
        for index in (chosen, rejected):
            groups[index] = shared if groups[index] is None else groups[index]
    pad = trainer.processing_class.pad_token_id
    scores = score_sequences(trainer.model, sequences, pad, trainer.args.per_device_eval_batch_size, groups)
    return pairwise_metrics([scores[chosen] - scores[rejected] for chosen, rejected in pairs], bins)


def log_metrics(run, metrics: dict) -> None:
    """Final metrics into the W&B run's summary, the calibration bins as a table."""
    if run is None:
        return
    import wandb

    run.summary.update({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
    columns = ["lower", "upper", "pairs", "confidence", "accuracy"]
    rows = [[b[c] for c in columns] for b in metrics.get("eval_calibration", [])]
    run.log({"eval/calibration": wandb.Table(columns=columns, data=rows)})
