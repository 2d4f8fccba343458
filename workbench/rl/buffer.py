"""One rollout's tensors, and how PPO walks over them in shuffled minibatches.

Shapes: queries are left-padded [batch, query_tokens] (so generation continues straight from the last prompt token);
responses and everything aligned with them are right-padded [batch, response_tokens]; scores are [batch].
Shuffling takes an explicit torch.Generator: the PPO loop saves `generator.get_state()` with its checkpoint, and a
resumed run then draws the same minibatches (TRL 1.12 used the global numpy RNG, `np.random.permutation`).
"""

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Literal

import torch

Side = Literal["left", "right"]
PadValue = float | int | bool

QUERY_FIELDS = ("query_ids", "query_mask")
RESPONSE_FIELDS = (
    "response_ids",
    "response_mask",
    "logprobs",
    "ref_logprobs",
    "values",
    "rewards",
    "advantages",
    "returns",
)
FEATURE_FIELDS = ("value_features",)  # [batch, response_tokens, hidden]: aligned with the responses, one more dim
ID_FIELDS = ("query_ids", "response_ids")


def pad_to_length(tensor: torch.Tensor, length: int, pad_value: PadValue, side: Side = "right") -> torch.Tensor:
    """Pad dimension 1 of `tensor` [batch, tokens, ...] up to `length` with `pad_value`, on the given side."""
    missing = length - tensor.shape[1]
    if missing < 0:
        raise ValueError(f"cannot pad {tensor.shape[1]} tokens down to {length}")
    if missing == 0:
        return tensor
    padding = torch.full(
        (tensor.shape[0], missing, *tensor.shape[2:]), pad_value, dtype=tensor.dtype, device=tensor.device
    )
    return torch.cat([padding, tensor] if side == "left" else [tensor, padding], dim=1)


def concat_padded(tensors: Sequence[torch.Tensor], pad_value: PadValue, side: Side = "right") -> torch.Tensor:
    """Stack batches of different token lengths along dimension 0, padding each to the longest first."""
    if not tensors:
        raise ValueError("nothing to concatenate")
    length = max(t.shape[1] for t in tensors)
    return torch.cat([pad_to_length(t, length, pad_value, side) for t in tensors], dim=0)


@dataclasses.dataclass
class RolloutBatch:
    """Everything one PPO update needs about a batch of sampled responses.

    `logprobs` are the rollout policy's (the "old" policy of the clipped loss), `ref_logprobs` the frozen reference's,
    `values` the value head's at rollout time. `rewards`, `advantages` and `returns` are filled in after scoring
    (None until then). `value_features` are the reference pass's final hidden states before each response token when
    the critic is a head on them (PPO's `value_model: ref_features`), else None.
    """

    query_ids: torch.Tensor
    query_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    scores: torch.Tensor
    rewards: torch.Tensor | None = None
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    value_features: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch_size = self.query_ids.shape[0]
        if self.query_mask.shape != self.query_ids.shape:
            raise ValueError(f"query_mask {tuple(self.query_mask.shape)} != query_ids {tuple(self.query_ids.shape)}")
        for name in RESPONSE_FIELDS + FEATURE_FIELDS:
            tensor = getattr(self, name)
            if tensor is None:
                continue
            if (tensor.shape[:2] if name in FEATURE_FIELDS else tensor.shape) != self.response_ids.shape:
                raise ValueError(f"{name} {tuple(tensor.shape)} != response_ids {tuple(self.response_ids.shape)}")
        if self.response_ids.shape[0] != batch_size or self.scores.shape != (batch_size,):
            raise ValueError(
                f"batch sizes differ: query_ids {batch_size}, response_ids {self.response_ids.shape[0]}, "
                f"scores {tuple(self.scores.shape)}"
            )

    def __len__(self) -> int:
        return self.query_ids.shape[0]

    def _tensor_fields(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    def select(self, indices: torch.Tensor) -> "RolloutBatch":
        """The rows at `indices` (1-D), in that order."""
        return dataclasses.replace(self, **{name: t[indices] for name, t in self._tensor_fields().items()})

    def to(self, device: torch.device | str) -> "RolloutBatch":
        return dataclasses.replace(self, **{name: t.to(device) for name, t in self._tensor_fields().items()})

    def minibatches(self, size: int, generator: torch.Generator) -> Iterator["RolloutBatch"]:
        """One epoch: a fresh permutation drawn from `generator`, cut into len(self) // size minibatches of `size`.

        `size` must divide the batch, as in TRL's `num_mini_batches`: equal minibatches keep every sample's weight
        the same across gradient steps. The permutation is drawn on the generator's device, then moved.
        """
        if size <= 0 or len(self) % size != 0:
            raise ValueError(f"minibatch size {size} must be positive and divide the rollout batch size {len(self)}")
        order = torch.randperm(len(self), generator=generator, device=generator.device).to(self.query_ids.device)
        for start in range(0, len(self), size):
            yield self.select(order[start : start + size])

    def trimmed(self) -> "RolloutBatch":
        """Drop query columns that are padding in every row (left) and response columns likewise (right).

        A minibatch of short responses then costs a short forward pass. Removing left padding shifts token
        positions, so the forward pass must derive position ids from the attention mask (cumsum - 1, as TRL's
        `forward` does) for log-probs to match the rollout's.
        """
        query_keep = self.query_mask.bool().any(dim=0)
        response_keep = self.response_mask.bool().any(dim=0)
        first_query_column = int(query_keep.long().argmax()) if query_keep.any() else self.query_ids.shape[1]
        response_length = int(response_keep.long().sum())
        changes = {}
        for name, tensor in self._tensor_fields().items():
            if name in QUERY_FIELDS:
                changes[name] = tensor[:, first_query_column:]
            elif name in RESPONSE_FIELDS + FEATURE_FIELDS:
                changes[name] = tensor[:, :response_length]
        return dataclasses.replace(self, **changes)

    def sequences(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Query and response side by side, for a forward pass: (input_ids, attention_mask), [batch, Q + T]."""
        input_ids = torch.cat([self.query_ids, self.response_ids], dim=1)
        attention_mask = torch.cat([self.query_mask.bool(), self.response_mask.bool()], dim=1)
        return input_ids, attention_mask

    @classmethod
    def concat(cls, batches: Sequence["RolloutBatch"], pad_token_id: int) -> "RolloutBatch":
        """One batch from several (e.g. rollout chunks of different lengths): queries padded left, responses right.

        Ids pad with `pad_token_id`, masks with False, float tensors with 0; a field must be set in all or none.
        """
        if not batches:
            raise ValueError("nothing to concatenate")
        merged: dict[str, torch.Tensor | None] = {}
        for field in dataclasses.fields(cls):
            parts = [getattr(batch, field.name) for batch in batches]
            if all(part is None for part in parts):
                merged[field.name] = None
                continue
            if any(part is None for part in parts):
                raise ValueError(f"{field.name} is set in some batches and not in others")
            if field.name == "scores":
                merged[field.name] = torch.cat(parts, dim=0)
                continue
            side: Side = "left" if field.name in QUERY_FIELDS else "right"
            pad_value = pad_token_id if field.name in ID_FIELDS else (False if parts[0].dtype == torch.bool else 0)
            merged[field.name] = concat_padded(parts, pad_value, side)
        return cls(**merged)
