"""How unsure the reward model is of an answer's score: a Laplace posterior over its head, and the pessimistic
score RL can optimise with it.

The reward stage trains a linear head w on final hidden states f with the pairwise loss -log sigmoid(w . (f_c - f_r)).
Around the trained w the loss's curvature is

    H = prior_precision * I + sum over training pairs of s(1 - s) d d^T,   d = f_c - f_r,  s = sigmoid(w . d),

and the head's posterior is N(w, H^-1) (a last-layer Laplace approximation: Daxberger et al. 2021, "Laplace Redux";
for reward models, Yang et al. 2024, "Bayesian Reward Models for LLM Alignment"). An answer's score relative to the
average labeled answer (features `mean`) then has standard deviation

    u(f) = sqrt((f - mean)^T H^-1 (f - mean)):

small for answers like the ones the labelers ranked (their differences pinned the head down along those
directions), large for answers unlike them, along directions no ranking constrained. `PessimisticHead` scores
w . f - coef * u(f), a lower confidence bound: RL is not paid for moving where the labels say nothing, the reward
hacking a small reward model invites (at pipeline seed 21 PPO learned one-item lists, "1. Keep it quiet.", a form
2 of 245 labeled pairs show, both rejected; their u was above the SFT answers', while at seed 20, where PPO won, it
was below). Measured
on the quickstart it rescued seed 21 and lost at seeds 18 and 22 (recipes/smollm2-135m/ppo.yaml), so it is off there.

Our own code: TRL, OpenRLHF and verl have no reward-model uncertainty, and laplace-torch fits whole torch models
(our head is one vector; its posterior is the closed form above). Only the Bradley-Terry loss's curvature is used:
the reward stage's margins and length term shift the logit w . d, not the directions the pairs constrain, and are
left out of s.
"""

from __future__ import annotations

from pathlib import Path

import torch

from workbench.errors import UserError

FILE = "reward_uncertainty.safetensors"


def fit(features: torch.Tensor, pairs: torch.Tensor, weight: torch.Tensor, prior_precision: float) -> dict:
    """The head's Laplace posterior from the training answers' final hidden states `features` [n, d], the training
    pairs as rows [chosen, rejected] of indices into them [m, 2], and the trained head `weight` [d]: the labeled
    answers' mean features [d] and the posterior covariance H^-1 [d, d], in float64."""
    if not prior_precision > 0:
        raise ValueError(f"prior_precision must be > 0; got {prior_precision}")
    features = features.double()
    differences = features[pairs[:, 0]] - features[pairs[:, 1]]
    s = torch.sigmoid(differences @ weight.double().reshape(-1))
    curvature = (differences * (s * (1 - s))[:, None]).T @ differences
    precision = curvature + prior_precision * torch.eye(features.shape[1], dtype=torch.float64)
    covariance = torch.cholesky_inverse(torch.linalg.cholesky(precision))
    return {"mean": features.mean(dim=0), "covariance": covariance}


def training_answers(dataset) -> tuple[list[list[int]], torch.Tensor]:
    """The distinct token sequences of a tokenized training set and its pairs as [chosen, rejected] indices into
    them: from ranking groups (`sequences`, `pair_index`: workbench/modeling/ranking_batches.py) or from plain
    pairs (`chosen_ids`, `rejected_ids`)."""
    index_of: dict[tuple, int] = {}

    def index(ids) -> int:
        return index_of.setdefault(tuple(ids), len(index_of))

    if "sequences" in dataset.column_names:
        pairs = [
            [index(sequences[c]), index(sequences[r])]
            for sequences, pair_index in zip(dataset["sequences"], dataset["pair_index"])
            for c, r in pair_index
        ]
    else:
        pairs = [[index(c), index(r)] for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"])]
    return [list(ids) for ids in index_of], torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)


def uncertainty(features: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor) -> torch.Tensor:
    """u(f) for features [..., d]: the standard deviation of the score of f minus the average labeled answer's."""
    centred = features.to(covariance.dtype) - mean
    return ((centred @ covariance) * centred).sum(-1).clamp_min(0).sqrt()


def save(directory: str | Path, posterior: dict, prior_precision: float, pairs: int) -> Path:
    from safetensors.torch import save_file

    path = Path(directory) / FILE
    tensors = {name: posterior[name].float().contiguous() for name in ("mean", "covariance")}
    save_file(tensors, str(path), metadata={"prior_precision": str(prior_precision), "pairs": str(pairs)})
    return path


def load(adapter_dir: str | Path) -> dict:
    """The posterior the reward stage saved beside its adapter (float64), or a UserError naming what to re-run."""
    from safetensors.torch import load_file

    path = Path(adapter_dir) / FILE
    if not path.is_file():
        raise UserError(
            f"{path}: expected the reward head's posterior (reward_uncertainty_coef > 0 needs it); found no such "
            "file: re-run `workbench reward` with uncertainty_prior_precision > 0, or set reward_uncertainty_coef: 0"
        )
    return {name: tensor.double() for name, tensor in load_file(str(path)).items()}


class PessimisticHead(torch.nn.Module):
    """A reward head scoring w . f - coef * u(f) in place of w . f. `uncertainties` collects the u of every row it
    scores (a reward reads one row per answer, its last token) for the trainer's metrics (`take`)."""

    def __init__(self, head: torch.nn.Linear, posterior: dict, coef: float):
        super().__init__()
        self.head, self.coef = head, coef
        self.reads_layer = getattr(head, "reads_layer", None)  # the decoder layer it reads (heads.reading_layer)
        # float32 at least: a bf16 head's u would lose the small differences it is made of
        self.register_buffer("mean", posterior["mean"].to(torch.promote_types(head.weight.dtype, torch.float32)))
        self.register_buffer("covariance", posterior["covariance"].to(self.mean.dtype))
        self.uncertainties: list[torch.Tensor] = []

    @property
    def weight(self) -> torch.Tensor:
        return self.head.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        spread = uncertainty(hidden, self.mean, self.covariance)
        self.uncertainties.append(spread.detach().reshape(-1).float().cpu())
        return self.head(hidden) - self.coef * spread.unsqueeze(-1).to(self.head.weight.dtype)

    def take(self) -> torch.Tensor | None:
        """The u of every answer scored since the last call (None if none), and forget them."""
        taken, self.uncertainties = self.uncertainties, []
        return torch.cat(taken) if taken else None
