"""The PPO algorithm as pure torch functions: no models, no I/O. The PPO stage (workbench/stages/) wires them up.

Pipeline of one update: truncate_at_stop_tokens -> (score, logprobs, values from the models) ->
apply_missing_eos_penalty -> apply_empty_response_penalty -> per_token_kl -> per_token_rewards -> compute_gae ->
whiten(advantages) -> RolloutBatch.minibatches -> clipped_policy_loss + clipped_value_loss -> KL controller update.
"""

from workbench.rl.buffer import RolloutBatch, concat_padded, pad_to_length
from workbench.rl.gae import AdvantagesAndReturns, compute_gae, whiten
from workbench.rl.kl import AdaptiveKLController, FixedKLController, KLController, per_token_kl
from workbench.rl.losses import (
    PolicyLossOutput,
    ValueLossOutput,
    clipped_policy_loss,
    clipped_value_loss,
    entropy_from_logits,
    explained_variance,
    per_token_entropy,
)
from workbench.rl.masked import masked_mean, masked_sum, masked_var
from workbench.rl.rewards import (
    TokenRewards,
    TruncatedResponses,
    apply_empty_response_penalty,
    apply_missing_eos_penalty,
    first_true_indices,
    has_stop_token,
    last_token_indices,
    per_token_rewards,
    truncate_at_stop_tokens,
)

__all__ = [
    "AdaptiveKLController",
    "AdvantagesAndReturns",
    "FixedKLController",
    "KLController",
    "PolicyLossOutput",
    "RolloutBatch",
    "TokenRewards",
    "TruncatedResponses",
    "ValueLossOutput",
    "apply_empty_response_penalty",
    "apply_missing_eos_penalty",
    "clipped_policy_loss",
    "clipped_value_loss",
    "compute_gae",
    "concat_padded",
    "entropy_from_logits",
    "explained_variance",
    "first_true_indices",
    "has_stop_token",
    "last_token_indices",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "pad_to_length",
    "per_token_entropy",
    "per_token_kl",
    "per_token_rewards",
    "truncate_at_stop_tokens",
    "whiten",
]
