"""Aggregation and agreement on two annotators who disagree, against numbers computed by hand.

Record A (no ties): x ranks r1 > r2 > r3, y ranks r2 > r1 > r3.
Record B (a tie):   x ranks r1 = r2 > r3 (ranks 1, 1, 2), y ranks r1 > r2 > r3.
"""

from __future__ import annotations

import pytest

from labeling import rubric
from labeling.aggregate import Pair, dense_ranks, kendalls_w, krippendorff_alpha, mid_ranks, pairs_for_record
from labeling.ranking_pairs import build_preferences

A = {"x": {"r1": 1, "r2": 2, "r3": 3}, "y": {"r1": 2, "r2": 1, "r3": 3}}
B = {"x": {"r1": 1, "r2": 1, "r3": 2}, "y": {"r1": 1, "r2": 2, "r3": 3}}


def test_majority_drops_split_votes_and_weighs_margin_by_net_votes():
    # A: r1 vs r2 is 1 vote each: no pair. r1 > r3 by both, gaps 2 and 1: margin 1 * 1.5.
    assert pairs_for_record(list(A.values()), "majority") == [Pair("r1", "r3", 1.5, 1.0), Pair("r2", "r3", 1.5, 1.0)]
    # B: r1 vs r2 is 1 vote (y) to 0 (x tied): margin (1 - 0) / 2 * 1 = 0.5, agreement 1/2.
    # r1 > r3: gaps 1 (x, ranks 1 and 2) and 2 (y): 1.5. r2 > r3: gaps 1 and 1: 1.0.
    assert pairs_for_record(list(B.values()), "majority") == [
        Pair("r1", "r2", 0.5, 0.5),
        Pair("r1", "r3", 1.5, 1.0),
        Pair("r2", "r3", 1.0, 1.0),
    ]


def _rest_record(name: str, rankings: dict[str, dict[str, int]]) -> dict:
    """Record B as the REST API returns it: fields, and one submitted ranking response per annotator."""
    return {
        "id": name,
        "external_id": name,
        "metadata": {"prompt_id": name},
        "fields": {"prompt": [{"role": "user", "content": "Q?"}], "r1": "one", "r2": "two", "r3": "three"},
        "responses": [
            {
                "user_id": user,
                "status": "submitted",
                "values": {"ranking": {"value": [{"value": o, "rank": r} for o, r in ranking.items()]}},
            }
            for user, ranking in rankings.items()
        ],
    }


def test_min_agreement_leaves_out_split_pairs_and_counts_them():
    records = [_rest_record("b", B)]
    everything = build_preferences(records, {"x": "x", "y": "y"})
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in everything.rows] == [
        ("one", "two"),
        ("one", "three"),
        ("two", "three"),
    ]
    unanimous = build_preferences(records, {"x": "x", "y": "y"}, min_agreement=1.0)
    # r1 > r2 had agreement 1/2 (x tied them): left out, counted; the unanimous pairs keep their margins
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"], r["margin"]) for r in unanimous.rows] == [
        ("one", "three", 1.5),
        ("two", "three", 1.0),
    ]
    assert unanimous.pairs_below_agreement == 1 and everything.pairs_below_agreement == 0
    assert unanimous.per_prompt[0]["pairs"] == 2
    assert unanimous.alpha == everything.alpha  # agreement is measured on every ranking
    with pytest.raises(ValueError, match="min_agreement"):
        build_preferences(records, {}, min_agreement=1.5)


def test_two_candidates_with_the_same_text_give_no_pair_and_are_counted():
    record = _rest_record("b", B)
    record["fields"]["r3"] = "one"  # r1 and r3 are the same answer: r1 > r3 would teach nothing
    prefs = build_preferences([record], {"x": "x", "y": "y"})
    assert [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in prefs.rows] == [
        ("one", "two"),
        ("two", "one"),
    ]
    assert prefs.pairs_identical == 1 and prefs.pairs_below_agreement == 0


def test_borda_gives_half_points_for_ties():
    # A: points r1 = 2 + 1, r2 = 1 + 2, r3 = 0: r1 and r2 tie (no pair), each beats r3 by 3 / 2 annotators.
    assert pairs_for_record(list(A.values()), "borda") == [Pair("r1", "r3", 1.5, 1.0), Pair("r2", "r3", 1.5, 1.0)]
    # B: x gives r1 = r2 = 1 + 0.5 = 1.5, r3 = 0; y gives 2, 1, 0. Sums 3.5, 2.5, 0.
    assert pairs_for_record(list(B.values()), "borda") == [
        Pair("r1", "r2", 0.5, 0.5),
        Pair("r1", "r3", 1.75, 1.0),
        Pair("r2", "r3", 1.25, 1.0),
    ]


def test_one_annotator_gives_every_pair_with_rank_gap_and_none_from_a_tie():
    for method in ("majority", "borda"):
        assert pairs_for_record([{"a": 2, "b": 1, "c": 3}], method) == [
            Pair("b", "a", 1.0, 1.0),
            Pair("a", "c", 1.0, 1.0),
            Pair("b", "c", 2.0, 1.0),
        ]
        assert pairs_for_record([{"a": 1, "b": 1}], method) == []
        assert pairs_for_record([{"a": 1, "b": 2}, {"a": 2, "b": 1}], method) == []


def test_kendalls_w_with_tie_correction():
    # A: rank sums 3, 3, 6, mean 4, S = 6; W = 12 * 6 / (4 * 24) = 0.75.
    assert kendalls_w(list(A.values())) == pytest.approx(0.75)
    # B: mid-ranks x = 1.5, 1.5, 3; sums 2.5, 3.5, 6, S = 6.5; T = 2^3 - 2 = 6; W = 78 / (96 - 12) = 13/14.
    assert kendalls_w(list(B.values())) == pytest.approx(13 / 14)
    assert kendalls_w([A["x"], A["x"]]) == pytest.approx(1.0)
    assert kendalls_w([A["x"]]) is None


def test_krippendorff_alpha_ordinal_over_both_records():
    # Units (record, option) with mid-rank values (x, y): A: (1,2) (2,1) (3,3); B: (1.5,1) (1.5,2) (3,3).
    # Coincidences: o(1,2)=o(2,1)=2, o(3,3)=4, o(1,1.5)=o(1.5,1)=o(1.5,2)=o(2,1.5)=1; n_1=3, n_1.5=2, n_2=3, n_3=4.
    # Ordinal distances d(c,k) = (sum of n_g from c to k - (n_c + n_k)/2)^2:
    # d(1,1.5)=6.25, d(1,2)=25, d(1,3)=72.25, d(1.5,2)=6.25, d(1.5,3)=36, d(2,3)=12.25.
    # Observed sum(o*d) = 2*2*25 + 4*6.25 = 125; expected sum(n_c n_k d) = 2 * 1602 = 3204.
    # alpha = 1 - (n - 1) * 125 / 3204 = 1 - 11 * 125 / 3204 = 1829 / 3204.
    assert krippendorff_alpha([A, B]) == pytest.approx(1829 / 3204)
    assert krippendorff_alpha([{"x": A["x"]}]) is None
    assert krippendorff_alpha([{"x": A["x"], "y": A["x"]}]) == pytest.approx(1.0)


def test_rank_helpers():
    assert dense_ranks([0.9, 0.2, 0.9]) == [1, 2, 1]
    assert dense_ranks([3, 1, 2], higher_is_better=False) == [3, 1, 2]
    assert mid_ranks({"a": 1, "b": 1, "c": 2}) == {"a": 1.5, "b": 1.5, "c": 3.0}


def test_rubric_prefers_a_complete_on_topic_answer():
    prompt = [{"role": "user", "content": "How often should I water my tomato plants in summer?"}]
    good = (
        "Water tomato plants deeply two or three times a week in summer, more often in very hot weather. "
        "Check the soil first: if it is dry an inch down, it is time to water."
    )
    rambling = "water water water water water water water water water water water water"
    rude = "That is a stupid question, just water your tomato plants in summer whenever."
    assert rubric.score(prompt, good) > rubric.score(prompt, rude) > rubric.score(prompt, rambling)
    assert rubric.score(prompt, "   ") == 0.0
    assert rubric.score(prompt, good) == rubric.score(prompt, good)  # deterministic
    assert set(rubric.parts(prompt, good)) == set(rubric.WEIGHTS)
