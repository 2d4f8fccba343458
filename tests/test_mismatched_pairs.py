"""Mismatched-answer pairs (`mismatched_negatives`): a prompt's best-ranked answer over another prompt's best one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import datasets
import pytest

from workbench.data.mismatched_pairs import add_mismatched_pairs, best_answers
from workbench.errors import UserError


def rankings(prompts: int) -> datasets.Dataset:
    """`prompts` rankings of 3 answers as `label pull` writes them: answer 0 > 1 > 2, margins the rank gaps. Pairs
    come in the order (1, 2), (0, 2), (0, 1), so the best answer is not simply the first chosen."""
    rows = []
    for p in range(prompts):
        answers = [f"Answer to question {p}, finished.", f"answer {p}", f"{p} {p} {p}"]
        for i, j in ((1, 2), (0, 2), (0, 1)):
            rows.append({"prompt": f"Question {p}?", "chosen": answers[i], "rejected": answers[j], "margin": j - i})
    return datasets.Dataset.from_list(rows)


def test_the_best_answer_is_the_one_that_wins_most_pairs():
    best = best_answers(rankings(3))
    assert best == {json.dumps(f"Question {p}?"): f"Answer to question {p}, finished." for p in range(3)}


def test_each_prompt_gets_another_prompts_best_answer_as_a_rejected_answer():
    labeled = rankings(4)
    once = add_mismatched_pairs(labeled, per_prompt=1, seed=0)
    added = [row for row in once if row["rejected"].startswith("Answer to question")]
    assert len(once) == 12 + 4 and len(added) == 4
    for row in added:
        mine = row["prompt"].split()[1].rstrip("?")
        assert row["chosen"] == f"Answer to question {mine}, finished."  # its own best answer is chosen
        assert row["rejected"] != row["chosen"]  # over another prompt's best
        assert row["margin"] == 2.0  # the largest margin in the labeled pairs
    assert sorted(row["rejected"] for row in added) == sorted(row["chosen"] for row in added)  # each best used once
    labeled_rows = sorted(json.dumps(row, sort_keys=True) for row in labeled)
    kept = sorted(json.dumps(row, sort_keys=True) for row in once if row not in added)
    assert kept == labeled_rows  # the labelers' pairs unchanged

    twice = add_mismatched_pairs(labeled, per_prompt=2, seed=0)
    pairs = {(row["prompt"], row["rejected"]) for row in twice if row["rejected"].startswith("Answer to question")}
    assert len(twice) == 12 + 8 and len(pairs) == 8  # two different other prompts for each prompt
    assert add_mismatched_pairs(labeled, per_prompt=1, seed=0)["rejected"] == once["rejected"]  # seeded
    assert add_mismatched_pairs(labeled, per_prompt=0, seed=0) is labeled


def test_without_margins_or_with_too_few_prompts():
    plain = add_mismatched_pairs(rankings(3).remove_columns("margin"), per_prompt=1, seed=0)
    assert plain.column_names == ["prompt", "chosen", "rejected"] and len(plain) == 12
    with pytest.raises(UserError, match=r"mismatched_negatives: expected at most 2 .* found 3"):
        add_mismatched_pairs(rankings(3), per_prompt=3, seed=0)
    with pytest.raises(UserError, match="needs preference pairs with a `prompt` column"):
        add_mismatched_pairs(rankings(3).remove_columns("prompt"), per_prompt=1, seed=0)


def reward(tmp_path, extra: str):
    data = tmp_path / "rankings.jsonl"
    rankings(5).to_json(data)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\ndtype: float32\nbf16: false\ndatasets: [{{path: {data}}}]\n"
        "eval_split_size: 1\ngroup_rankings: true\nper_device_train_batch_size: 2\nmax_steps: 1\n"
        f"learning_rate: 1.0e-3\nmax_length: 256\ndataloader_num_workers: 0\noutput_dir: {tmp_path / 'o'}\n{extra}"
    )
    command = [sys.executable, "-m", "workbench.cli", "reward", "--config", str(recipe)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_the_reward_stage_adds_them_to_training_only_and_each_joins_its_prompts_ranking(tmp_path, tiny_model_path):
    """5 rankings, one held out (3 pairs); the 4 training prompts get one mismatched pair each, whose chosen answer is
    in the prompt's ranking, so there are still 4 training groups (one per ranking)."""
    result = reward(tmp_path, "mismatched_negatives: 1\n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "workbench reward: 4 mismatched-answer pairs added to 12 labeled" in result.stdout
    assert "workbench reward: 16 training pairs (standard), 3 eval pairs" in result.stdout
    assert "workbench reward: 4 rankings (groups of pairs sharing answers) per epoch" in result.stdout
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["eval_pairs"] == 3


def test_a_negative_count_exits_2_naming_the_key(tmp_path, tiny_model_path):
    result = reward(tmp_path, "mismatched_negatives: -1\n")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "mismatched_negatives: expected 0 or more pairs per prompt; found -1" in result.stderr
    assert not (tmp_path / "o" / "adapter").exists()
