"""`workbench generate` and the sampling under it, on tiny-llama (random weights, real tokenizer and chat template)."""

from __future__ import annotations

import hashlib
import json

import pytest
from model_args import lora, margs, quant

from workbench.errors import UserError

PROMPTS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Tell me a long story about a cat"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_model_path):
    from workbench.modeling import loading

    model = loading.load_model(margs("tiny-llama", quant(dtype="float32"), device_map="cpu"))
    return model, loading.load_tokenizer("tiny-llama")


def test_k_completions_per_prompt_seeded_and_batched(tiny):
    from workbench.modeling.generation import Sampling, generate_completions

    model, tokenizer = tiny
    common = dict(k=3, sampling=Sampling(max_new_tokens=6, temperature=1.0), batch_size=4, progress=False)
    first = generate_completions(model, tokenizer, PROMPTS, seed=1, **common)
    assert [len(texts) for texts in first] == [3, 3] and all(isinstance(t, str) for ts in first for t in ts)
    assert generate_completions(model, tokenizer, PROMPTS, seed=1, **common) == first
    assert generate_completions(model, tokenizer, PROMPTS, seed=2, **common) != first
    assert len(set(first[0])) > 1  # sampled, not K copies
    assert tokenizer.padding_side == "right"  # generation pads on its own and leaves the tokenizer as it was
    greedy = generate_completions(
        model,
        tokenizer,
        PROMPTS,
        k=2,
        sampling=Sampling(max_new_tokens=6, temperature=0),
        batch_size=1,
        seed=0,
        progress=False,
    )
    alone = generate_completions(
        model,
        tokenizer,
        PROMPTS[1:],
        k=1,
        sampling=Sampling(max_new_tokens=6, temperature=0),
        batch_size=1,
        seed=0,
        progress=False,
    )
    batched = generate_completions(
        model,
        tokenizer,
        PROMPTS,
        k=1,
        sampling=Sampling(max_new_tokens=6, temperature=0),
        batch_size=2,
        seed=0,
        progress=False,
    )
    assert greedy[1] == [alone[0][0]] * 2 and batched[1] == alone[0]  # left padding does not change the answer


def test_stops_at_end_of_turn(tiny):
    from workbench.modeling.generation import stop_token_ids

    _, tokenizer = tiny
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tokenizer)


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model_path, tmp_path_factory):
    from workbench.modeling import adapters, loading

    model = loading.load_model(margs("tiny-llama", quant(dtype="float32"), device_map="cpu"))
    model = adapters.attach(model, "default", config=lora(r=4, alpha=8))
    manifest = adapters.AdapterManifest(stage="sft", base_model=model.workbench_base.to_dict(), peft_method="lora")
    return adapters.save(model, "default", tmp_path_factory.mktemp("policy") / "adapter", manifest)


def test_generate_stage_writes_candidates_with_policy_reference(tiny_adapter, tmp_path):
    from workbench.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"prompt_id": "a", "prompt": PROMPTS[0], "split": "train"})
        + "\n"
        + json.dumps({"prompt_id": "b", "prompt": "A plain string prompt", "split": "train"})
        + "\n"
        + json.dumps({"prompt_id": "c", "prompt": PROMPTS[1], "split": "test"})
        + "\n"
    )
    out = tmp_path / "candidates"
    args = [
        "generate",
        "--adapter",
        str(tiny_adapter),
        "--prompts",
        str(prompts),
        "--num_completions",
        "2",
        "--max_new_tokens",
        "5",
        "--min_new_tokens",
        "2",
        "--load_in_4bit",
        "false",
        "--dtype",
        "float32",
        "--batch_size",
        "3",
        "--output_dir",
        str(out),
        "--wandb_mode",
        "offline",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert [r["prompt_id"] for r in rows] == ["a", "b"]  # prompts_where defaults to split=train
    assert rows[1]["prompt"] == [{"role": "user", "content": "A plain string prompt"}]
    assert all(len(r["completions"]) == 2 and all(r["completions"]) for r in rows)
    policy = rows[0]["policy"]
    digest = hashlib.sha256((tiny_adapter / "workbench.json").read_bytes()).hexdigest()
    assert policy["stage"] == "sft" and policy["manifest_sha256"] == f"sha256:{digest}"
    assert policy["adapter"] == str(tiny_adapter.resolve()) and policy["base_model"] == "tiny-llama"
    assert rows[0]["generation"] == {
        "k": 2,
        "max_new_tokens": 5,
        "min_new_tokens": 2,
        "temperature": 0.8,
        "top_p": 0.95,
        "top_k": 50,
        "seed": 0,
        "batch_size": 3,
    }
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stats"]["prompts"] == 2 and manifest["policy"] == policy
    assert (out / "recipe.yaml").read_text().startswith("# Resolved recipe")

    from labeling.candidates import load_candidates, policy_label

    assert len(load_candidates(out)) == 2  # what push reads
    assert policy_label(policy) == f"sft:{tiny_adapter.parent.name}@{digest[:12]}"
    assert main(args) == 2  # never clobbers candidates without --overwrite


def test_bad_prompts_are_refused(tmp_path):
    from workbench.data.prompts import load_prompts

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "prompt": "x"}) + "\n")
    with pytest.raises(UserError, match=r"missing column\(s\) \['prompt_id', 'split'\]"):
        load_prompts(str(path), where={"split": "train"})
    path.write_text(
        json.dumps({"prompt_id": "a", "prompt": "x"}) + "\n" + json.dumps({"prompt_id": "a", "prompt": "y"})
    )
    with pytest.raises(UserError, match="duplicate prompt_id 'a'"):
        load_prompts(str(path))
    assert len(load_prompts("bundled:prompts", where={"split": "train"}, limit=5)) == 5
