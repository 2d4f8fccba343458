"""The reward head's Laplace posterior (workbench/modeling/reward_uncertainty.py): the closed form by hand, the same
spread as sampled heads, answers like the labeled ones trusted more, and RL's pessimistic score on the single base."""

from __future__ import annotations

import math
import shutil

import pytest
import torch
from model_args import margs, quant
from test_single_base import PROMPTS, RESPONSES

from workbench.errors import UserError
from workbench.modeling import reward_uncertainty
from workbench.modeling.reward_uncertainty import PessimisticHead, fit, training_answers, uncertainty


def test_the_posterior_is_the_inverse_curvature_of_the_pairwise_loss_by_hand():
    # two answers, one pair, an untrained head (w = 0): s = 1/2, s(1 - s) = 1/4, d = f_c - f_r = [2, 0]
    features = torch.tensor([[2.0, 1.0], [0.0, 1.0]])
    posterior = fit(features, torch.tensor([[0, 1]]), torch.zeros(2), prior_precision=1.0)
    # H = I + 1/4 [2, 0][2, 0]^T = diag(2, 1); the mean of the labeled answers is [1, 1]
    torch.testing.assert_close(posterior["covariance"], torch.tensor([[0.5, 0.0], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(posterior["mean"], torch.tensor([1.0, 1.0], dtype=torch.float64))
    # u([3, 1]) = sqrt(2 * 0.5 * 2) = sqrt(2); u([1, 4]) = sqrt(3 * 1 * 3) = 3: the unranked direction is less sure
    spread = uncertainty(torch.tensor([[3.0, 1.0], [1.0, 4.0], [1.0, 1.0]]), **posterior)
    torch.testing.assert_close(spread, torch.tensor([math.sqrt(2.0), 3.0, 0.0], dtype=torch.float64))
    # a trained head that already separates the pair (w . d = 4) is less curved there: s(1 - s) = 0.0177
    sure = fit(features, torch.tensor([[0, 1]]), torch.tensor([2.0, 0.0]), prior_precision=1.0)
    s = torch.sigmoid(torch.tensor(4.0, dtype=torch.float64))
    assert sure["covariance"][0, 0].item() == pytest.approx(1 / (1 + s * (1 - s) * 4), rel=1e-12)
    with pytest.raises(ValueError, match="prior_precision"):
        fit(features, torch.tensor([[0, 1]]), torch.zeros(2), prior_precision=0.0)


def test_u_is_the_spread_of_the_score_over_heads_drawn_from_the_posterior():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(40, 6, generator=generator, dtype=torch.float64)
    pairs = torch.randint(0, 40, (60, 2), generator=generator)
    weight = torch.randn(6, generator=generator, dtype=torch.float64)
    posterior = fit(features, pairs, weight, prior_precision=2.0)
    heads = torch.distributions.MultivariateNormal(weight, covariance_matrix=posterior["covariance"])
    drawn = heads.sample((200_000,))  # [draws, 6]
    answers = torch.randn(5, 6, generator=generator, dtype=torch.float64) * 3
    sampled = ((answers - posterior["mean"]) @ drawn.T).std(dim=1)  # score minus the average labeled answer's
    torch.testing.assert_close(uncertainty(answers, **posterior), sampled, rtol=0.01, atol=0)


def test_answers_like_the_ranked_ones_are_surer_than_answers_unlike_them():
    """Rankings constrain the head along the directions their answers differ in: the more pairs differ along a
    direction, the smaller u there; a direction no pair varies keeps the prior's spread."""
    generator = torch.Generator().manual_seed(1)
    features = torch.zeros(200, 3, dtype=torch.float64)
    features[:, 0] = torch.randn(200, generator=generator, dtype=torch.float64)  # answers differ along x only
    pairs = torch.arange(200).reshape(100, 2)
    few, many = (fit(features[: 2 * n], pairs[:n], torch.zeros(3), 1.0) for n in (5, 100))
    along_x, along_z = torch.tensor([[3.0, 0.0, 0.0]]), torch.tensor([[0.0, 0.0, 3.0]])
    assert uncertainty(along_x, **many) < uncertainty(along_x, **few) < uncertainty(along_z, **few)
    assert uncertainty(along_z, **many).item() == pytest.approx(3.0, abs=0.02)  # 3 / sqrt(prior precision)


def test_the_pessimistic_head_scores_the_head_minus_coef_times_u_and_hands_u_to_the_trainer():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(12, 4, generator=generator)
    head = torch.nn.Linear(4, 1, bias=False)
    posterior = fit(features, torch.tensor([[0, 1], [2, 3], [4, 5]]), head.weight.detach()[0], 1.0)
    pessimistic = PessimisticHead(head, posterior, coef=0.5)
    assert pessimistic.weight is head.weight
    with torch.no_grad():
        scores = pessimistic(features[:3]).squeeze(-1)
        more = pessimistic(features[3:5])
    spread = uncertainty(features.double(), **posterior).float()
    torch.testing.assert_close(scores, head(features[:3]).squeeze(-1).detach() - 0.5 * spread[:3])
    assert more.shape == (2, 1)
    torch.testing.assert_close(pessimistic.take(), spread[:5])
    assert pessimistic.take() is None  # taken once


def test_ranking_groups_and_plain_pairs_give_the_same_answers_and_pairs():
    import datasets

    from workbench.modeling.ranking_batches import ranking_groups

    a, b, c, d = [1, 2], [1, 3], [1, 4, 5], [7]
    plain = datasets.Dataset.from_dict({"chosen_ids": [a, a, b, d], "rejected_ids": [b, c, c, a]})
    sequences, pairs = training_answers(plain)
    assert sequences == [a, b, c, d] and pairs.tolist() == [[0, 1], [0, 2], [1, 2], [3, 0]]
    grouped_sequences, grouped_pairs = training_answers(ranking_groups(plain))
    named = {tuple(s): i for i, s in enumerate(sequences)}
    as_plain = [[named[tuple(grouped_sequences[i])] for i in pair] for pair in grouped_pairs.tolist()]
    assert sorted(as_plain) == sorted(pairs.tolist()) and sorted(map(tuple, grouped_sequences)) == sorted(
        map(tuple, sequences)
    )


@pytest.fixture(scope="module")
def posterior_adapters(tiny_model_path, tmp_path_factory):
    """The single-base test's random SFT and reward adapters, the reward one with a posterior fitted on its own
    features of a few answers."""
    from test_single_base import make_adapters

    from workbench.modeling.reward_model import final_features, load_reward_model
    from workbench.modeling.tokens import reward_input_ids

    sft_dir, reward_dir = make_adapters(tiny_model_path, tmp_path_factory.mktemp("uncertain"))
    model, tokenizer, _ = load_reward_model(reward_dir)
    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    features = final_features(model, sequences, tokenizer.pad_token_id)
    weight = model.get_base_model().score.weight.detach()[0]
    posterior = fit(features, torch.tensor([[0, 1], [1, 2]]), weight, prior_precision=0.5)
    reward_uncertainty.save(reward_dir, posterior, 0.5, pairs=2)
    return sft_dir, reward_dir, posterior


def test_rl_scores_answers_with_the_pessimistic_head_on_the_single_base(posterior_adapters, tiny_model_path):
    """`reward_scores` on a single base loaded with reward_uncertainty_coef: the reward stage model's score minus
    coef times u of its final features, for answers that share their prompt's tokens and answers that do not."""
    from workbench.modeling import loading
    from workbench.modeling.reward_model import final_features, load_reward_model, score_sequences
    from workbench.modeling.single_base import REWARD, load_single_base, reward_scores
    from workbench.modeling.tokens import reward_input_ids

    sft_dir, reward_dir, posterior = posterior_adapters
    tokenizer = loading.load_tokenizer(str(tiny_model_path))
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2]]
    answers = [RESPONSES[0], RESPONSES[1], "Ask someone else.", RESPONSES[2]]
    stage_model, _, _ = load_reward_model(reward_dir)
    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(prompts, answers)]
    plain = torch.tensor(score_sequences(stage_model, sequences, tokenizer.pad_token_id))
    spread = uncertainty(final_features(stage_model, sequences, tokenizer.pad_token_id).double(), **posterior)
    assert spread.min() > 0.01 and plain.std() > 0.01
    model = load_single_base(
        margs(tiny_model_path, quant(dtype="float32")),  # the adapters' own precision, as the reward model loads
        sft_adapter=sft_dir,
        reward_adapter=reward_dir,
        reward_uncertainty_coef=0.5,
    )
    model.eval()
    with torch.no_grad():
        shared = reward_scores(model, tokenizer, prompts, answers, "cpu")  # prompt 0's answers share its tokens
        alone = reward_scores(model, tokenizer, prompts[1:], answers[1:], "cpu")  # every row whole
    expected = plain - 0.5 * spread.float()
    torch.testing.assert_close(shared, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(alone, expected[1:], atol=1e-4, rtol=0)
    torch.testing.assert_close(model.workbench_heads[REWARD].take(), torch.cat([spread, spread[1:]]).float())


def test_a_reward_adapter_without_a_posterior_is_refused_by_name(posterior_adapters, tmp_path):
    _, reward_dir, _ = posterior_adapters
    bare = shutil.copytree(reward_dir, tmp_path / "bare")
    (bare / reward_uncertainty.FILE).unlink()
    with pytest.raises(UserError, match=r"reward_uncertainty\.safetensors: expected the reward head's posterior"):
        reward_uncertainty.load(bare)
