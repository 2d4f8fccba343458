"""SFT data: every format, templates over arbitrary columns, weighted mixtures, local files, clear errors."""

from __future__ import annotations

import json

import datasets
import pytest

from workbench.data import formats
from workbench.data.mixture import DatasetSpec, build_mixture, fingerprint, load_one, mixture_counts
from workbench.errors import UserError


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    from workbench.modeling.loading import load_tokenizer

    return load_tokenizer(str(tiny_model_path))


def test_bundled_instructions_are_conversational():
    dataset, kind = load_one(DatasetSpec(path="bundled:instructions", where={"split": "test"}), "t")
    assert kind == "messages" and len(dataset) == 80 and dataset.column_names == ["messages"]


def test_quote_template_over_arbitrary_columns():
    spec = DatasetSpec(path="bundled:quotes", template="Quote: {quote}\nAuthor: {author}", max_samples=3)
    dataset, kind = load_one(spec, "t")
    assert kind == "text" and dataset[0]["text"].startswith("Quote: ") and "\nAuthor: " in dataset[0]["text"]


def test_prompt_completion_templates(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "2+2?", "a": "4."}, {"q": "3+3?", "a": "6."}])
    spec = DatasetSpec(path=path, prompt_template="Q: {q}\nA: ", completion_template="{a}")
    dataset, kind = load_one(spec, "t")
    assert kind == "prompt_completion" and dataset[0] == {"prompt": "Q: 2+2?\nA: ", "completion": "4."}


def test_parquet_and_saved_dataset_and_text(tmp_path):
    rows = {"text": ["one", "two", "three"]}
    datasets.Dataset.from_dict(rows).to_parquet(tmp_path / "d.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows)}).save_to_disk(tmp_path / "saved")
    for path in (tmp_path / "d.parquet", tmp_path / "saved"):
        dataset, kind = load_one(DatasetSpec(path=str(path)), "t")
        assert kind == "text" and dataset["text"] == rows["text"]


@pytest.mark.parametrize(
    "rows,spec_kwargs,needle",
    [
        ([{"quote": "x"}], dict(template="{quote} by {author}"), "missing column(s) ['author']"),
        ([{"foo": "x"}], {}, "no SFT format found"),
        ([{"text": ""}], {}, "empty in row(s) [1]"),
        ([{"messages": [{"role": "user", "content": "hi"}]}], {}, "no assistant turn"),
        ([{"messages": [{"role": "robot", "content": "hi"}]}], {}, "unknown role 'robot'"),
    ],
)
def test_bad_data_is_named(tmp_path, rows, spec_kwargs, needle):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UserError) as error:
        load_one(DatasetSpec(path=path, **spec_kwargs), "datasets[0]")
    assert needle in str(error.value) and "datasets[0]" in str(error.value)


def test_bad_specs():
    with pytest.raises(UserError, match="unknown dataset key"):
        DatasetSpec.from_recipe({"path": "x", "wieght": 2}, "datasets[1]")
    with pytest.raises(UserError, match="does not exist"):
        load_one(DatasetSpec(path="./missing.jsonl"), "t")
    with pytest.raises(UserError, match="weight must be > 0"):
        DatasetSpec.from_recipe({"path": "x", "weight": 0}, "t")


def test_mixture_counts_follow_weights():
    # Weights 3:1 over datasets of 90 and 100 rows: the largest mixture repeating no row is 90 / 0.75 = 120 rows.
    assert mixture_counts([90, 100], [3, 1], None) == [90, 30]
    # An explicit size upsamples the small one: 0.5 * 400 = 200 rows from a 90-row dataset.
    assert mixture_counts([90, 100], [1, 1], 400) == [200, 200]


def test_mixture_of_unlike_formats_is_rendered_to_text(tmp_path, tokenizer):
    texts = write_jsonl(tmp_path / "t.jsonl", [{"text": f"plain {i}"} for i in range(10)])
    specs = [
        {"path": texts, "weight": 1},
        {"path": "bundled:instructions", "where": {"split": "train"}, "weight": 1, "max_samples": 10},
    ]
    mixture, kind = build_mixture(specs, tokenizer, seed=0, key="datasets")
    assert kind == "text" and len(mixture) == 20
    assert sum(row.startswith("plain") for row in mixture["text"]) == 10
    assert sum("<|im_start|>assistant" in row for row in mixture["text"]) == 10
    again, _ = build_mixture(specs, tokenizer, seed=0, key="datasets")
    assert fingerprint(mixture) == fingerprint(again)
    other, _ = build_mixture(specs, tokenizer, seed=1, key="datasets")
    assert sorted(other["text"]) == sorted(mixture["text"])


def test_weighted_mixture_of_two_chat_sets(tokenizer):
    specs = [
        {"path": "bundled:instructions", "where": {"split": "train"}, "weight": 3, "max_samples": 60},
        {"path": "bundled:instructions", "where": {"split": "test"}, "weight": 1, "max_samples": 40},
    ]
    mixture, kind = build_mixture(specs, tokenizer, seed=0, key="datasets")
    assert kind == "messages" and len(mixture) == 80  # 60 / 0.75 = 80: 60 + 20


def test_to_text_renders_chat(tokenizer):
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    text = formats.to_text(row, "messages", tokenizer)
    assert text.endswith("<|im_start|>assistant\nHello.<|im_end|>\n")
