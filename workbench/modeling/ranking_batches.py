"""A ranking's preference pairs trained as one batch element: each distinct answer scored once, every pair's loss.

InstructGPT (Ouyang et al. 2022, section 3.5) trains its reward model on all K-choose-2 comparisons of one ranking
as a single batch element: the K answers go through the model once and each pair's loss reads two of the K scores.
One row per pair (TRL's `RewardTrainer`) scores an answer once for every pair it is in, K-1 times: for rankings of 4,
12 forward and backward passes where 4 give the same 6 pair losses. On a CPU, where the reward stage is compute
bound, that is about 3x the pairs per second. TRL has no such batching, so the reward stage keeps TRL's trainer
(optimizer, schedule, logging, checkpoints, resume) and this module swaps three things in it: the training rows
(`ranking_groups`), the collator (`RankingCollator`) and the loss (`RankingLossMixin`).

A group is every pair connected through a shared answer (the pairs of one ranking are; the sequence includes the
prompt, so answers to different prompts never meet). Held-out pairs keep TRL's one-row-per-pair form.

A group's answers also share their prompt's tokens, about two fifths of each sequence here: `shared_prompt_rewards`
runs them once per group and copies their KV cache to the group's rows (workbench/modeling/shared_prefix.py, which
does the same for scoring), so the gradient of every answer's loss flows back into one run of the prompt. Same
scores and gradients (tests/test_ranking_batches.py); no library does this in training (TRL, OpenRLHF and verl run
each sequence whole).
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP_COLUMNS = ["sequences", "pair_index", "pair_margin"]
SEQUENCE_GROUP = "sequence_group"  # the collator's batch key: which group (batch element) each sequence comes from


def ranking_groups(dataset):
    """Tokenized pairs (`chosen_ids`, `rejected_ids`, optional `margin`) as one row per group of connected pairs.

    Each row: `sequences`, the group's distinct token sequences; `pair_index`, one [chosen, rejected] pair of
    positions into `sequences` per pair, in dataset order; `pair_margin`, the pairs' margins (only when the pairs
    have a `margin` column). Rows come in the order of their first pair, so a shuffled dataset stays shuffled.
    """
    import datasets

    chosen, rejected = dataset["chosen_ids"], dataset["rejected_ids"]
    margins = dataset["margin"] if "margin" in dataset.column_names else None
    node_of: dict[tuple, int] = {}  # distinct sequence -> node; union-find over nodes
    parent: list[int] = []

    def node(ids) -> int:
        key = tuple(ids)
        if key not in node_of:
            node_of[key] = len(parent)
            parent.append(len(parent))
        return node_of[key]

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    edges = [(node(c), node(r)) for c, r in zip(chosen, rejected)]
    for a, b in edges:
        parent[root(a)] = root(b)
    sequences = list(node_of)  # position = node
    groups: dict[int, dict] = {}
    for row, (a, b) in enumerate(edges):
        group = groups.setdefault(root(a), {"members": {}, "pair_index": [], "pair_margin": []})
        members = group["members"]
        for n in (a, b):
            members.setdefault(n, len(members))
        group["pair_index"].append([members[a], members[b]])
        if margins is not None:
            group["pair_margin"].append(float(margins[row]))
    columns = {
        "sequences": [[list(sequences[n]) for n in g["members"]] for g in groups.values()],
        "pair_index": [g["pair_index"] for g in groups.values()],
    }
    if margins is not None:
        columns["pair_margin"] = [g["pair_margin"] for g in groups.values()]
    return datasets.Dataset.from_dict(columns)


@dataclass
class RankingCollator:
    """Batches of groups: every group's sequences right-padded into one batch, `pair_index` shifted to match, and
    `sequence_group`, the batch element each sequence comes from.

    Rows without `sequences` (held-out pairs) go to TRL's `DataCollatorForPreference` unchanged."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict]) -> dict:
        import torch
        from trl.trainer.reward_trainer import DataCollatorForPreference
        from trl.trainer.utils import pad

        if "sequences" not in examples[0]:
            return DataCollatorForPreference(self.pad_token_id, self.pad_to_multiple_of)(examples)
        sequences, pair_index, margins, group_of = [], [], [], []
        for index, example in enumerate(examples):
            offset = len(sequences)
            sequences += [torch.tensor(ids) for ids in example["sequences"]]
            group_of += [index] * len(example["sequences"])
            pair_index += [[offset + c, offset + r] for c, r in example["pair_index"]]
            margins += example.get("pair_margin") or []
        common = dict(padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)
        output = {
            "input_ids": pad(sequences, padding_value=self.pad_token_id, **common),
            "attention_mask": pad([torch.ones_like(ids) for ids in sequences], padding_value=0, **common),
            "pair_index": torch.tensor(pair_index, dtype=torch.long),
            SEQUENCE_GROUP: torch.tensor(group_of, dtype=torch.long),
        }
        if "pair_margin" in examples[0]:
            output["pair_margin"] = torch.tensor(margins, dtype=torch.float)
        return output


def shared_prompt_rewards(model, input_ids, attention_mask, sequence_group):
    """The sequence-classification reward model's score of each right-padded row, with the rows of one group running
    their common prefix (the prompt) once; None where that cannot give the model's own scores (then run the rows
    whole): a model wrapped for several processes, prompt learning, no `score` head, a row ending with the pad id
    (the model's forward reads the last token that is not the pad id, this path the last real one), gradient
    checkpointing, or no group of two."""
    from workbench.modeling.shared_prefix import last_hidden_states

    if not hasattr(model, "get_base_model"):
        # DDP/FSDP/DeepSpeed: their gradient synchronisation is set up by the wrapper's own forward, not called here
        return None
    inner = model.get_base_model()
    if model.active_peft_config.is_prompt_learning or not hasattr(inner, "score"):
        return None
    pad_token_id = inner.config.pad_token_id
    sequences = [row[:length].tolist() for row, length in zip(input_ids, attention_mask.sum(dim=1).tolist())]
    if any(not sequence or sequence[-1] == pad_token_id for sequence in sequences):
        return None
    last = last_hidden_states(inner.base_model, sequences, sequence_group.tolist(), pad_token_id)
    if last is None:
        return None
    return inner.score(last).squeeze(-1)  # the trainer's pre-hook gives the head its own dtype


class RankingLossMixin:
    """For a TRL `RewardTrainer` subclass: with `group_rankings=True` the training rows become ranking groups and
    the loss is TRL's pairwise loss, -log sigmoid(r_chosen - r_rejected - margin) averaged over the batch's pairs
    (plus TRL's `center_rewards_coefficient` term), read from one score per distinct answer; with
    `share_prompt_tokens=True` too, each group's prompt tokens run once (`shared_prompt_rewards`)."""

    def __init__(self, *args, group_rankings: bool = False, share_prompt_tokens: bool = False, **kwargs):
        self.group_rankings = group_rankings
        self.share_prompt_tokens = share_prompt_tokens
        if group_rankings:
            tokenizer, config = kwargs["processing_class"], kwargs["args"]
            pad_token = config.pad_token or tokenizer.pad_token or tokenizer.eos_token  # TRL's choice of pad token
            pad_token_id = tokenizer.convert_tokens_to_ids(pad_token)
            kwargs["data_collator"] = RankingCollator(pad_token_id, config.pad_to_multiple_of)
        super().__init__(*args, **kwargs)

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
        if self.group_rankings and dataset_name == "train":
            dataset = ranking_groups(dataset)
        return dataset

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        self._signature_columns = [*self._signature_columns, *GROUP_COLUMNS]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        import torch

        mode = "train" if self.model.training else "eval"
        length_term = getattr(self, "length_weight", None) is not None and mode == "train"
        if "pair_index" not in inputs and length_term:  # TRL's rows: B chosen, then B rejected; as pairs of one group
            half = inputs["input_ids"].shape[0] // 2
            positions = torch.arange(half, device=inputs["input_ids"].device)
            inputs = {**inputs, "pair_index": torch.stack([positions, positions + half], dim=1)}
            if "margin" in inputs:
                inputs["pair_margin"] = inputs["margin"]
        if "pair_index" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        pair_index, margin = inputs["pair_index"], inputs.get("pair_margin")
        rewards = outputs = None
        if self.share_prompt_tokens and SEQUENCE_GROUP in inputs and not return_outputs:
            rows = inputs["input_ids"], inputs["attention_mask"], inputs[SEQUENCE_GROUP]
            rewards = shared_prompt_rewards(model, *rows)
        if rewards is None:
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
            rewards = outputs.logits.squeeze(-1)
        chosen, rejected = rewards[pair_index[:, 0]], rewards[pair_index[:, 1]]
        difference = chosen - rejected
        # with a length term (workbench/modeling/length_term.py) the loss reads head + w * length difference
        fitted = difference
        if length_term:
            fitted = difference + self.pair_length_term(inputs["attention_mask"], pair_index)
        loss = -torch.nn.functional.logsigmoid(fitted - margin if margin is not None else fitted).mean()
        if length_term and self.length_decorrelation:
            penalty, correlation = self.head_length_correlation(difference, inputs["attention_mask"], pair_index)
            loss = loss + self.length_decorrelation * penalty
            self._metrics[mode]["head_length_correlation"].append(correlation.item())
        if self.args.center_rewards_coefficient is not None:
            loss = loss + self.args.center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)

        # the metrics TRL's compute_loss logs, over distinct answers and pairs
        if mode == "train":
            tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
            self._total_train_tokens += tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
        with torch.no_grad():
            # groups differ in size, so each process gathers its scalars (gather needs one shape on every process)
            gather = self.accelerator.gather_for_metrics
            self._metrics[mode]["min_reward"].append(gather(rewards.min().reshape(1)).min().item())
            self._metrics[mode]["mean_reward"].append(gather(rewards.mean().reshape(1)).mean().item())
            self._metrics[mode]["max_reward"].append(gather(rewards.max().reshape(1)).max().item())
            accuracy = self.accelerator.gather_for_metrics((difference > 0).float().mean()).mean().item()
            self._metrics[mode]["accuracy"].append(accuracy)
            self._metrics[mode]["margin"].append(self.accelerator.gather_for_metrics(difference.mean()).mean().item())
        return (loss, outputs) if return_outputs else loss
