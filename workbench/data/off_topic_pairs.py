"""Off-topic pairs for a reward model: under each prompt, its best-ranked answer over another prompt's best answer.

Labelers rank answers to one prompt against each other, and the answers a policy samples for one prompt are all
about it: the rankings rarely contrast an answer to the question with an answer to something else. A small reward
model then learns what varies within a ranking (length, endings, repetition) and little about whether an answer
addresses the question, and RL finds the gap: short generic answers that fit any prompt. An answer written for
another question is worse than any answer to this one, whoever labels, so these pairs need no label and no rule
of the gold rubric: they reuse the labelers' own answers. Both sides are answers the labelers ranked first, so the
pair differs in what it answers, not in how well it is written. (The same idea as the mismatched prompt-response
negatives of contrastive reward training; TRL and OpenRLHF have no such option.)
"""

from __future__ import annotations

import json
import random
from collections import Counter

from workbench.errors import UserError


def best_answers(dataset) -> dict[str, object]:
    """Each prompt's best-ranked answer: chosen in its pairs and never rejected, the most often chosen first (JSON
    of the prompt -> the answer). A prompt whose every chosen answer is also rejected somewhere has none."""
    chosen: dict[str, Counter] = {}
    rejected: dict[str, set] = {}
    answers: dict[str, object] = {}
    for row in dataset.select_columns(["prompt", "chosen", "rejected"]):
        key = json.dumps(row["prompt"], sort_keys=True)
        good, bad = json.dumps(row["chosen"], sort_keys=True), json.dumps(row["rejected"], sort_keys=True)
        chosen.setdefault(key, Counter())[good] += 1
        rejected.setdefault(key, set()).add(bad)
        answers[good] = row["chosen"]
    best = {}
    for key, counts in chosen.items():
        tops = [(count, answer) for answer, count in counts.items() if answer not in rejected[key]]
        if tops:
            best[key] = answers[max(tops, key=lambda top: top[0])[1]]  # max keeps the first of equal counts
    return best


def add_off_topic_pairs(dataset, seed: int, per_prompt: int = 1):
    """`dataset` plus `per_prompt` pairs per prompt that has a best answer: (prompt, its best answer, the best answer
    of the prompt 1, 2, ... `per_prompt` places on in a seeded cycle: each other prompt's answer at most once, and
    every best answer used `per_prompt` times), shuffled in. With a `margin` column the new pairs take the largest
    margin in the data (the answer to another question ranks below every answer to this one). Returns (dataset,
    added)."""
    import datasets

    if "prompt" not in dataset.column_names:
        raise UserError("off_topic_pairs: expected preference data with a `prompt` column; found none")
    best = best_answers(dataset)
    prompts = sorted(best)
    if len(prompts) < 2:
        raise UserError(f"off_topic_pairs: expected rankings of at least 2 prompts; found {len(prompts)}")
    if not 1 <= per_prompt < len(prompts):
        raise UserError(
            f"off_topic_pairs_per_prompt: expected 1 to {len(prompts) - 1} (the other prompts with a best-ranked "
            f"answer); found {per_prompt}"
        )
    random.Random(seed).shuffle(prompts)
    prompt_of = {json.dumps(row, sort_keys=True): row for row in dataset["prompt"]}
    margin = max(dataset["margin"]) if "margin" in dataset.column_names else None
    rows = []
    for i, key in enumerate(prompts):
        for offset in range(1, per_prompt + 1):
            other = best[prompts[(i + offset) % len(prompts)]]
            if other == best[key]:
                continue  # two prompts with the same best answer: no contrast to learn
            row = {"prompt": prompt_of[key], "chosen": best[key], "rejected": other}
            if margin is not None:
                row["margin"] = margin
            rows.append(row)
    columns = {name: [row[name] for row in rows] for name in dataset.column_names}
    added = datasets.Dataset.from_dict(columns, features=dataset.features)
    return datasets.concatenate_datasets([dataset, added]).shuffle(seed=seed), len(rows)
