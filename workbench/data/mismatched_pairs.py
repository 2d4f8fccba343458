"""Mismatched-answer pairs for a reward model: a prompt's best-ranked answer over another prompt's best-ranked answer.

The labelers rank answers to one prompt against each other, so a pair never contrasts an answer that addresses the
question with one that does not: both sides are about the same thing. A small reward model trained on such pairs
learns the surface of a good answer (finished, not repetitive) and not whether it answers what was asked; on the
quickstart's held-out answers it orders the pairs that differ mainly in relevance no better than chance
(bench/results/alignment-reward-*.json, `agreement_by_part`). An answer written for another question is worse than
the answer the labelers put first for this one: a judgement every labeler shares, so these pairs cost no labels.
This is negative sampling as response-selection models use it (a random other context's response as the negative),
here with the other prompt's own top answer, so that the two sides are equally well formed and differ in relevance.

No maintained library adds such pairs to a preference dataset (TRL's RewardTrainer trains the pairs it is given), so
the workbench does, on the training side only: held-out pairs stay the labelers' own.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

from workbench.errors import UserError


def best_answers(dataset) -> dict[str, object]:
    """Each prompt's best-ranked answer: the answer that wins most of that prompt's pairs (ties: the first to win),
    keyed by the prompt's JSON. Every prompt with a pair has one, since every pair has a winner."""
    wins: dict[str, Counter] = defaultdict(Counter)
    texts: dict[tuple[str, str], object] = {}
    for prompt, chosen in zip(dataset["prompt"], dataset["chosen"]):
        key, answer = json.dumps(prompt, sort_keys=True), json.dumps(chosen, sort_keys=True)
        wins[key][answer] += 1
        texts.setdefault((key, answer), chosen)
    return {key: texts[key, counts.most_common(1)[0][0]] for key, counts in wins.items()}


def add_mismatched_pairs(dataset, per_prompt: int, seed: int, margin: float | None = None):
    """`dataset` plus `per_prompt` pairs for each prompt: (prompt, its best answer) chosen over (prompt, another
    prompt's best answer) rejected, shuffled in. The other prompts follow one seeded order, shifted by 1..per_prompt,
    so every prompt's best answer is a negative equally often and never for itself. With a `margin` column the new
    pairs get `margin` (default: the largest margin in the data: as sure as the labelers' surest pair)."""
    import datasets

    if per_prompt <= 0:
        return dataset
    if "prompt" not in dataset.column_names:
        raise UserError("mismatched_negatives: needs preference pairs with a `prompt` column; found none")
    best = best_answers(dataset)
    keys = sorted(best)
    if len(keys) <= per_prompt:
        raise UserError(
            f"mismatched_negatives: expected at most {len(keys) - 1} (one fewer than the {len(keys)} training "
            f"prompts); found {per_prompt}"
        )
    random.Random(seed).shuffle(keys)
    prompts = {json.dumps(p, sort_keys=True): p for p in dataset["prompt"]}
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for shift in range(1, per_prompt + 1):
        for i, key in enumerate(keys):
            other = keys[(i + shift) % len(keys)]
            if best[other] == best[key]:  # two prompts with the same best answer: no pair to learn from
                continue
            rows["prompt"].append(prompts[key])
            rows["chosen"].append(best[key])
            rows["rejected"].append(best[other])
    if "margin" in dataset.column_names:
        value = max(dataset["margin"]) if margin is None else margin
        rows["margin"] = [float(value)] * len(rows["prompt"])
    added = datasets.Dataset.from_dict(rows, features=dataset.select_columns(list(rows)).features)
    extra = [c for c in dataset.column_names if c not in rows]
    base = dataset.remove_columns(extra) if extra else dataset
    return datasets.concatenate_datasets([base, added]).shuffle(seed=seed)
