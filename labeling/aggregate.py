"""From several annotators' rankings to preference pairs and agreement numbers. Pure functions, no I/O.

A ranking maps each option (response_1 ... response_K) to its rank as labeled: 1 is best, equal ranks are ties.

Pairs, for every two options a and b of a record ranked by annotators A (n = |A|):

- `majority`: each annotator votes for the option it ranks better (a tie is no vote). The option with more votes is
  chosen; equal votes (including "everyone tied them") give no pair.
  `margin = (votes_chosen - votes_rejected) / n * mean rank gap among the annotators who voted for chosen`.
- `borda`: each annotator gives each option one point per option ranked strictly below it and half a point per
  option tied with it; points are summed over annotators. The option with more points is chosen; equal points give no
  pair. `margin = (points_chosen - points_rejected) / n`.

With one annotator and no ties, both give every ordered pair with `margin` = the rank gap. `agreement` of a pair is
the fraction of the record's annotators who ranked chosen strictly above rejected.

Agreement: Kendall's W per record (mid-ranks, with the tie correction) and Krippendorff's alpha over the whole
dataset (ordinal; units are (record, option), values are mid-ranks; computed by the `krippendorff` package).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

Ranking = dict[str, int]
METHODS = ("majority", "borda")


@dataclass(frozen=True)
class Pair:
    chosen: str
    rejected: str
    margin: float
    agreement: float


def dense_ranks(scores: list[float], higher_is_better: bool = True) -> list[int]:
    """1-based ranks with ties sharing a rank and no gaps: [0.9, 0.2, 0.9] -> [1, 2, 1]."""
    distinct = sorted(set(scores), reverse=higher_is_better)
    position = {value: index + 1 for index, value in enumerate(distinct)}
    return [position[score] for score in scores]


def mid_ranks(ranking: Ranking) -> dict[str, float]:
    """Labeled ranks to fractional positions: tied options share the mean of the positions they occupy.

    {a: 1, b: 1, c: 2} -> {a: 1.5, b: 1.5, c: 3.0}
    """
    result, position = {}, 1
    for rank in sorted(set(ranking.values())):
        tied = [option for option, r in ranking.items() if r == rank]
        mean = position + (len(tied) - 1) / 2
        result.update({option: mean for option in tied})
        position += len(tied)
    return result


def _borda(ranking: Ranking) -> dict[str, float]:
    return {
        option: sum(1.0 if r < other else 0.5 if r == other else 0.0 for o, other in ranking.items() if o != option)
        for option, r in ranking.items()
    }


def pairs_for_record(rankings: list[Ranking], method: str = "majority") -> list[Pair]:
    """The preference pairs of one record from its annotators' rankings (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"aggregation must be one of {METHODS}; got {method!r}")
    if not rankings:
        return []
    options = sorted(set().union(*rankings), key=lambda name: (len(name), name))
    n = len(rankings)
    borda = [_borda(r) for r in rankings] if method == "borda" else []
    pairs = []
    for a, b in combinations(options, 2):
        judged = [r for r in rankings if a in r and b in r]
        for_a = [r[b] - r[a] for r in judged if r[a] < r[b]]
        for_b = [r[a] - r[b] for r in judged if r[b] < r[a]]
        if method == "majority":
            if len(for_a) == len(for_b):
                continue
            (chosen, rejected, won, lost) = (a, b, for_a, for_b) if len(for_a) > len(for_b) else (b, a, for_b, for_a)
            margin = (len(won) - len(lost)) / n * (sum(won) / len(won))
        else:
            points_a = sum(p.get(a, 0.0) for p in borda)
            points_b = sum(p.get(b, 0.0) for p in borda)
            if points_a == points_b:
                continue
            (chosen, rejected, won) = (a, b, for_a) if points_a > points_b else (b, a, for_b)
            margin = abs(points_a - points_b) / n
        pairs.append(Pair(chosen, rejected, margin, len(won) / n))
    return pairs


def kendalls_w(rankings: list[Ranking]) -> float | None:
    """Kendall's coefficient of concordance W of m annotators over the same n options, corrected for ties.

    W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), S = sum_i (R_i - mean R)^2 over options' summed mid-ranks R_i,
    T_j = sum over annotator j's tie groups of (t^3 - t). None when undefined (fewer than 2 annotators or 2 options,
    or every annotator tied everything).
    """
    m = len(rankings)
    if m < 2:
        return None
    options = set(rankings[0])
    if any(set(r) != options for r in rankings) or len(options) < 2:
        return None
    n = len(options)
    mids = [mid_ranks(r) for r in rankings]
    totals = [sum(mid[o] for mid in mids) for o in options]
    mean = sum(totals) / n
    s = sum((total - mean) ** 2 for total in totals)
    ties = 0
    for ranking in rankings:
        for rank in set(ranking.values()):
            t = sum(1 for r in ranking.values() if r == rank)
            ties += t**3 - t
    denominator = m * m * (n**3 - n) - m * ties
    return None if denominator <= 0 else 12 * s / denominator


def krippendorff_alpha(records: list[dict[str, Ranking]]) -> float | None:
    """Ordinal Krippendorff's alpha over all records: one unit per (record, option), one coder per annotator.

    `records` holds, per record, annotator -> ranking. None when no unit has two values or nothing varies.
    """
    import numpy as np

    annotators = sorted({name for record in records for name in record})
    units: list[tuple[int, str]] = []
    for index, record in enumerate(records):
        options = sorted(set().union(*record.values())) if record else []
        units.extend((index, option) for option in options)
    if len(annotators) < 2 or not units:
        return None
    matrix = np.full((len(annotators), len(units)), np.nan)
    mids = [{name: mid_ranks(r) for name, r in record.items()} for record in records]
    for row, name in enumerate(annotators):
        for column, (index, option) in enumerate(units):
            value = mids[index].get(name, {}).get(option)
            if value is not None:
                matrix[row, column] = value
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if not pairable.any() or len(np.unique(matrix[:, pairable][~np.isnan(matrix[:, pairable])])) < 2:
        return None
    import krippendorff

    return float(krippendorff.alpha(reliability_data=matrix[:, pairable], level_of_measurement="ordinal"))
