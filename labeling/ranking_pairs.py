"""Argilla records (as the REST API returns them, with true ranks) to preference rows and agreement numbers.

Only submitted responses count: drafts and discarded ones are counted and ignored. Rows follow TRL's conversational
preference format, which `RewardTrainer` reads as is: `prompt` (chat messages), `chosen` and `rejected` (one
assistant message each), plus `margin`, `prompt_id`, `annotators` and `agreement` (see labeling/aggregate.py).

With `min_agreement`, a pair that fewer than that fraction of its record's annotators ranked the same way is left out
(and counted): keeping only confident pairs is the usual filter for noisy labels. Agreement numbers still use every
ranking.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from . import settings
from .aggregate import Ranking, kendalls_w, krippendorff_alpha, pairs_for_record


@dataclass
class Preferences:
    rows: list[dict] = field(default_factory=list)
    per_prompt: list[dict] = field(default_factory=list)
    responses: Counter = field(default_factory=Counter)  # status -> count (submitted, draft, discarded)
    submitted_by: Counter = field(default_factory=Counter)  # annotator -> submitted rankings
    records: int = 0
    rounds: set = field(default_factory=set)
    alpha: float | None = None
    pairs_below_agreement: int = 0
    pairs_identical: int = 0  # two candidates with the same text: ranked apart, they teach nothing

    @property
    def records_ranked(self) -> int:
        return len(self.per_prompt)

    @property
    def mean_kendalls_w(self) -> float | None:
        values = [p["kendalls_w"] for p in self.per_prompt if p["kendalls_w"] is not None]
        return sum(values) / len(values) if values else None


def ranking_of(response: dict) -> Ranking | None:
    """option -> rank from one response's ranking answer; None when it has none (or a rank is missing)."""
    items = (response.get("values") or {}).get(settings.RANKING, {}).get("value") or []
    ranking = {item["value"]: item.get("rank") for item in items}
    if not ranking or any(not isinstance(rank, int) for rank in ranking.values()):
        return None
    return ranking


def _message(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def build_preferences(
    records, usernames: dict[str, str], method: str = "majority", min_agreement: float = 0.0
) -> Preferences:
    """Aggregate every record's submitted rankings into pairs; agreement per prompt and overall."""
    if not 0.0 <= min_agreement <= 1.0:
        raise ValueError(f"min_agreement must be in [0, 1]; got {min_agreement}")
    result = Preferences()
    by_record: list[dict[str, Ranking]] = []
    for record in records:
        result.records += 1
        metadata = record.get("metadata") or {}
        if "round" in metadata:
            result.rounds.add(metadata["round"])
        rankings: dict[str, Ranking] = {}
        for response in record.get("responses") or []:
            result.responses[response["status"]] += 1
            ranking = ranking_of(response) if response["status"] == "submitted" else None
            if ranking is not None:
                name = usernames.get(str(response["user_id"]), str(response["user_id"]))
                rankings[name] = ranking
                result.submitted_by[name] += 1
        if not rankings:
            continue
        by_record.append(rankings)
        prompt_id = str(metadata.get("prompt_id") or record.get("external_id") or record["id"])
        annotators = sorted(rankings)
        pairs = pairs_for_record([rankings[name] for name in annotators], method)
        fields = record["fields"]
        distinct = [pair for pair in pairs if fields[pair.chosen] != fields[pair.rejected]]
        result.pairs_identical += len(pairs) - len(distinct)
        kept = [pair for pair in distinct if pair.agreement >= min_agreement - 1e-9]
        result.pairs_below_agreement += len(distinct) - len(kept)
        for pair in kept:
            result.rows.append(
                {
                    "prompt": [{"role": m["role"], "content": m["content"]} for m in fields[settings.PROMPT]],
                    "chosen": _message(fields[pair.chosen]),
                    "rejected": _message(fields[pair.rejected]),
                    "margin": pair.margin,
                    "prompt_id": prompt_id,
                    "annotators": annotators,
                    "agreement": pair.agreement,
                }
            )
        result.per_prompt.append(
            {
                "prompt_id": prompt_id,
                "annotators": annotators,
                "kendalls_w": kendalls_w([rankings[name] for name in annotators]),
                "pairs": len(kept),
                "rankings": {name: rankings[name] for name in annotators},
            }
        )
    result.alpha = krippendorff_alpha(by_record)
    return result
