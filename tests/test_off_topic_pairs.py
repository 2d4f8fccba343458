"""Off-topic pairs: each prompt's best-ranked answer over another prompt's best answer, shown under it."""

from __future__ import annotations

import json

import datasets
import pytest
from test_reward_stage import reward_command, run

from workbench.data.off_topic_pairs import add_off_topic_pairs, best_answers
from workbench.errors import UserError


def rankings(prompts: int = 3) -> list[dict]:
    """Prompt p ranks A > B > C (3 pairs, margin = the rank difference)."""
    rows = []
    for p in range(prompts):
        answers = [f"A{p}", f"B{p}", f"C{p}"]
        for i, j in ((0, 1), (1, 2), (0, 2)):
            rows.append({"prompt": f"Q{p}?", "chosen": answers[i], "rejected": answers[j], "margin": float(j - i)})
    return rows


def test_the_best_answer_is_chosen_and_never_rejected():
    rows = rankings(2)
    rows.append({"prompt": "Q2?", "chosen": "X", "rejected": "Y", "margin": 1.0})
    rows.append({"prompt": "Q2?", "chosen": "Y", "rejected": "X", "margin": 1.0})  # a cycle: no best answer
    best = best_answers(datasets.Dataset.from_list(rows))
    assert best == {'"Q0?"': "A0", '"Q1?"': "A1"}


def test_each_prompt_gets_one_pair_against_another_prompts_best_answer():
    dataset = datasets.Dataset.from_list(rankings(3))
    out, added = add_off_topic_pairs(dataset, seed=0)
    assert added == 3 and len(out) == 9 + 3
    new = [row for row in out if row["rejected"].startswith("A")]
    assert sorted(row["prompt"] for row in new) == ["Q0?", "Q1?", "Q2?"]
    for row in new:
        p = row["prompt"][1]
        assert row["chosen"] == f"A{p}"  # this prompt's best answer ...
        assert row["rejected"] != f"A{p}"  # ... over another prompt's best answer
        assert row["margin"] == 2.0  # the largest margin in the data
    assert sorted(row["rejected"] for row in new) == ["A0", "A1", "A2"]  # a cycle: every best answer used once
    again, _ = add_off_topic_pairs(dataset, seed=0)
    assert again["rejected"] == out["rejected"]  # seeded
    assert out.features == dataset.features


def test_each_prompt_gets_per_prompt_pairs_against_distinct_other_prompts():
    dataset = datasets.Dataset.from_list(rankings(4))
    out, added = add_off_topic_pairs(dataset, seed=3, per_prompt=3)
    assert added == 4 * 3 and len(out) == 12 + 12
    new = [(row["prompt"], row["rejected"]) for row in out if row["rejected"].startswith("A")]
    for p in range(4):  # every other prompt's best answer once: 3 others, 3 pairs
        assert sorted(rejected for prompt, rejected in new if prompt == f"Q{p}?") == sorted(
            f"A{q}" for q in range(4) if q != p
        )
    one, _ = add_off_topic_pairs(dataset, seed=3)
    firsts = {(row["prompt"], row["rejected"]) for row in one if row["rejected"].startswith("A")}
    assert firsts <= set(new)  # per_prompt=1's pairs are the first of the cycle
    with pytest.raises(UserError, match=r"off_topic_pairs_per_prompt: expected 1 to 3 .*found 4"):
        add_off_topic_pairs(dataset, seed=3, per_prompt=4)


def test_off_topic_pairs_keep_the_message_format_and_work_without_margins():
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Q{p}?"}],
            "chosen": [{"role": "assistant", "content": f"A{p}"}],
            "rejected": [{"role": "assistant", "content": f"B{p}"}],
        }
        for p in range(2)
    ]
    out, added = add_off_topic_pairs(datasets.Dataset.from_list(rows), seed=1)
    assert added == 2 and "margin" not in out.column_names
    new = [row for row in out if row["rejected"][0]["content"].startswith("A")]
    assert {(row["prompt"][0]["content"], row["rejected"][0]["content"]) for row in new} == {
        ("Q0?", "A1"),
        ("Q1?", "A0"),
    }


def test_off_topic_pairs_need_prompts_and_two_of_them():
    with pytest.raises(UserError, match="off_topic_pairs: expected preference data with a `prompt` column"):
        add_off_topic_pairs(datasets.Dataset.from_list([{"chosen": "a", "rejected": "b"}]), seed=0)
    with pytest.raises(UserError, match="expected rankings of at least 2 prompts; found 1"):
        add_off_topic_pairs(datasets.Dataset.from_list(rankings(1)), seed=0)


def test_the_reward_stage_trains_them_inside_each_prompts_ranking_group(tmp_path, tiny_model_path):
    """With group_rankings the new pair shares its chosen answer with its prompt's ranking, so it joins that group:
    still 4 rankings, each with one more answer."""
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rankings(4)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\ndtype: float32\nbf16: false\ndatasets: [{{path: {data}}}]\n"
        "eval_split_size: 0\noff_topic_pairs: true\ngroup_rankings: true\nper_device_train_batch_size: 2\n"
        f"max_steps: 1\nmax_length: 64\ndataloader_num_workers: 0\noutput_dir: {tmp_path / 'o'}\n"
    )
    result = run(reward_command("--config", str(recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "workbench reward: 4 off-topic pairs added" in result.stdout
    assert "workbench reward: 16 training pairs" in result.stdout
    assert "workbench reward: 4 rankings (groups of pairs sharing answers) per epoch" in result.stdout
