"""Pure functions behind `workbench eval`'s numbers: summaries, pairwise win rates (ties count half), how often
the reward model orders answers as the gold rubric does, and which answers loop.

No torch here: the inputs are per-prompt lists of floats, in the same prompt order for every policy (and, for
`loops`, one answer's text).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

LOOP_WORDS = 4  # an answer loops when some run of LOOP_WORDS words occurs LOOP_TIMES times or more
LOOP_TIMES = 3


def summary(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation, standard error of the mean, min, median and max."""
    n = len(values)
    if n == 0:
        return {"n": 0}
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    ordered = sorted(values)
    median = ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "sem": std / math.sqrt(n),
        "min": ordered[0],
        "median": median,
        "max": ordered[-1],
    }


def bootstrap_interval(values: Sequence[float], level: float = 0.95, resamples: int = 4000, seed: int = 0) -> list:
    """Percentile bootstrap interval of the mean of per-prompt `values` (resampling prompts with replacement).

    Paired comparisons pass one value per prompt (an outcome, or a score difference), so the interval is over prompts
    with each prompt's two answers kept together. Seeded: the same values give the same interval.
    """
    import numpy as np

    data = np.asarray(values, dtype=float)
    if len(data) < 2:
        return [None, None]
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1.0 - tail))]


def mean_difference(candidate: Sequence[float], baseline: Sequence[float]) -> dict:
    """Mean paired difference candidate - baseline over the same prompts, with its paired bootstrap 95% interval."""
    if len(candidate) != len(baseline):
        raise ValueError(f"mean_difference needs paired scores; got {len(candidate)} and {len(baseline)}")
    differences = [mine - theirs for mine, theirs in zip(candidate, baseline)]
    if not differences:
        return {"n": 0, "mean": None, "ci95": [None, None]}
    return {
        "n": len(differences),
        "mean": sum(differences) / len(differences),
        "ci95": bootstrap_interval(differences),
    }


def win_rate(candidate: Sequence[float], baseline: Sequence[float], tolerance: float = 0.0) -> dict:
    """How often `candidate` beats `baseline` on the same prompts: (wins + ties / 2) / n.

    A pair within `tolerance` of each other is a tie. `ci95` is the paired bootstrap 95% interval over prompts of the
    per-prompt outcomes (1, 0.5 or 0); `stderr` their standard error.
    """
    if len(candidate) != len(baseline):
        raise ValueError(f"win_rate needs paired scores; got {len(candidate)} and {len(baseline)}")
    outcomes = []
    for mine, theirs in zip(candidate, baseline):
        if abs(mine - theirs) <= tolerance:
            outcomes.append(0.5)
        else:
            outcomes.append(1.0 if mine > theirs else 0.0)
    n = len(outcomes)
    if n == 0:
        return {"n": 0, "rate": None, "wins": 0, "ties": 0, "losses": 0, "stderr": None, "ci95": [None, None]}
    rate = sum(outcomes) / n
    spread = math.sqrt(sum((o - rate) ** 2 for o in outcomes) / (n - 1)) if n > 1 else 0.0
    return {
        "n": n,
        "rate": rate,
        "wins": outcomes.count(1.0),
        "ties": outcomes.count(0.5),
        "losses": outcomes.count(0.0),
        "stderr": spread / math.sqrt(n),
        "ci95": bootstrap_interval(outcomes),
    }


def loops(text: str) -> bool:
    """Whether an answer is stuck in a loop: some run of LOOP_WORDS words (lower-cased runs of letters and digits)
    occurs LOOP_TIMES times or more ("I'm so glad you're here. I'm so glad you're here. I'm so glad you're here.").
    Four words, not three: a 3-word run such as "for a raise" or "is made of" comes back three times in ordinary
    answers. A measure of degenerate answers for the report, not the gold rubric's no_repetition part (there any
    repeated word 3-gram costs points)."""
    words = re.findall(r"\w+", text.lower())
    runs = Counter(zip(*(words[i:] for i in range(LOOP_WORDS))))
    return bool(runs) and max(runs.values()) >= LOOP_TIMES


def policy_metrics(rows: Sequence[dict]) -> dict:
    """One policy's headline numbers from its per-prompt rows (reward, gold, kl, kl_per_token, tokens, words), how
    many answers are empty (no words: a policy can learn to say nothing if its reward model scores that well) and how
    many loop (`loops`; rows without the flag count as not looping)."""
    out = {
        "prompts": len(rows),
        "empty": sum(1 for row in rows if row.get("words") == 0),
        "looping": sum(1 for row in rows if row.get("looping")),
    }
    for key in ("reward", "gold", "kl", "kl_per_token", "tokens", "words"):
        values = [row[key] for row in rows if row.get(key) is not None]
        if values:
            stats = summary(values)
            out[f"{key}_mean"] = stats["mean"]
            out[f"{key}_std"] = stats["std"]
    return out


def agreement_outcomes(
    samples: Sequence[dict], judge: str = "reward", gold: str = "gold", min_gap: float = 0.25
) -> list[tuple[str, float]]:
    """(prompt_id, 1.0 or 0.0) for every pair of answers to one prompt whose `gold` scores differ by at least
    `min_gap`: 1.0 when `judge` orders the pair as `gold` does (a judge tie counts as wrong). In sample order, so two
    judges of the same samples give outcomes for the same pairs."""
    return [(first["prompt_id"], agreed) for first, _, agreed in judged_pairs(samples, judge, gold, min_gap)]


def judged_pairs(samples: Sequence[dict], judge: str, gold: str, min_gap: float) -> list[tuple[dict, dict, float]]:
    """(first, second, 1.0 or 0.0) for every pair of `agreement_outcomes`, in the same order."""
    by_prompt: dict = {}
    for row in samples:
        if row.get(judge) is not None and row.get(gold) is not None:
            by_prompt.setdefault(row["prompt_id"], []).append(row)
    pairs = []
    for rows in by_prompt.values():
        for i, first in enumerate(rows):
            for second in rows[i + 1 :]:
                gold_gap = first[gold] - second[gold]
                if abs(gold_gap) >= min_gap:
                    pairs.append((first, second, 1.0 if gold_gap * (first[judge] - second[judge]) > 0 else 0.0))
    return pairs


def agreement_by_part(
    samples: Sequence[dict],
    judge: str = "reward",
    gold: str = "gold",
    parts: str = "gold_parts",
    min_gap: float = 0.25,
) -> dict:
    """`judge_agreement`'s pairs split by the rubric part that makes most of each pair's gold gap (rows carry each
    part's points under `parts`): which of the labelers' reasons the reward model has picked up (finished answers,
    length, repetition, staying on topic). {part: {pairs, agree, rate}}, parts in name order."""
    counts: dict[str, list[float]] = {}
    for first, second, agreed in judged_pairs(samples, judge, gold, min_gap):
        if first.get(parts) is None or second.get(parts) is None:
            continue
        gaps = {name: first[parts][name] - second[parts][name] for name in first[parts]}
        part = max(gaps, key=lambda name: abs(gaps[name]))
        counts.setdefault(part, [0.0, 0])
        counts[part][0] += agreed
        counts[part][1] += 1
    return {part: {"pairs": n, "agree": int(agree), "rate": agree / n} for part, (agree, n) in sorted(counts.items())}


def judge_agreement(samples: Sequence[dict], judge: str = "reward", gold: str = "gold", min_gap: float = 0.25) -> dict:
    """How often `judge` orders two answers to the same prompt as `gold` does (`agreement_outcomes`, summarised).

    This tells whether the reward model's win rates can stand in for the gold ones: a policy optimised against a judge
    that agrees with gold 60% of the time can rise by the judge and not by gold.
    """
    outcomes = [outcome for _, outcome in agreement_outcomes(samples, judge, gold, min_gap)]
    n = len(outcomes)
    if n == 0:
        return {"pairs": 0, "agree": 0, "rate": None, "stderr": None, "min_gold_gap": min_gap}
    rate = sum(outcomes) / n
    return {
        "pairs": n,
        "agree": int(sum(outcomes)),
        "rate": rate,
        "stderr": math.sqrt(rate * (1 - rate) / n),
        "min_gold_gap": min_gap,
    }


def with_length_term(samples: Sequence[dict], length_weight: float) -> list[dict]:
    """The samples with `reward` + length_weight * tokens / 10: the scores of a reward model trained with a length
    term (workbench/modeling/length_term.py) as it was fitted to the labelers, where `reward` is its head alone, the
    score RL optimises. Within a prompt only differences count, so the answer's tokens stand for the sequence's."""
    from workbench.modeling.length_term import TOKENS_PER_UNIT

    return [{**row, "reward": row["reward"] + length_weight * row["tokens"] / TOKENS_PER_UNIT} for row in samples]


JUDGES = {"reward_model": "reward", "gold_rubric": "gold"}


def compare(samples: Sequence[dict], names: Sequence[str], baseline: str, judges: Sequence[str]) -> tuple[dict, dict]:
    """Per-policy metrics and each other policy's win rate against `baseline`, per judge, from the sample rows."""
    by_policy = {name: [s for s in samples if s["policy"] == name] for name in names}
    order = [s["prompt_id"] for s in by_policy[baseline]]
    for name, rows in by_policy.items():
        if [s["prompt_id"] for s in rows] != order:
            raise ValueError(f"policy {name!r} answered other prompts than the baseline {baseline!r}")
    per_policy = {name: policy_metrics(rows) for name, rows in by_policy.items()}

    def against_baseline(rows, judge):
        mine, theirs = [s[JUDGES[judge]] for s in rows], [s[JUDGES[judge]] for s in by_policy[baseline]]
        return {**win_rate(mine, theirs), "difference": mean_difference(mine, theirs)}

    def by_part(rows) -> dict:
        """The paired gold difference split into each rubric part's points (they sum to the gold difference)."""
        if any(s.get("gold_parts") is None for s in rows + by_policy[baseline]):
            return {}
        names = rows[0]["gold_parts"] if rows else {}
        return {
            part: mean_difference(
                [s["gold_parts"][part] for s in rows], [s["gold_parts"][part] for s in by_policy[baseline]]
            )
            for part in names
        }

    win_rates = {
        name: {judge: against_baseline(rows, judge) for judge in judges}
        for name, rows in by_policy.items()
        if name != baseline
    }
    for name, judged in win_rates.items():
        if "gold_rubric" in judged and (parts := by_part(by_policy[name])):
            judged["gold_rubric"]["difference_by_part"] = parts
    return per_policy, win_rates
