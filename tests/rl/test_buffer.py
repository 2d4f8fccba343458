import dataclasses

import pytest
import torch

from workbench.rl import RolloutBatch, concat_padded, pad_to_length

PAD = 0


def make_batch(batch_size: int, response_length: int, first_row: int = 0) -> RolloutBatch:
    # Row i carries the number first_row + i in every field, so a shuffled minibatch can be traced back.
    rows = torch.arange(first_row, first_row + batch_size, dtype=torch.float32)
    per_token = rows[:, None].expand(batch_size, response_length).clone()
    return RolloutBatch(
        query_ids=torch.full((batch_size, 2), 7),
        query_mask=torch.ones(batch_size, 2, dtype=torch.bool),
        response_ids=per_token.long() + 10,
        response_mask=torch.ones(batch_size, response_length, dtype=torch.bool),
        logprobs=per_token.clone(),
        ref_logprobs=per_token.clone(),
        values=per_token.clone(),
        scores=rows.clone(),
    )


def test_minibatches_cover_every_row_once_and_keep_rows_together():
    batch = make_batch(6, 3)
    minibatches = list(batch.minibatches(2, torch.Generator().manual_seed(0)))
    assert [len(mb) for mb in minibatches] == [2, 2, 2]
    seen = torch.cat([mb.scores for mb in minibatches])
    assert sorted(seen.tolist()) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    for mb in minibatches:
        assert torch.equal(mb.values[:, 0], mb.scores)
        assert torch.equal(mb.response_ids[:, 0], mb.scores.long() + 10)


def test_shuffle_is_reproducible_from_the_generator_state():
    batch = make_batch(8, 2)
    generator = torch.Generator().manual_seed(1234)
    list(batch.minibatches(4, generator))  # epoch 1 before the "checkpoint"
    saved_state = generator.get_state()
    epoch_2 = [mb.scores.tolist() for mb in batch.minibatches(4, generator)]

    resumed = torch.Generator()
    resumed.set_state(saved_state)
    assert [mb.scores.tolist() for mb in batch.minibatches(4, resumed)] == epoch_2


def test_minibatch_size_must_divide_the_batch():
    with pytest.raises(ValueError, match="divide"):
        next(make_batch(6, 2).minibatches(4, torch.Generator()))


def test_padding_helpers():
    assert pad_to_length(torch.tensor([[1, 2]]), 4, PAD, side="right").tolist() == [[1, 2, 0, 0]]
    assert pad_to_length(torch.tensor([[1, 2]]), 3, PAD, side="left").tolist() == [[0, 1, 2]]
    stacked = concat_padded([torch.tensor([[1]]), torch.tensor([[2, 3]])], -1)
    assert stacked.tolist() == [[1, -1], [2, 3]]


def test_concat_pads_queries_left_and_responses_right():
    short = make_batch(1, 1, first_row=0)
    long = make_batch(1, 3, first_row=1)
    long = RolloutBatch(**{**long.__dict__, "query_ids": torch.full((1, 3), 8), "query_mask": torch.ones(1, 3).bool()})
    merged = RolloutBatch.concat([short, long], pad_token_id=PAD)
    assert merged.query_ids.tolist() == [[PAD, 7, 7], [8, 8, 8]]
    assert merged.query_mask.tolist() == [[False, True, True], [True, True, True]]
    assert merged.response_ids.tolist() == [[10, PAD, PAD], [11, 11, 11]]
    assert merged.response_mask.tolist() == [[True, False, False], [True, True, True]]
    assert merged.values.tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert merged.scores.tolist() == [0.0, 1.0]
    assert merged.advantages is None


def test_trimmed_drops_all_padding_columns():
    # Responses of 1 and 2 tokens inside 4 columns, queries of 2 tokens inside 5 columns.
    merged = RolloutBatch.concat([make_batch(1, 1), make_batch(1, 2, first_row=1)], pad_token_id=PAD)
    response_fields = ("response_ids", "response_mask", "logprobs", "ref_logprobs", "values")
    padded = dataclasses.replace(
        merged,
        query_ids=pad_to_length(merged.query_ids, 5, PAD, side="left"),
        query_mask=pad_to_length(merged.query_mask, 5, False, side="left"),
        **{name: pad_to_length(getattr(merged, name), 4, 0) for name in response_fields},
    )
    trimmed = padded.trimmed()
    assert trimmed.query_ids.tolist() == [[7, 7], [7, 7]]
    assert trimmed.response_ids.tolist() == [[10, PAD], [11, 11]]
    assert trimmed.values.tolist() == [[0.0, 0.0], [1.0, 1.0]]


def test_sequences_put_query_before_response():
    input_ids, attention_mask = make_batch(1, 2).sequences()
    assert input_ids.tolist() == [[7, 7, 10, 10]]
    assert attention_mask.tolist() == [[True, True, True, True]]


def test_mismatched_shapes_are_refused():
    batch = make_batch(2, 3)
    with pytest.raises(ValueError, match="values"):
        RolloutBatch(**{**batch.__dict__, "values": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="batch sizes"):
        RolloutBatch(**{**batch.__dict__, "scores": torch.zeros(3)})


def test_value_features_follow_their_rows_through_shuffling_trimming_and_concatenation():
    """The reference features of PPO's `value_model: ref_features` are [batch, response_tokens, hidden]: a row's
    features move with its row, trimming cuts their response columns, concatenation pads them with zeros."""
    batch = make_batch(4, 3)
    features = batch.values[:, :, None] * torch.tensor([1.0, -1.0])  # hidden size 2, row i holds (i, -i)
    batch = dataclasses.replace(batch, value_features=features)
    for minibatch in batch.minibatches(2, torch.Generator().manual_seed(0)):
        assert torch.equal(minibatch.value_features[:, 0, 0], minibatch.scores)
    short = dataclasses.replace(batch, response_mask=torch.tensor([[1, 1, 0]] * 4, dtype=torch.bool)).trimmed()
    assert short.value_features.shape == (4, 2, 2) and torch.equal(short.value_features, features[:, :2])
    joined = RolloutBatch.concat([short, batch], PAD)
    assert joined.value_features.shape == (8, 3, 2)
    assert torch.equal(joined.value_features[:4, 2], torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"value_features \(4, 2, 2\) != response_ids \(4, 3\)"):
        dataclasses.replace(batch, value_features=features[:, :2])
