"""`workbench eval` on tiny-llama: every number re-derived from separately loaded models, the report, bad input.

Three policies share one base as named adapters (the bare base, an SFT adapter and a second adapter standing in for
PPO); the reward adapter judges them. The tests recompute what the stage reports from independent parts: the reward
stage's own scorer (`reward score`'s model), plain PEFT models for the log-probs and greedy answers, the gold rubric.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_args import lora, margs, quant

from workbench.errors import UserError
from workbench.evaluation.metrics import (
    agreement_by_part,
    agreement_outcomes,
    bootstrap_interval,
    compare,
    judge_agreement,
    loops,
    mean_difference,
    policy_metrics,
    win_rate,
    with_length_term,
)

RECIPE = """\
policies:
  - {{name: base, adapter: null}}
  - {{name: sft, adapter: {sft}}}
  - {{name: ppo, adapter: {ppo}}}
reward_adapter: {reward}
best_of: 3
max_prompts: 5
max_new_tokens: 8
batch_size: 3
output_dir: {output_dir}
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def eval_command(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "eval", "--config", str(recipe), *extra]


@pytest.fixture(scope="module")
def three_adapters(tiny_model_path, tmp_path_factory):
    """(sft, ppo, reward): the SFT and reward adapters of test_single_base, plus another random LoRA as `ppo`."""
    from test_single_base import make_adapters, randomise

    from workbench.modeling import adapters, loading

    out = tmp_path_factory.mktemp("eval-adapters")
    sft, reward = make_adapters(tiny_model_path, out)
    model = loading.load_model(margs(str(tiny_model_path), quant(dtype="float32")))
    model = adapters.attach(model, "default", config=lora(r=4, alpha=8, dropout=0.0))
    randomise(model, "default", seed=11)
    manifest = adapters.AdapterManifest(stage="ppo", base_model=model.workbench_base.to_dict(), peft_method="lora")
    ppo = adapters.save(model, "default", out / "ppo", manifest)
    return sft, ppo, reward


@pytest.fixture(scope="module")
def evaluated(three_adapters, tmp_path_factory):
    sft, ppo, reward = three_adapters
    tmp = tmp_path_factory.mktemp("eval-run")
    output_dir = tmp / "eval"
    recipe = tmp / "eval.yaml"
    recipe.write_text(RECIPE.format(sft=sft, ppo=ppo, reward=reward, output_dir=output_dir))
    result = subprocess.run(eval_command(recipe), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    samples = [json.loads(line) for line in (output_dir / "samples.jsonl").read_text().splitlines()]
    metrics = json.loads((output_dir / "metrics.json").read_text())
    return recipe, output_dir, samples, metrics


# ── pure pieces ──────────────────────────────────────────────────────────────────────────────────────────────────────
def test_win_rate_counts_ties_half():
    result = win_rate([3.0, 1.0, 2.0, 5.0], [1.0, 2.0, 2.0, 4.0])
    assert (result["wins"], result["ties"], result["losses"]) == (2, 1, 1)
    assert result["rate"] == pytest.approx((2 + 0.5) / 4)
    assert win_rate([1.0, 2.0], [1.05, 2.0], tolerance=0.1)["rate"] == 0.5
    with pytest.raises(ValueError, match="paired"):
        win_rate([1.0], [1.0, 2.0])


def test_paired_bootstrap_intervals():
    # constant per-prompt values: every resample has the same mean, the interval is that point
    assert bootstrap_interval([0.5] * 30) == [0.5, 0.5]
    # 0/1 outcomes, p = 0.7, n = 100: the percentile interval is close to the normal one, 0.7 ± 1.96 · 0.0458
    low, high = bootstrap_interval([1.0] * 70 + [0.0] * 30)
    assert low == pytest.approx(0.7 - 1.96 * 0.0458, abs=0.015) and high == pytest.approx(
        0.7 + 1.96 * 0.0458, abs=0.015
    )
    assert bootstrap_interval([1.0] * 70 + [0.0] * 30) == [low, high]  # seeded
    # paired: the same gain on every prompt is certain, however different the prompts' own scores are
    difference = mean_difference([1.0, 3.0, 5.0, 9.0], [0.5, 2.5, 4.5, 8.5])
    assert difference["mean"] == pytest.approx(0.5) and difference["ci95"] == pytest.approx([0.5, 0.5])
    result = win_rate([1.0] * 8 + [0.0] * 2, [0.5] * 10)
    assert result["rate"] == 0.8 and result["ci95"][0] < 0.8 < result["ci95"][1] <= 1.0


def test_empty_answers_are_counted_and_named_in_the_verdict():
    from workbench.evaluation.eval_report import verdict

    rows = [{"words": 0, "gold": 0.0}, {"words": 7, "gold": 4.0}, {"words": 0, "gold": 0.0}]
    assert policy_metrics(rows)["empty"] == 2 and policy_metrics(rows[1:2])["empty"] == 0
    rate = win_rate([0.0, 4.0, 0.0], [3.0, 3.0, 3.0])
    metrics = {
        "settings": {"baseline": "sft"},
        "win_rates": {"ppo": {"gold_rubric": rate}},
        "policies": {"ppo": policy_metrics(rows), "sft": policy_metrics(rows[1:2])},
    }
    assert verdict(metrics)[-1] == "  - **2 of its 3 answers are empty.**"


def test_looping_answers_are_counted_and_named_in_the_verdict():
    from workbench.evaluation.eval_report import verdict

    assert loops("Pebble, I'm so glad you're here. I'm so glad you're here. I'm so glad you're here.")  # 3 times
    assert not loops("Pebble, I'm so glad you're here. I'm so glad you're here.")  # twice
    assert loops("No, no. No, no. No, no.")  # no no no no no no: "no no no no" 3 times, case and commas aside
    assert loops("A Tree-planting is a tree-planting is a Tree-planting is a")  # hyphens split words
    assert not loops("Swing-Swing-Swing-Swing-Swing")  # "swing swing swing swing" twice
    assert not loops("Pros: 1. You can share rent. 2. You can share meals. 3. You can cook.")
    # a 3-word run three times is ordinary: "for a raise" in "ask / looking / asking for a raise"
    assert not loops("To ask for a raise, say you're looking for a raise and why: \"I'm asking for a raise.\"")
    assert not loops("") and not loops("Yes.")
    rows = [{"words": 6, "looping": True}, {"words": 7, "looping": False}, {"words": 9, "looping": True}, {"words": 3}]
    assert policy_metrics(rows)["looping"] == 2 and policy_metrics(rows[1:2])["looping"] == 0
    rate = win_rate([0.0, 4.0, 0.0, 4.0], [3.0, 3.0, 3.0, 3.0])
    metrics = {
        "settings": {"baseline": "sft"},
        "win_rates": {"ppo": {"gold_rubric": rate}},
        "policies": {"ppo": policy_metrics(rows), "sft": policy_metrics(rows[1:2])},
    }
    assert verdict(metrics)[-1] == "  - 2 of its 4 answers loop (a run of 4 words 3 or more times; sft: 0)."


def test_judge_agreement_by_hand():
    rows = [
        # prompt a: gold orders x > y > z; the judge gets (x, y) right, (x, z) right, (y, z) wrong
        {"prompt_id": "a", "gold": 5.0, "reward": 2.0},
        {"prompt_id": "a", "gold": 4.0, "reward": -1.0},
        {"prompt_id": "a", "gold": 3.0, "reward": 0.5},
        # prompt b: a gold gap below min_gap does not count; a judge tie counts as wrong
        {"prompt_id": "b", "gold": 4.0, "reward": 1.0},
        {"prompt_id": "b", "gold": 4.1, "reward": 0.0},
        {"prompt_id": "c", "gold": 1.0, "reward": 0.0},
        {"prompt_id": "c", "gold": 2.0, "reward": 0.0},
    ]
    result = judge_agreement(rows, min_gap=0.25)
    assert (result["pairs"], result["agree"]) == (4, 2)
    assert result["rate"] == 0.5 and result["stderr"] == pytest.approx(0.25)
    assert judge_agreement(rows[:1])["rate"] is None
    # the pairs behind it, in sample order with their prompts (bench/alignment.py pairs them across reward models)
    assert agreement_outcomes(rows, min_gap=0.25) == [("a", 1.0), ("a", 1.0), ("a", 0.0), ("c", 0.0)]


def test_a_reward_model_with_a_length_term_is_judged_whole_too():
    """The head's scores plus w * tokens / 10 (workbench/modeling/length_term.py): the reward model as fitted to the
    labelers, reported beside the head that RL optimises."""
    from workbench.evaluation.eval_report import agreement_lines

    rows = [
        {"prompt_id": "a", "gold": 5.0, "reward": 1.0, "tokens": 40},  # long and good: the head alone prefers it
        {"prompt_id": "a", "gold": 4.0, "reward": 0.5, "tokens": 10},
    ]
    whole = with_length_term(rows, -0.5)  # 1.0 - 2.0 = -1.0 against 0.5 - 0.5 = 0.0
    assert [row["reward"] for row in whole] == [-1.0, 0.0] and [row["reward"] for row in rows] == [1.0, 0.5]
    assert judge_agreement(rows)["rate"] == 1.0 and judge_agreement(whole)["rate"] == 0.0
    metrics = {"reward_model_vs_gold": judge_agreement(rows)}
    metrics["reward_model_with_length_term_vs_gold"] = judge_agreement(whole) | {"length_weight": -0.5}
    text = "\n".join(agreement_lines(metrics))
    assert "trained with a length term beside it (-0.50 per 10 tokens, left out of the head)" in text
    assert "head and term together agree with gold on 0.0% ± 0.0 of the same pairs" in text
    assert "length term" not in "\n".join(agreement_lines({"reward_model_vs_gold": judge_agreement(rows)}))


def test_agreement_splits_by_the_part_that_makes_most_of_the_gold_gap():
    rows = [
        # gold = the two parts' points + 3.0 (the other parts, equal). Prompt a: x beats y by finishing (+1.0, on
        # topic -0.5); x beats z mostly on topic (+0.5, finishing +0.3); y beats z by 0.3, mostly on topic (+1.0,
        # finishing -0.7). The judge ranks z > x > y.
        {"prompt_id": "a", "gold": 4.5, "reward": 1.0, "gold_parts": {"complete": 1.0, "on_topic": 0.5}},
        {"prompt_id": "a", "gold": 4.0, "reward": 0.0, "gold_parts": {"complete": 0.0, "on_topic": 1.0}},
        {"prompt_id": "a", "gold": 3.7, "reward": 2.0, "gold_parts": {"complete": 0.7, "on_topic": 0.0}},
        # prompt b: 0.1 apart, below min_gap: not a pair
        {"prompt_id": "b", "gold": 5.0, "reward": 1.0, "gold_parts": {"complete": 1.0, "on_topic": 1.0}},
        {"prompt_id": "b", "gold": 5.1, "reward": 0.0, "gold_parts": {"complete": 0.6, "on_topic": 1.5}},
    ]
    split = agreement_by_part(rows, min_gap=0.25)
    # (x, y) complete, agreed; (x, z) on_topic, wrong; (y, z) on_topic, wrong
    assert split == {
        "complete": {"pairs": 1, "agree": 1, "rate": 1.0},
        "on_topic": {"pairs": 2, "agree": 0, "rate": 0.0},
    }
    assert sum(part["pairs"] for part in split.values()) == judge_agreement(rows, min_gap=0.25)["pairs"]
    assert agreement_by_part([{**row, "gold_parts": None} for row in rows]) == {}  # no parts, no split


def test_gold_difference_splits_into_the_parts_points():
    def row(policy: str, prompt_id: str, complete: float, on_topic: float) -> dict:
        parts = {"complete": complete, "on_topic": on_topic}
        gold = sum(parts.values())  # the parts' sum, as rubric.score is
        return {"policy": policy, "prompt_id": prompt_id, "reward": 0.0, "gold": gold, "gold_parts": parts}

    rows = [row("a", "p1", 1.0, 1.0), row("a", "p2", 0.5, 0.5), row("b", "p1", 1.0, 0.5), row("b", "p2", 1.0, 1.0)]
    _, rates = compare(rows, ["a", "b"], "a", ["reward_model", "gold_rubric"])
    gold = rates["b"]["gold_rubric"]
    parts = gold["difference_by_part"]
    # b - a: complete (0 + 0.5) / 2 = +0.25, on topic (-0.5 + 0.5) / 2 = 0; together the gold difference, +0.25
    assert parts["complete"]["mean"] == 0.25 and parts["on_topic"]["mean"] == 0.0
    assert sum(part["mean"] for part in parts.values()) == gold["difference"]["mean"] == 0.25
    assert "difference_by_part" not in rates["b"]["reward_model"]
    plain = [{k: v for k, v in r.items() if k != "gold_parts"} for r in rows]
    assert "difference_by_part" not in compare(plain, ["a", "b"], "a", ["gold_rubric"])[1]["b"]["gold_rubric"]


def test_compare_needs_the_same_prompts_in_the_same_order():
    rows = [
        {"policy": "a", "prompt_id": "p1", "reward": 1.0, "gold": 2.0},
        {"policy": "a", "prompt_id": "p2", "reward": 0.0, "gold": 2.0},
        {"policy": "b", "prompt_id": "p1", "reward": 2.0, "gold": 1.0},
        {"policy": "b", "prompt_id": "p2", "reward": 0.0, "gold": 3.0},
    ]
    per_policy, rates = compare(rows, ["a", "b"], "a", ["reward_model", "gold_rubric"])
    assert per_policy["b"]["reward_mean"] == 1.0 and list(rates) == ["b"]
    assert rates["b"]["reward_model"]["rate"] == 0.75 and rates["b"]["gold_rubric"]["rate"] == 0.5
    with pytest.raises(ValueError, match="other prompts"):
        compare(rows[:3], ["a", "b"], "a", ["reward_model"])


# ── the stage ────────────────────────────────────────────────────────────────────────────────────────────────────────
def test_eval_writes_report_plots_samples_and_offline_wandb(evaluated):
    _, output_dir, samples, metrics = evaluated
    assert len(samples) == 20 and {s["policy"] for s in samples} == {"base", "sft", "ppo", "best_of_3"}
    assert metrics["settings"]["reference"] == metrics["settings"]["baseline"] == "sft"  # the policy of stage sft
    assert set(metrics["win_rates"]) == {"base", "ppo", "best_of_3"}
    for rates in metrics["win_rates"].values():  # paired bootstrap intervals around each rate and score difference
        for rate in rates.values():
            assert rate["ci95"][0] <= rate["rate"] <= rate["ci95"][1]
            difference = rate["difference"]
            assert difference["ci95"][0] <= difference["mean"] <= difference["ci95"][1]
    for name in ("reward_distribution.png", "gold_distribution.png", "win_rates.png"):
        assert (output_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    report = (output_dir / "report.md").read_text()
    assert "| ppo |" in report and "![win_rates](win_rates.png)" in report
    # the first lines say in words whether each policy beats the baseline, with the interval
    verdicts = report.split("\n\n")[1]
    assert all(f"**{name} " in verdicts for name in ("base", "ppo", "best_of_3")) and "95% CI" in verdicts
    assert metrics["wandb_run"]["mode"] == "offline"
    assert list((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert (output_dir / "recipe.yaml").read_text().startswith("# Resolved recipe")


def test_rewards_are_the_reward_stage_scores(evaluated, three_adapters):
    """The shared base's `reward` adapter gives what `workbench reward score`'s own model gives, same tokenisation."""
    from workbench.modeling.reward_model import load_reward_model as load_scorer
    from workbench.modeling.reward_model import score_sequences
    from workbench.modeling.tokens import reward_input_ids as encode

    _, _, samples, metrics = evaluated
    model, tokenizer, _ = load_scorer(three_adapters[2], margs(None))
    sequences = [encode(tokenizer, s["prompt"], s["response"]) for s in samples]
    expected = score_sequences(model, sequences, tokenizer.pad_token_id)
    assert [s["reward"] for s in samples] == pytest.approx(expected, abs=1e-4)
    assert len(set(expected)) > 3  # the scores differ between answers: the comparison means something
    ppo = [s["reward"] for s in samples if s["policy"] == "ppo"]
    assert metrics["policies"]["ppo"]["reward_mean"] == pytest.approx(sum(ppo) / len(ppo))


def test_answers_and_log_ratios_match_separately_loaded_models(evaluated, three_adapters, tiny_model_path):
    """Greedy answers and summed log-probs equal those of base + one adapter loaded on its own with plain PEFT."""
    from workbench.evaluation.policies import response_tokens
    from workbench.modeling import adapters, loading
    from workbench.modeling.generation import Sampling, generate_completions, stop_token_ids

    _, _, samples, metrics = evaluated
    sft, ppo, _ = three_adapters
    precision = quant(dtype="float32")
    tokenizer = loading.load_tokenizer(str(tiny_model_path), padding_side="left")
    stops = stop_token_ids(tokenizer)

    def logprob_sums(model, rows):
        sums = []
        for row in rows:
            query, response = response_tokens(tokenizer, row["prompt"], row["response"], stops)
            ids = torch.tensor([query + response])
            with torch.no_grad():
                logits = model(input_ids=ids).logits[0, len(query) - 1 : -1].float()
            sums.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(response)[:, None]).sum().item())
        return sums

    by_policy = {name: [s for s in samples if s["policy"] == name] for name in ("base", "sft", "ppo")}
    plain = loading.load_model(margs(str(tiny_model_path), precision, device_map="cpu"))
    assert [s["logprob"] for s in by_policy["base"]] == pytest.approx(logprob_sums(plain, by_policy["base"]), abs=1e-3)
    sft_model, _ = adapters.load_with_adapter(sft, margs(None, precision))[::2]
    answers = generate_completions(
        sft_model, tokenizer, [s["prompt"] for s in by_policy["sft"]], 1, Sampling(8, 0.0), progress=False
    )
    assert [a[0] for a in answers] == [s["response"] for s in by_policy["sft"]]
    for name in ("base", "ppo"):  # the reference (sft) log-probs of the other policies' answers
        assert [s["ref_logprob"] for s in by_policy[name]] == pytest.approx(
            logprob_sums(sft_model, by_policy[name]), abs=1e-3
        )
    ppo_model, _ = adapters.load_with_adapter(ppo, margs(None, precision))[::2]
    assert [s["logprob"] for s in by_policy["ppo"]] == pytest.approx(
        logprob_sums(ppo_model, by_policy["ppo"]), abs=1e-3
    )

    assert all(s["kl"] == 0.0 for s in by_policy["sft"])  # the reference against itself

    # best-of-3: three answers of sft sampled at temperature 1 under the eval's seed, the reward model's favourite
    from workbench.modeling.reward_model import load_reward_model, score_sequences
    from workbench.modeling.tokens import reward_input_ids

    prompts = [s["prompt"] for s in by_policy["sft"]]
    candidates = generate_completions(sft_model, tokenizer, prompts, 3, Sampling(8, 1.0), 3, 0, progress=False)
    scorer, scorer_tokenizer, _ = load_reward_model(three_adapters[2], margs(None))
    picks, best_scores = [], []
    for prompt, texts in zip(prompts, candidates):
        sequences = [reward_input_ids(scorer_tokenizer, prompt, text) for text in texts]
        scores = score_sequences(scorer, sequences, scorer_tokenizer.pad_token_id)
        picks.append(texts[scores.index(max(scores))])
        best_scores.append(max(scores))
    best_rows = [s for s in samples if s["policy"] == "best_of_3"]
    assert [s["response"] for s in best_rows] == picks
    # the picks keep the scores they were picked by; like the reference's own answers they are the reference's
    # samples, KL 0 by construction, and take no log-prob pass
    assert [s["reward"] for s in best_rows] == pytest.approx(best_scores, abs=1e-4)
    for row in best_rows + by_policy["sft"]:
        assert row["kl"] == 0.0 and row["logprob"] is None and row["ref_logprob"] is None
    assert len({tuple(texts) for texts in candidates}) > 1 and metrics["settings"]["best_of"]["n"] == 3
    kls = [s["logprob"] - s["ref_logprob"] for s in by_policy["ppo"]]
    assert metrics["policies"]["ppo"]["kl_mean"] == pytest.approx(sum(kls) / len(kls)) and abs(sum(kls)) > 0.1


def test_win_rates_and_gold_scores_follow_the_samples(evaluated):
    from labeling import rubric

    _, _, samples, metrics = evaluated
    for sample in samples:
        assert sample["gold"] == rubric.score(sample["prompt"], sample["response"])
    sft = [s for s in samples if s["policy"] == "sft"]
    for name in ("base", "ppo"):
        mine = [s for s in samples if s["policy"] == name]
        assert [s["prompt_id"] for s in mine] == [s["prompt_id"] for s in sft]
        for judge, key in (("reward_model", "reward"), ("gold_rubric", "gold")):
            outcomes = [1.0 if a[key] > b[key] else 0.5 if a[key] == b[key] else 0.0 for a, b in zip(mine, sft)]
            assert metrics["win_rates"][name][judge]["rate"] == pytest.approx(sum(outcomes) / len(outcomes))
    for name, row in metrics["policies"].items():
        assert row["empty"] == sum(1 for s in samples if s["policy"] == name and not s["response"].strip())
        assert row["looping"] == sum(1 for s in samples if s["policy"] == name and loops(s["response"]))
    assert metrics["reward_model_vs_gold"] == judge_agreement(samples) | {"by_part": agreement_by_part(samples)}
    assert metrics["reward_model_vs_gold"]["pairs"] > 0
    assert (
        sum(p["pairs"] for p in metrics["reward_model_vs_gold"]["by_part"].values())
        == judge_agreement(samples)["pairs"]
    )
    for sample in samples:  # each rubric part's points, which add up to the gold score
        assert sample["gold_parts"] == rubric.points(sample["prompt"], sample["response"])
        assert sum(sample["gold_parts"].values()) == sample["gold"]
    for name in ("base", "ppo"):
        gold = metrics["win_rates"][name]["gold_rubric"]
        split = sum(part["mean"] for part in gold["difference_by_part"].values())
        assert split == pytest.approx(gold["difference"]["mean"], abs=1e-12)


def test_existing_report_needs_overwrite(evaluated):
    recipe, *_ = evaluated
    result = subprocess.run(eval_command(recipe), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 2 and "--overwrite" in result.stderr and "Traceback" not in result.stderr


def test_bad_input_names_the_key(three_adapters, tmp_path):
    from workbench.stages import evaluate

    sft, ppo, reward = three_adapters
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(RECIPE.format(sft=sft, ppo=ppo, reward=reward, output_dir=tmp_path / "out"))
    result = subprocess.run(eval_command(recipe, "--baseline", "dpo"), capture_output=True, text=True, env=ENV)
    assert result.returncode == 2 and "baseline 'dpo' is not one of the policies" in result.stderr
    bad = {
        "reward_adapter is required": ["--reward_adapter", ""],
        "not an adapter the workbench wrote": ["--reward_adapter", str(tmp_path)],
        "expected a reward or value model adapter (SEQ_CLS), found a policy adapter": ["--reward_adapter", str(sft)],
        "temperature must be >= 0": ["--temperature", "-1"],
    }
    for message, extra in bad.items():
        with pytest.raises(UserError, match=message.replace("(", "\\(").replace(")", "\\)")):
            evaluate.main(["--config", str(recipe), *extra])
    taken = tmp_path / "taken.yaml"
    taken.write_text(f"policies: [{{name: reward, adapter: {sft}}}]\nreward_adapter: {reward}\n")
    with pytest.raises(UserError, match="name 'reward' is taken"):
        evaluate.main(["--config", str(taken)])
    taken.write_text(f"policies: [{{name: rm, adapter: {reward}}}]\nreward_adapter: {reward}\n")
    with pytest.raises(
        UserError, match=r"policies\[0\] \(rm\): .* expected a policy adapter \(CAUSAL_LM\), found a reward"
    ):
        evaluate.main(["--config", str(taken)])
    assert not (tmp_path / "out").exists()
