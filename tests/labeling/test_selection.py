"""Active selection (labeling/selection.py): hand-computed uncertainty, spread and diversity, and the order each
strategy sends prompts in."""

from __future__ import annotations

import math

import pytest

from labeling.selection import candidate_diversity, ranking_spread, ranking_uncertainty, select, selection_metadata
from workbench.errors import UserError


def test_uncertainty_is_the_bradley_terry_entropy_in_bits():
    assert ranking_uncertainty([[0.0, 0.0]]) == pytest.approx(1.0)  # a coin
    # sigmoid(-ln 3) = 1/4: H(1/4) = -(1/4 log2 1/4 + 3/4 log2 3/4) = 0.811278
    assert ranking_uncertainty([[0.0, math.log(3.0)]]) == pytest.approx(0.811278, abs=1e-6)
    # three candidates: the mean over the pairs (0,1), (0,2), (1,2); two equal scores and one far away
    far = ranking_uncertainty([[0.0, 40.0]])
    assert far < 1e-12
    assert ranking_uncertainty([[0.0, 0.0, 40.0]]) == pytest.approx((1.0 + far + far) / 3)


def test_an_ensemble_that_disagrees_is_uncertain_though_each_member_is_sure():
    # H(sigmoid(-2)) = H(0.119203) = 0.119203 * 3.068522 + 0.880797 * 0.183130 = 0.527065
    sure = ranking_uncertainty([[0.0, 2.0]])
    assert sure == pytest.approx(0.527065, abs=1e-6)
    assert ranking_uncertainty([[0.0, 2.0], [2.0, 0.0]]) == pytest.approx(1.0)  # mean probability 1/2
    assert ranking_uncertainty([[0.0, 2.0], [0.0, 2.0]]) == pytest.approx(sure)  # agreeing members: one member


def test_spread_is_the_mean_score_gap_between_candidates_of_the_members_mean():
    assert ranking_spread([[1.0, 1.0]]) == 0.0
    assert ranking_spread([[0.0, -2.5]]) == 2.5
    # pairs (0,1), (0,2), (1,2) of scores 0, 1, 4: gaps 1, 4, 3
    assert ranking_spread([[0.0, 1.0, 4.0]]) == pytest.approx(8.0 / 3)
    # two members that disagree: their mean scores 1, 1 tie, however far apart each member puts them
    assert ranking_spread([[0.0, 2.0], [2.0, 0.0]]) == 0.0


def test_diversity_is_the_mean_word_distance_between_candidates():
    assert candidate_diversity(["a b c", "a b c"]) == 0.0
    assert candidate_diversity(["a b", "c d"]) == 1.0
    # "a b c d" vs "a b c e": 3 matching words of 8, difflib ratio 2*3/8 = 0.75
    assert candidate_diversity(["a b c d", "a b c e"]) == pytest.approx(0.25)
    assert candidate_diversity(["a b c d", "a b c e", "a b c d"]) == pytest.approx((0.25 + 0.0 + 0.25) / 3)


ROWS = [{"prompt_id": f"p{i}", "completions": [f"w{i} x", f"w{i} y z" * (i % 3)]} for i in range(8)]


def test_strategies_send_the_most_informative_prompts_first():
    scores = {f"p{i}": [[0.0, float(i)]] for i in range(8)}  # p0's candidates tie: the most uncertain
    assert [r["prompt_id"] for r in select(ROWS, "uncertainty", 3, member_scores=scores)] == ["p0", "p1", "p2"]
    # spread: the reverse of uncertainty, the candidates the reward model tells apart most first
    assert [r["prompt_id"] for r in select(ROWS, "spread", 3, member_scores=scores)] == ["p7", "p6", "p5"]
    by_diversity = select(ROWS, "diversity", 8)
    values = [candidate_diversity(r["completions"]) for r in by_diversity]
    assert values == sorted(values, reverse=True)
    assert {r["prompt_id"] for r in select(ROWS, "diversity", 3)} == {"p0", "p3", "p6"}  # "" against "w x": 1.0


def test_random_is_a_seeded_shuffle():
    first = [r["prompt_id"] for r in select(ROWS, "random", 8, seed=1)]
    assert first == [r["prompt_id"] for r in select(ROWS, "random", 8, seed=1)]
    assert first != [r["prompt_id"] for r in select(ROWS, "random", 8, seed=2)]
    assert sorted(first) == sorted(r["prompt_id"] for r in ROWS)
    assert [r["prompt_id"] for r in select(ROWS, "random", 3, seed=1)] == first[:3]


def test_selection_metadata_and_refusals():
    row = {"prompt_id": "p", "completions": ["a b", "c d"]}
    assert selection_metadata(row, None) == {"diversity": 1.0}
    assert selection_metadata(row, [[0.0, 0.0]]) == {"diversity": 1.0, "uncertainty": 1.0}
    with pytest.raises(UserError, match="needs reward-model scores"):
        select(ROWS, "uncertainty", 2)
    with pytest.raises(UserError, match=r"1 candidate prompt\(s\) have no reward-model scores \(first: 'p7'\)"):
        select(ROWS, "uncertainty", 2, member_scores={f"p{i}": [[0.0, 1.0]] for i in range(7)})
    with pytest.raises(UserError, match="--strategy spread needs reward-model scores"):
        select(ROWS, "spread", 2)
    with pytest.raises(UserError, match="one of random, uncertainty, diversity, spread; got 'best'"):
        select(ROWS, "best", 2)
    with pytest.raises(UserError, match="at least 1; got 0"):
        select(ROWS, "random", 0)
