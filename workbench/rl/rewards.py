"""From generated tokens and a scalar score to the per-token rewards PPO optimises.

Follows TRL 1.12's PPOTrainer (trl/experimental/ppo/ppo_trainer.py, "Response Processing" steps 1-3 and "4. compute
rewards", plus `first_true_indices` / `truncate_response` in trl/trainer/utils.py) with two deliberate differences:

- the score lands on the response's last token (its stop token, when it has one), as in OpenRLHF's `compute_reward`
  (openrlhf/models/utils.py); TRL puts it one position after the last non-pad token, on a token the policy never
  chose whenever that position exists;
- several stop tokens are allowed (chat templates end turns with a token other than EOS).
"""

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from workbench.rl.gae import check_right_padded
from workbench.rl.masked import zero_outside_mask


class TruncatedResponses(NamedTuple):
    ids: torch.Tensor
    mask: torch.Tensor


class TokenRewards(NamedTuple):
    rewards: torch.Tensor
    kl_penalty: torch.Tensor


def first_true_indices(bools: torch.Tensor) -> torch.Tensor:
    """Index of the first true value in each row of `bools` [batch, length]; `length` for a row with none (TRL's)."""
    row_length = bools.shape[-1]
    positions = torch.arange(row_length, device=bools.device)
    # False positions are pushed past the end, so the minimum is the first true one, or row_length if none.
    candidates = torch.where(bools, positions, torch.full_like(positions, row_length))
    return candidates.min(dim=-1).values


def _as_id_tensor(stop_token_ids: int | Sequence[int], like: torch.Tensor) -> torch.Tensor:
    ids = [stop_token_ids] if isinstance(stop_token_ids, int) else list(stop_token_ids)
    return torch.tensor(ids, dtype=like.dtype, device=like.device)


def is_stop_token(response_ids: torch.Tensor, stop_token_ids: int | Sequence[int]) -> torch.Tensor:
    """[batch, tokens] bool: which tokens are one of `stop_token_ids`."""
    return torch.isin(response_ids, _as_id_tensor(stop_token_ids, response_ids))


def has_stop_token(response_ids: torch.Tensor, stop_token_ids: int | Sequence[int]) -> torch.Tensor:
    """Whether each response [batch, tokens] contains one of `stop_token_ids`: False means it hit the length limit."""
    return is_stop_token(response_ids, stop_token_ids).any(dim=-1)


def truncate_at_stop_tokens(
    response_ids: torch.Tensor, stop_token_ids: int | Sequence[int], pad_id: int
) -> TruncatedResponses:
    """Keep each response up to and including its first stop token; replace everything after with `pad_id`.

    Returns the new ids and the response mask (true on kept tokens). A response with no stop token is kept whole.
    The mask comes from the stop position, not from `ids != pad_id`, so it stays right when pad and EOS share an id.
    """
    is_stop = is_stop_token(response_ids, stop_token_ids)
    first_stop = first_true_indices(is_stop)
    positions = torch.arange(response_ids.shape[-1], device=response_ids.device)
    mask = positions.unsqueeze(0) <= first_stop.unsqueeze(-1)
    ids = torch.where(mask, response_ids, torch.full_like(response_ids, pad_id))
    return TruncatedResponses(ids, mask)


def apply_missing_eos_penalty(
    scores: torch.Tensor,
    ended: torch.Tensor,
    penalty: float | None,
    mode: Literal["subtract", "replace"] = "subtract",
) -> torch.Tensor:
    """Penalise responses that never ended (`ended` false: no stop token within the token limit).

    "subtract" is TRL's `missing_eos_penalty` (score - penalty); "replace" sets the score to -penalty, so a rambling
    response cannot outscore a finished one however good its text. `penalty=None` leaves scores unchanged.
    """
    if penalty is None:
        return scores
    if mode == "subtract":
        penalised = scores - penalty
    elif mode == "replace":
        penalised = torch.full_like(scores, -penalty)
    else:
        raise ValueError(f"unknown missing-EOS penalty mode {mode!r}; expected 'subtract' or 'replace'")
    return torch.where(ended, scores, penalised)


def apply_empty_response_penalty(scores: torch.Tensor, empty: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Set the score of every empty response to -penalty; `penalty=None` leaves scores unchanged.

    A reward model learns only the answers its labelers ranked, and candidates are sampled with `min_new_tokens`, so
    it has never seen an empty answer and may score one above the policy's average: the quickstart at 40 reward and
    24 PPO steps, pipeline seed 16, learned to answer 18 of 120 held-out prompts with nothing (reward-model score
    3.1, gold 0). DeepSpeed-Chat drops such rollouts (answers of one token or less) for the same reason; scoring
    them keeps the batch whole. It acts only on empty answers a rollout draws: at seed 16 one in 24 steps, too late
    to matter (still 18 empty), so PPO's recipes also set `empty_response_loss_coef` (the trainer's policy loss).
    """
    if penalty is None:
        return scores
    return torch.where(empty.to(scores.device), torch.full_like(scores, -penalty), scores)


def last_token_indices(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last true position in each row of a right-padded mask [batch, tokens]."""
    lengths = mask.long().sum(dim=-1)
    if (lengths == 0).any():
        raise ValueError("every response needs at least one token in the mask")
    return lengths - 1


def per_token_rewards(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> TokenRewards:
    """rewards[t] = -kl_coef * kl[t] on every response token, plus the sequence's score on its last token.

    `scores` [batch] (after any missing-EOS penalty), `kl` and `mask` [batch, tokens] (right-padded). Also returns
    the KL part alone (TRL's `non_score_reward`) for logging. Both are 0 outside the mask.
    """
    if kl.shape != mask.shape or scores.shape != kl.shape[:1]:
        raise ValueError(
            f"scores {tuple(scores.shape)} must be [batch] and kl {tuple(kl.shape)} match mask {tuple(mask.shape)}"
        )
    check_right_padded(mask)
    kl_penalty = zero_outside_mask(-kl_coef * kl, mask)
    rewards = kl_penalty.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_indices(mask)] += scores.to(rewards.dtype)
    return TokenRewards(rewards, kl_penalty)
