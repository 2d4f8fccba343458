"""Which prompts reach the labelers: active selection over a pool of candidates (pure Python, no torch).

Human rankings are the scarce resource, so `label push --select N --strategy S` fills a dataset's round with N prompts
of a candidates pool: those already in the round count, the rest are the ones the strategy ranks first among the
others (so a repeated push adds nothing, and a larger N after the next reward model grows the round):

  random       a seeded shuffle, the baseline every other strategy is measured against;
  uncertainty  the prompts whose candidates the reward model is least sure how to order (uncertainty sampling): the
               mean over candidate pairs of the binary entropy, in bits, of P(i better than j) = sigmoid(r_i - r_j),
               the Bradley-Terry probability the reward model is trained on. With several reward models' scores (an
               ensemble, `reward score --adapter A --adapter B`), P is the members' mean, so their disagreement
               counts as well (the total predictive entropy). Needs scores; the highest first;
  diversity    the prompts whose candidates differ most in wording: the mean over candidate pairs of the word-level
               distance 1 - difflib ratio. Small reward models gain most from dissimilar pairs (Shen et al. 2024).
               Needs no reward model, so a first round can use it;
  spread       the prompts whose candidates the reward model tells apart most: the mean over candidate pairs of
               |r_i - r_j| (the members' mean scores), in reward units. The opposite bet to uncertainty: answers far
               apart in quality are ranked alike by every labeler, so with `min_agreement` more of a ranking's pairs
               survive as training pairs, and they are the dissimilar pairs small reward models learn from (the
               large-difference pairs ActiveUltraFeedback's delta-based selection picks). Needs scores. Measured
               level with random at every budget (bench/results/active_labeling-spread-cpu-2core.json).

Both numbers go on every pushed record as metadata (`uncertainty` when scores are given, `diversity` always), so a
labeler can sort or filter the queue by them in the Argilla UI. `bench/active_labeling.py` measures the strategies
(the reward model's agreement with the gold rubric against the number of labels).
"""

from __future__ import annotations

import difflib
import math
import random
from itertools import combinations

from workbench.errors import UserError

STRATEGIES = ("random", "uncertainty", "diversity", "spread")
SCORED = ("uncertainty", "spread")  # the strategies that choose by reward-model scores


def _binary_entropy_bits(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def ranking_uncertainty(member_scores: list[list[float]]) -> float:
    """Mean over candidate pairs of H(mean over members of sigmoid(r_i - r_j)), in bits: 0 = sure, 1 = a coin."""
    k = len(member_scores[0])
    pairs = list(combinations(range(k), 2))
    total = 0.0
    for i, j in pairs:
        p = sum(_sigmoid(scores[i] - scores[j]) for scores in member_scores) / len(member_scores)
        total += _binary_entropy_bits(p)
    return total / len(pairs)


def ranking_spread(member_scores: list[list[float]]) -> float:
    """Mean over candidate pairs of |m_i - m_j|, m the members' mean score of each candidate (reward units)."""
    k = len(member_scores[0])
    mean = [sum(scores[i] for scores in member_scores) / len(member_scores) for i in range(k)]
    pairs = list(combinations(range(k), 2))
    return sum(abs(mean[i] - mean[j]) for i, j in pairs) / len(pairs)


def candidate_diversity(completions: list[str]) -> float:
    """Mean over candidate pairs of 1 - difflib's similarity ratio of their words: 0 = identical, 1 = disjoint."""
    words = [text.split() for text in completions]
    pairs = list(combinations(range(len(words)), 2))
    distances = [1.0 - difflib.SequenceMatcher(None, words[i], words[j], autojunk=False).ratio() for i, j in pairs]
    return sum(distances) / len(distances)


def selection_metadata(row: dict, member_scores: list[list[float]] | None) -> dict:
    """The numbers a record carries as metadata: `diversity`, and `uncertainty` when a reward model scored it."""
    metadata = {"diversity": round(candidate_diversity(row["completions"]), 6)}
    if member_scores is not None:
        metadata["uncertainty"] = round(ranking_uncertainty(member_scores), 6)
    return metadata


def select(
    rows: list[dict],
    strategy: str,
    n: int,
    seed: int = 0,
    member_scores: dict[str, list[list[float]]] | None = None,
) -> list[dict]:
    """The n rows a strategy sends first, most informative first (ties in a seeded random order)."""
    if strategy not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if n < 1:
        raise UserError(f"--select must be at least 1; got {n}")
    rng = random.Random(f"select/{seed}")
    order = rows[:]
    rng.shuffle(order)  # random's order, and the tie-break of the others
    if strategy in SCORED:
        if member_scores is None:
            raise UserError(f"--strategy {strategy} needs reward-model scores (--suggestions from `reward score`)")
        missing = [row["prompt_id"] for row in order if row["prompt_id"] not in member_scores]
        if missing:
            raise UserError(
                f"--strategy {strategy}: {len(missing)} candidate prompt(s) have no reward-model scores "
                f"(first: {missing[0]!r}); score the whole candidates file"
            )
        measure = ranking_uncertainty if strategy == "uncertainty" else ranking_spread
        order.sort(key=lambda row: -measure(member_scores[row["prompt_id"]]))
    elif strategy == "diversity":
        order.sort(key=lambda row: -candidate_diversity(row["completions"]))
    return order[:n]
