"""Rankings as batch elements (workbench/modeling/ranking_batches.py): the groups by hand, and the same loss and
gradients as TRL's one-row-per-pair RewardTrainer on a real 4-bit tiny model, from a third of the sequences, and
with each ranking's prompt tokens run once, from fewer tokens still."""

from __future__ import annotations

import datasets
import pytest
import torch
from model_args import lora, margs, quant

from workbench.modeling.ranking_batches import RankingCollator, ranking_groups, shared_prompt_rewards


def pairs(rows):
    return datasets.Dataset.from_dict(
        {
            "chosen_ids": [r[0] for r in rows],
            "rejected_ids": [r[1] for r in rows],
            "margin": [r[2] for r in rows],
        }
    )


def test_groups_are_the_pairs_that_share_answers_each_answer_once():
    # prompt 7: a ranking of three answers [7,1] > [7,2] > [7,3] (3 pairs); prompt 8: one pair; rows interleaved
    rows = [
        ([7, 1], [7, 2], 1.0),
        ([8, 5, 5], [8, 6], 0.5),
        ([7, 2], [7, 3], 1.0),
        ([7, 1], [7, 3], 2.0),
    ]
    groups = ranking_groups(pairs(rows))
    assert groups.to_list() == [
        {
            "sequences": [[7, 1], [7, 2], [7, 3]],
            "pair_index": [[0, 1], [1, 2], [0, 2]],
            "pair_margin": [1.0, 1.0, 2.0],
        },
        {"sequences": [[8, 5, 5], [8, 6]], "pair_index": [[0, 1]], "pair_margin": [0.5]},
    ]
    without = ranking_groups(pairs(rows).remove_columns("margin"))
    assert without.column_names == ["sequences", "pair_index"]


def test_collator_offsets_pairs_into_one_padded_batch():
    collate = RankingCollator(pad_token_id=0)
    batch = collate(
        [
            {"sequences": [[7, 1], [7, 2, 2]], "pair_index": [[1, 0]], "pair_margin": [0.5]},
            {"sequences": [[8], [9, 9], [3]], "pair_index": [[0, 1], [2, 1]], "pair_margin": [1.0, 0.0]},
        ]
    )
    assert batch["input_ids"].tolist() == [[7, 1, 0], [7, 2, 2], [8, 0, 0], [9, 9, 0], [3, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]]
    assert batch["pair_index"].tolist() == [[1, 0], [2, 3], [4, 3]]
    assert batch["pair_margin"].tolist() == [0.5, 1.0, 0.0]
    assert batch["sequence_group"].tolist() == [0, 0, 1, 1, 1]
    # held-out rows (one per pair) still get TRL's collation: chosen first, then rejected
    held_out = collate([{"chosen_ids": [1, 2], "rejected_ids": [3]}])
    assert held_out["input_ids"].tolist() == [[1, 2], [3, 0]]


@pytest.fixture(scope="module")
def trainers(tiny_model_path, tmp_path_factory):
    """The reward stage's trainer class over one real 4-bit tiny reward model: TRL's pairs, ranking groups run
    whole, and ranking groups sharing their prompt's tokens."""
    from trl import RewardConfig

    from workbench.modeling import adapters, loading
    from workbench.stages.reward import trainer_class

    tokenizer = loading.load_tokenizer(margs(tiny_model_path))
    model = loading.load_model(
        margs(tiny_model_path, quant(load_in_4bit=True, dtype="float32")),
        head="scalar",
        for_training=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = adapters.attach(model, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8))
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # LoRA B and the head start at zero or near it: make every pair count
                parameter.add_(0.05 * torch.randn_like(parameter))
    # two rankings of 4 answers (6 pairs each) and one of 2, as `label pull` writes them, margins from the ranks
    answers = {
        "What is rain?": ["Water falling from clouds.", "Rain is water.", "rain rain rain", "I like cats"],
        "Name a colour.": ["Blue is a colour.", "Blue.", "colour colour", "No."],
        "Say hi.": ["Hi there!", "hi"],
    }
    rows = []
    for prompt, ranked in answers.items():
        for i in range(len(ranked)):
            for j in range(i + 1, len(ranked)):
                rows.append(
                    {
                        "prompt": [{"role": "user", "content": prompt}],
                        "chosen": [{"role": "assistant", "content": ranked[i]}],
                        "rejected": [{"role": "assistant", "content": ranked[j]}],
                        "margin": float(j - i),
                    }
                )
    dataset = datasets.Dataset.from_list(rows)
    made = {}
    for grouped, shared in ((False, False), (True, False), (True, True)):
        config = RewardConfig(
            output_dir=str(tmp_path_factory.mktemp("rt")), report_to=[], use_cpu=True, bf16=False,
            per_device_train_batch_size=len(rows), max_length=128, dataloader_num_workers=0,
            center_rewards_coefficient=0.01,
        )  # fmt: skip
        made[grouped, shared] = trainer_class()(
            model=model,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            head_dtype=torch.float32,
            group_rankings=grouped,
            share_prompt_tokens=shared,
        )
    for parameter in model.parameters():  # TRL casts a quantized model's trainable weights to bf16: compare in fp32
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    for module in model.modules():  # LoRA dropout off: both passes must see the same network
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return made, len(rows)


def loss_and_grads(trainer):
    """The first batch's loss, every trainable gradient, the batch, and how many token positions the decoder ran."""
    model = trainer.model
    model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    model.zero_grad()
    positions = []
    embeddings = model.get_base_model().get_input_embeddings()
    hook = embeddings.register_forward_hook(lambda module, args, output: positions.append(args[0].numel()))
    try:
        loss = trainer.compute_loss(model, dict(batch))
    finally:
        hook.remove()
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, batch, sum(positions)


def test_grouped_loss_and_gradients_equal_trls_pairwise_ones(trainers):
    """All 13 pairs in one batch: TRL scores 26 sequences, the groups 10, and the loss (with margins and TRL's reward
    centring) and every trainable gradient agree."""
    made, n_pairs = trainers
    pair_loss, pair_grads, pair_batch, _ = loss_and_grads(made[False, False])
    group_loss, group_grads, group_batch, _ = loss_and_grads(made[True, False])
    assert pair_batch["input_ids"].shape[0] == 2 * n_pairs == 26
    assert group_batch["input_ids"].shape[0] == 4 + 4 + 2
    assert len(group_batch["pair_index"]) == n_pairs
    assert torch.allclose(group_loss, pair_loss, rtol=1e-5, atol=1e-6)
    assert pair_grads.keys() == group_grads.keys() and pair_grads
    for name, grad in pair_grads.items():
        assert torch.allclose(group_grads[name], grad, rtol=1e-4, atol=1e-6), name
    assert any(grad.abs().sum() > 0 for grad in pair_grads.values())


def test_shared_prompt_tokens_give_the_same_loss_and_gradients_from_fewer_positions(trainers):
    """Each of the 3 rankings runs its prompt (chat template and question) once, its KV cache copied to its 4, 4 and
    2 answers: the decoder runs fewer token positions than the 10 padded rows, and the loss and every gradient are
    those of the rows run whole (and so TRL's, by the test above)."""
    made, _ = trainers
    whole_loss, whole_grads, batch, whole_positions = loss_and_grads(made[True, False])
    shared_loss, shared_grads, _, shared_positions = loss_and_grads(made[True, True])
    assert whole_positions == batch["input_ids"].numel()
    assert shared_positions < 0.8 * whole_positions
    assert torch.allclose(shared_loss, whole_loss, rtol=1e-5, atol=1e-6)
    assert whole_grads.keys() == shared_grads.keys()
    for name, grad in whole_grads.items():
        assert torch.allclose(shared_grads[name], grad, rtol=1e-4, atol=1e-6), name


def test_rows_ending_with_the_pad_id_run_whole(trainers):
    """The model's own forward scores the last token that is not the pad id: a row ending with it is scored there,
    so the shared path steps aside (and the loss is still the rows' own)."""
    made, _ = trainers
    trainer = made[True, True]
    batch = dict(next(iter(trainer.get_train_dataloader())))
    pad = trainer.model.get_base_model().config.pad_token_id
    lengths = batch["attention_mask"].sum(dim=1)
    batch["input_ids"][0, lengths[0] - 1] = pad
    rows = batch["input_ids"], batch["attention_mask"], batch["sequence_group"]
    assert shared_prompt_rewards(trainer.model, *rows) is None
    batch["input_ids"][0, lengths[0] - 1] = 5
    assert shared_prompt_rewards(trainer.model, *rows) is not None


def test_held_out_pairs_score_each_answer_once_with_the_scores_of_whole_rows(trainers):
    """`evaluate_pairs` (the reward stage's held-out metrics) scores the 10 distinct answers of the 13 pairs, each
    ranking's prompt run once, and reports the margins of the model's own forward over each pair's two rows."""
    from workbench.evaluation.pairwise import evaluate_pairs, pairwise_metrics

    made, n_pairs = trainers
    trainer = made[False, False]
    model, dataset = trainer.model, trainer.train_dataset
    model.eval()
    with torch.no_grad():
        margins = []
        for chosen, rejected in zip(dataset["chosen_ids"], dataset["rejected_ids"]):
            rows = [torch.tensor([ids]) for ids in (chosen, rejected)]
            scores = [model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.item() for ids in rows]
            margins.append(scores[0] - scores[1])
    positions = []
    embeddings = model.get_base_model().get_input_embeddings()
    hook = embeddings.register_forward_hook(lambda module, args, output: positions.append(args[0].numel()))
    try:
        measured = evaluate_pairs(trainer, dataset, bins=4)
    finally:
        hook.remove()
    expected = pairwise_metrics(margins, bins=4)
    assert measured["pairs"] == n_pairs and measured["accuracy"] == expected["accuracy"]
    assert measured["mean_margin"] == pytest.approx(expected["mean_margin"], abs=1e-5)
    whole = sum(len(c) + len(r) for c, r in zip(dataset["chosen_ids"], dataset["rejected_ids"]))
    distinct = sum(len(s) for s in {tuple(ids) for ids in [*dataset["chosen_ids"], *dataset["rejected_ids"]]})
    assert sum(positions) < 0.8 * distinct < whole  # each answer once, each prompt's tokens once per batch
