"""`workbench reward` end to end on a tiny 4-bit model, `reward score`, errors, metrics, and quality on the default."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from labeling.selection import ranking_uncertainty
from workbench.errors import UserError
from workbench.evaluation.pairwise import pairwise_metrics

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_PREFERENCES = ROOT / "workbench" / "data" / "bundled" / "preferences.jsonl"

RECIPE = """\
model_name_or_path: tiny-llama
dtype: float32
bf16: false
datasets:
  - path: {data}
    where: {{split: train}}
eval_datasets:
  - path: {data}
    where: {{split: test}}
max_steps: {max_steps}
per_device_train_batch_size: 4
per_device_eval_batch_size: 8
learning_rate: 1.0e-3
max_length: 256
save_steps: {save_steps}
logging_steps: 2
gradient_checkpointing: false
dataloader_num_workers: 0
output_dir: {output_dir}
"""


def run(command, **kwargs):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, **kwargs)


def reward_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "workbench.cli", "reward", *args]


@pytest.fixture(scope="module")
def labeled_data(tmp_path_factory) -> Path:
    """Preference pairs as `label pull` leaves them: a JSONL file with a lineage manifest beside it."""
    folder = tmp_path_factory.mktemp("pulled")
    rows = [json.loads(line) for line in BUNDLED_PREFERENCES.read_text().splitlines()]
    subset = [r for r in rows if r["split"] == "train"][:40] + [r for r in rows if r["split"] == "test"][:16]
    (folder / "preferences.jsonl").write_text("".join(json.dumps(r) + "\n" for r in subset))
    lineage = {"labeling_round": 2, "argilla_dataset": "candidates-round-2", "api_key": "must-not-leak"}
    (folder / "manifest.json").write_text(json.dumps(lineage))
    return folder / "preferences.jsonl"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, labeled_data, tiny_model_path):
    """One reward run (6 steps, checkpoints at 3 and 6) with an SFT parent on the same base."""
    from workbench.modeling import adapters, loading

    tmp = tmp_path_factory.mktemp("reward")
    sft = tmp / "sft-adapter"
    base = {"name_or_path": "tiny-llama", "content_hash": loading.weights_hash(str(tiny_model_path))}
    adapters.AdapterManifest(stage="sft", base_model=base, peft_method="lora").write(sft)
    output_dir = tmp / "run"
    recipe = tmp / "run.yaml"
    recipe.write_text(RECIPE.format(data=labeled_data, max_steps=6, save_steps=3, output_dir=output_dir))
    result = run(reward_command("--config", str(recipe), "--sft_adapter", str(sft)))
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe, output_dir, sft


def test_reward_writes_adapter_manifest_metrics_and_offline_wandb(trained, labeled_data):
    recipe, output_dir, sft = trained
    adapter = output_dir / "adapter"
    manifest = json.loads((adapter / "workbench.json").read_text())
    assert manifest["stage"] == "reward" and manifest["task_type"] == "SEQ_CLS" and manifest["peft_method"] == "lora"
    assert manifest["base_model"]["quantization"]["bits"] == 4
    datasets = [p for p in manifest["parents"] if p["kind"] == "dataset"]
    assert datasets[0]["path"] == str(labeled_data) and datasets[0]["where"] == {"split": "train"}
    assert datasets[0]["labeling"]["content"] == {"labeling_round": 2, "argilla_dataset": "candidates-round-2"}
    assert [p["path"] for p in manifest["parents"] if p["kind"] == "adapter"] == [str(sft.resolve())]
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in config["modules_to_save"]
    assert "base_model.model.score.weight" in load_file(adapter / "adapter_model.safetensors")

    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == manifest["metrics"] and metrics["global_step"] == 6
    for key in ("base_eval_accuracy", "eval_accuracy", "eval_mean_margin", "eval_ece", "eval_pairs"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["eval_pairs"] == 16 and 0 <= metrics["eval_accuracy"] <= 1
    assert sum(b["pairs"] for b in metrics["eval_calibration"]) == 16
    assert manifest["wandb_run"]["mode"] == "offline"
    assert list((output_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    rerun = (output_dir / "recipe.yaml").read_text()
    assert rerun.startswith("# Resolved recipe") and "workbench reward --config" in rerun
    again = run(reward_command("--config", str(recipe)))
    assert again.returncode == 2 and "pass --resume" in again.stderr


def test_the_saved_posterior_is_the_laplace_fit_of_the_saved_head_on_the_training_answers(trained, labeled_data):
    """reward_uncertainty.safetensors beside the adapter: the mean features of the distinct training answers and the
    inverse curvature of the pairwise loss at the saved head (workbench/modeling/reward_uncertainty.py), recomputed
    here from the saved reward model as `workbench reward score` loads it."""
    from safetensors import safe_open

    from workbench.modeling import reward_uncertainty
    from workbench.modeling.reward_model import final_features, load_reward_model
    from workbench.modeling.tokens import reward_input_ids

    _, output_dir, _ = trained
    adapter = output_dir / "adapter"
    saved = reward_uncertainty.load(adapter)
    model, tokenizer, _ = load_reward_model(adapter)
    rows = [json.loads(line) for line in labeled_data.read_text().splitlines()]
    index_of: dict[tuple, int] = {}

    def index(row, side) -> int:
        return index_of.setdefault(tuple(reward_input_ids(tokenizer, row["prompt"], row[side])), len(index_of))

    pairs = [[index(r, "chosen"), index(r, "rejected")] for r in rows if r["split"] == "train"]
    features = final_features(model, [list(ids) for ids in index_of], tokenizer.pad_token_id)
    weight = model.get_base_model().score.weight.detach()[0]
    expected = reward_uncertainty.fit(features, torch.tensor(pairs), weight, prior_precision=1.0)
    hidden = model.config.hidden_size
    assert saved["mean"].shape == (hidden,) and saved["covariance"].shape == (hidden, hidden)
    # TRL trains a quantized base's LoRA in bf16 and the saved adapter loads in fp32: features ~0.8 differ by < 0.01
    torch.testing.assert_close(saved["mean"], expected["mean"], atol=0.02, rtol=0)
    torch.testing.assert_close(saved["covariance"], expected["covariance"], atol=0.005, rtol=0)
    with safe_open(adapter / reward_uncertainty.FILE, "pt") as file:
        assert file.metadata() == {"prior_precision": "1.0", "pairs": str(len(pairs))}
    median = reward_uncertainty.uncertainty(features.double(), **expected).median().item()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["uncertainty_training_median"] == pytest.approx(median, rel=0.02)


def test_resume_from_checkpoint_reaches_the_same_adapter(trained, tmp_path):
    """Drop the last checkpoint and the adapter, resume from checkpoint-3: the same weights come out."""
    recipe, output_dir, sft = trained
    straight = load_file(output_dir / "adapter" / "adapter_model.safetensors")
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(output_dir, resumed_dir, ignore=shutil.ignore_patterns("checkpoint-6", "adapter", "wandb"))
    resumed_recipe = tmp_path / "resumed.yaml"
    resumed_recipe.write_text(recipe.read_text().replace(str(output_dir), str(resumed_dir)))
    result = run(reward_command("--config", str(resumed_recipe), "--sft_adapter", str(sft), "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((resumed_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [2, 4, 6]
    resumed = load_file(resumed_dir / "adapter" / "adapter_model.safetensors")
    at_three = load_file(resumed_dir / "checkpoint-3" / "adapter_model.safetensors")
    assert {k: v.dtype for k, v in resumed.items()} == {k: v.dtype for k, v in straight.items()}

    def distance(x, y):
        return sum(((x[k].float() - y[k].float()) ** 2).sum().item() for k in x) ** 0.5

    # Same data order, optimizer moments and RNG: the uninterrupted run's weights up to bf16 rounding (measured
    # 0.005), while steps 4-6 moved them well away from checkpoint-3 (measured 0.10).
    assert distance(at_three, straight) > 10 * distance(resumed, straight)


def test_a_warm_start_begins_as_the_reward_model_it_continues(trained, tmp_path):
    """init_adapter (the pipeline's reward_warm_start): before any step the held-out pairs score exactly as the init
    adapter scored them after its training; at learning rate 0 the saved LoRA and score head are the init adapter's
    bit for bit; the manifest names it as the parent it started from. With init_from_sft too: exit 2."""
    recipe, output_dir, sft = trained
    init = output_dir / "adapter"
    warm = tmp_path / "warm"
    args = ["--config", str(recipe), "--init_adapter", str(init), "--output_dir", str(warm), "--max_steps", "2"]
    result = run(reward_command(*args, "--learning_rate", "0", "--save_steps", "10"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warm start from" in result.stdout
    before, after = (json.loads((d / "metrics.json").read_text()) for d in (warm, output_dir))
    assert before["base_eval_accuracy"] == after["eval_accuracy"]
    assert before["base_eval_mean_margin"] == pytest.approx(after["eval_mean_margin"], abs=1e-5)
    started, saved = (
        load_file(init / "adapter_model.safetensors"),
        load_file(warm / "adapter" / "adapter_model.safetensors"),
    )
    assert "base_model.model.score.weight" in saved and saved.keys() == started.keys()
    assert all(torch.equal(saved[k].float(), started[k].float()) for k in saved)
    manifest = json.loads((warm / "adapter" / "workbench.json").read_text())
    assert {"kind": "adapter", "stage": "reward", "path": str(init.resolve()), "role": "init"} in manifest["parents"]

    both = ["--init_adapter", str(init), "--init_from_sft", "true", "--sft_adapter", str(sft)]
    both = run(reward_command("--config", str(recipe), "--output_dir", str(tmp_path / "both"), *both))
    assert both.returncode == 2 and "Traceback" not in both.stderr
    assert "init_adapter: expected one starting point for the reward LoRA; found init_from_sft: true" in both.stderr


def test_score_command_scores_and_ranks_candidates(trained, tmp_path):
    _, output_dir, _ = trained
    candidates = tmp_path / "candidates.jsonl"
    rows = [
        {
            "prompt_id": "p1",
            "prompt": [{"role": "user", "content": "How do I polish shoes?"}],
            "completions": ["Clean them, then polish and buff them.", "No idea", "Figure it out yourself."],
        },
        {"prompt_id": "p2", "prompt": [{"role": "user", "content": "Plan a picnic."}], "completions": ["Sure.", "No"]},
    ]
    candidates.write_text("".join(json.dumps(r) + "\n" for r in rows))
    scored_path = tmp_path / "out" / "scored.jsonl"
    adapter = output_dir / "adapter"
    result = run(
        reward_command(
            "score",
            "--adapter",
            str(adapter),
            "--input",
            str(candidates),
            "--output",
            str(scored_path),
            "--batch_size",
            "2",
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scored = [json.loads(line) for line in scored_path.read_text().splitlines()]
    assert [r["prompt_id"] for r in scored] == ["p1", "p2"]
    for row in scored:
        assert len(row["scores"]) == len(row["completions"]) and all(math.isfinite(s) for s in row["scores"])
        assert sorted(row["ranking"]) == list(range(len(row["completions"])))
        assert [row["scores"][i] for i in row["ranking"]] == sorted(row["scores"], reverse=True)
        assert row["reward_model"] == str(adapter.resolve()) and row["agent"] == f"{output_dir.parent.name}/run"
        assert row["uncertainty"] == pytest.approx(ranking_uncertainty([row["scores"]]))
    assert not list(scored_path.parent.glob(".*tmp"))

    # Single completions, scored one by one, give the same numbers as inside a batch of candidates.
    singles = tmp_path / "singles.jsonl"
    singles.write_text(
        "".join(json.dumps({"prompt": rows[0]["prompt"], "completion": c}) + "\n" for c in rows[0]["completions"])
    )
    out = tmp_path / "singles-scored.jsonl"
    result = run(
        reward_command(
            "score", "--adapter", str(adapter), "--input", str(singles), "--output", str(out), "--batch_size", "1"
        )
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single_scores = [json.loads(line)["score"] for line in out.read_text().splitlines()]
    assert single_scores == pytest.approx(scored[0]["scores"], abs=1e-4)


def test_score_with_an_ensemble_averages_members_and_counts_their_disagreement(trained, tmp_path):
    """Two reward models that order every pair oppositely (the second's score head is the first's negated): the
    ensemble's scores are 0, each member's are kept, and the uncertainty is 1 bit though each member alone is sure."""
    from safetensors.torch import save_file

    _, output_dir, _ = trained
    adapter = output_dir / "adapter"
    negated = tmp_path / "negated" / "adapter"
    shutil.copytree(adapter, negated)
    weights = load_file(negated / "adapter_model.safetensors")
    weights["base_model.model.score.weight"] = -weights["base_model.model.score.weight"]
    save_file(weights, negated / "adapter_model.safetensors", metadata={"format": "pt"})
    candidates = tmp_path / "candidates.jsonl"
    row = {"prompt_id": "p1", "prompt": [{"role": "user", "content": "How do I polish shoes?"}]}
    row["completions"] = ["Clean them, then polish and buff them.", "No idea", "Figure it out yourself."]
    candidates.write_text(json.dumps(row) + "\n")
    outputs = {}
    for name, adapters in {"single": [adapter], "ensemble": [adapter, negated]}.items():
        outputs[name] = tmp_path / f"{name}.jsonl"
        args = [arg for path in adapters for arg in ("--adapter", str(path))]
        result = run(reward_command("score", *args, "--input", str(candidates), "--output", str(outputs[name])))
        assert result.returncode == 0, result.stderr[-3000:]
    single = json.loads(outputs["single"].read_text())
    ensemble = json.loads(outputs["ensemble"].read_text())
    assert ensemble["member_scores"][0] == pytest.approx(single["scores"], abs=1e-5)
    assert ensemble["member_scores"][1] == pytest.approx([-s for s in single["scores"]], abs=1e-5)
    assert ensemble["scores"] == pytest.approx([0.0, 0.0, 0.0], abs=1e-5)
    assert ensemble["uncertainty"] == pytest.approx(1.0, abs=1e-6) and single["uncertainty"] < 1.0
    assert ensemble["agent"] == f"{output_dir.parent.name}/run+{tmp_path.name}/negated"
    assert ensemble["reward_model"] == [str(adapter.resolve()), str(negated.resolve())]


def test_rankings_train_as_groups_and_resume(tmp_path, tiny_model_path):
    """group_rankings: 5 rankings of 3 answers (15 pairs) are 5 training rows; 2 steps of 2 rankings train, save and
    resume from the step-1 checkpoint to the same adapter."""
    data = tmp_path / "rankings.jsonl"
    rows = []
    for p in range(5):
        answers = [f"Answer {p} is long and ends well.", f"answer {p}", f"{p} {p} {p}"]
        for i, j in ((0, 1), (1, 2), (0, 2)):
            rows.append({"prompt": f"Question {p}?", "chosen": answers[i], "rejected": answers[j], "margin": j - i})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\ndtype: float32\nbf16: false\ndatasets: [{{path: {data}}}]\n"
        f"eval_datasets: [{{path: {BUNDLED_PREFERENCES}, where: {{split: test}}, max_samples: 8}}]\n"
        "group_rankings: true\nper_device_train_batch_size: 2\nmax_steps: 2\nsave_steps: 1\nlearning_rate: 1.0e-3\n"
        f"max_length: 256\ndataloader_num_workers: 0\noutput_dir: {tmp_path / 'o'}\n"
    )
    result = run(reward_command("--config", str(recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "workbench reward: 5 rankings (groups of pairs sharing answers) per epoch" in result.stdout
    assert "workbench reward: head posterior from 15 pairs over 15 answers" in result.stdout  # read from the groups
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["global_step"] == 2 and metrics["eval_pairs"] > 0
    first = load_file(tmp_path / "o" / "adapter" / "adapter_model.safetensors")
    shutil.rmtree(tmp_path / "o" / "checkpoint-2")
    for name in ("adapter", "metrics.json"):
        target = tmp_path / "o" / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    again = run(reward_command("--config", str(recipe), "--resume"))
    assert again.returncode == 0, again.stderr[-3000:]
    second = load_file(tmp_path / "o" / "adapter" / "adapter_model.safetensors")
    at_one = load_file(tmp_path / "o" / "checkpoint-1" / "adapter_model.safetensors")

    def distance(x, y):
        return sum(((x[k].float() - y[k].float()) ** 2).sum().item() for k in x) ** 0.5

    assert first.keys() == second.keys()
    assert distance(at_one, first) > 10 * distance(second, first)  # step 2 again, up to bf16 rounding


def test_a_negative_prior_precision_exits_2_and_0_saves_no_posterior(trained, tmp_path):
    recipe, _, sft = trained
    result = run(reward_command("--config", str(recipe), "--uncertainty_prior_precision", "-1"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "uncertainty_prior_precision: expected a number >= 0 (0 saves no posterior); found -1.0" in result.stderr
    output_dir = tmp_path / "none"
    command = ["--config", str(recipe), "--sft_adapter", str(sft), "--output_dir", str(output_dir), "--max_steps", "1"]
    result = run(reward_command(*command, "--uncertainty_prior_precision", "0", "--save_steps", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert (output_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not (output_dir / "adapter" / "reward_uncertainty.safetensors").exists()
    assert "uncertainty_training_median" not in json.loads((output_dir / "metrics.json").read_text())


def test_missing_chosen_column_exits_2_naming_it(tmp_path, tiny_model_path):
    data = tmp_path / "bad.jsonl"
    data.write_text(json.dumps({"prompt": "Hi", "answer": "Hello.", "rejected": "Go away."}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model_name_or_path: tiny-llama\noutput_dir: {tmp_path / 'o'}\ndatasets: [{{path: {data}}}]\n")
    result = run(reward_command("--config", str(recipe)))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "missing column(s) ['chosen']" in result.stderr and str(data) in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o" / "adapter").exists()


def test_sft_adapter_on_another_base_exits_2(tmp_path, labeled_data, tiny_model_path):
    from workbench.modeling import adapters

    sft = tmp_path / "sft"
    adapters.AdapterManifest(
        stage="sft", base_model={"name_or_path": "tiny-qwen2", "content_hash": "sha256:other"}, peft_method="lora"
    ).write(sft)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=labeled_data, max_steps=1, save_steps=10, output_dir=tmp_path / "o"))
    result = run(reward_command("--config", str(recipe), "--sft_adapter", str(sft)))
    assert result.returncode == 2
    assert "trained on base 'tiny-qwen2'" in result.stderr and "Traceback" not in result.stderr


def test_score_rejects_unknown_columns_and_sft_adapters(trained, tmp_path):
    _, output_dir, sft = trained
    data = tmp_path / "x.jsonl"
    data.write_text(json.dumps({"question": "Hi"}) + "\n")
    args = ["--input", str(data), "--output", str(tmp_path / "o.jsonl")]
    result = run(reward_command("score", "--adapter", str(output_dir / "adapter"), *args))
    assert result.returncode == 2 and "prompt+completions" in result.stderr and "['question']" in result.stderr
    data.write_text(json.dumps({"prompt": "Hi", "completion": "Hello."}) + "\n")
    result = run(reward_command("score", "--adapter", str(sft), *args))
    assert result.returncode == 2 and "found a policy adapter (CAUSAL_LM" in result.stderr


def test_pairwise_metrics_accuracy_margin_and_calibration():
    margins = [3.0, 2.5, -2.5, 0.1, -0.1, 0.0]
    metrics = pairwise_metrics(margins, bins=5)
    assert metrics["pairs"] == 6 and metrics["accuracy"] == pytest.approx(3 / 6)
    assert metrics["accuracy_stderr"] == pytest.approx(math.sqrt(0.25 / 6))
    assert metrics["mean_margin"] == pytest.approx(sum(margins) / 6)
    table = metrics["calibration"]
    assert [b["pairs"] for b in table] == [3, 0, 0, 0, 3]  # |m| <= 0.1 -> 0.5-0.6; |m| >= 2.5 -> 0.9-1.0
    top = table[-1]
    assert top["accuracy"] == pytest.approx(2 / 3)
    sigmoid = [1 / (1 + math.exp(-abs(m))) for m in margins]
    expected_ece = 3 / 6 * abs(2 / 3 - sum(sigmoid[:3]) / 3) + 3 / 6 * abs(1 / 3 - sum(sigmoid[3:]) / 3)
    assert metrics["ece"] == pytest.approx(expected_ece)
    perfect = pairwise_metrics([50.0] * 4, bins=10)
    assert perfect["accuracy"] == 1.0 and perfect["ece"] == pytest.approx(0.0, abs=1e-9)


def test_preference_loader_checks_columns_kinds_and_margins(tmp_path):
    from workbench.data.preference_data import load_preferences

    def write(name, rows):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    good = write("good.jsonl", [{"prompt": "Q", "chosen": "A.", "rejected": "b", "margin": 2}] * 3)
    dataset, kind, sources = load_preferences([{"path": good}], "datasets", 0, margin_scale=0.5)
    assert kind == "standard" and dataset["margin"] == [1.0] * 3 and sources[0]["rows"] == 3
    dataset, _, _ = load_preferences([{"path": good}], "datasets", 0, use_margin=False)
    assert "margin" not in dataset.column_names
    no_margin = write("plain.jsonl", [{"prompt": "Q", "chosen": "A.", "rejected": "b"}] * 2)
    mixed, _, _ = load_preferences([{"path": good}, {"path": no_margin}], "datasets", 0)
    assert sorted(mixed["margin"]) == [0.0, 0.0, 2.0, 2.0]  # equal weights, no row repeated; no margin means 0
    cases = {
        "missing column(s) ['rejected']": [{"prompt": "Q", "chosen": "A."}],
        "column 'chosen' is empty": [{"prompt": "Q", "chosen": "", "rejected": "b"}],
        "mixes message lists and plain strings": [
            {"prompt": "Q", "chosen": [{"role": "assistant", "content": "A."}], "rejected": "b"}
        ],
        "'margin' must hold numbers": [{"prompt": "Q", "chosen": "A.", "rejected": "b", "margin": "big"}],
        "row 2 has the same answer as chosen and rejected": [
            {"prompt": "Q", "chosen": "A.", "rejected": "b"},
            {"prompt": "Q", "chosen": "A.", "rejected": "A."},
        ],
    }
    for message, rows in cases.items():
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_preferences([{"path": write("bad.jsonl", rows)}], "datasets", 0)
    with pytest.raises(UserError, match="templates are for SFT"):
        load_preferences([{"path": good, "template": "{prompt}"}], "datasets", 0)


def test_held_out_split_keeps_each_prompt_on_one_side():
    import datasets

    from workbench.data.preference_data import held_out_split

    # 10 prompts with 1..10 pairs each (55 pairs): pairs of one prompt share answers, so they must not be split
    rows = [
        {"prompt": [{"role": "user", "content": f"q{p}"}], "chosen": f"a{p}.{i}", "rejected": f"b{p}.{i}"}
        for p in range(10)
        for i in range(p + 1)
    ]
    dataset = datasets.Dataset.from_list(rows)
    train, held = held_out_split(dataset, 0.2, seed=3)
    train_prompts = {r[0]["content"] for r in train["prompt"]}
    held_prompts = {r[0]["content"] for r in held["prompt"]}
    assert not train_prompts & held_prompts and len(train_prompts | held_prompts) == 10
    assert len(train) + len(held) == 55 and len(held) >= 11  # whole prompts until a fifth of the rows is reached
    assert held_out_split(dataset, 0.2, seed=3)[1]["chosen"] == held["chosen"]  # seeded
    assert len(held_out_split(dataset, 5, seed=0)[1]) >= 5  # a count, not a fraction
    plain = dataset.remove_columns("prompt")
    assert [len(part) for part in held_out_split(plain, 0.2, seed=0)] == [44, 11]  # no prompt: a row split
    with pytest.raises(UserError, match="takes all 10 prompts"):
        held_out_split(dataset, 54, seed=0)


@pytest.mark.slow
def test_default_model_learns_the_rubric(tmp_path, default_model_path):
    """The real recipe on the embedded default: held-out pairwise accuracy clearly above chance."""
    recipe = (ROOT / "recipes" / "smollm2-135m" / "reward.yaml").read_text()
    recipe = recipe.replace("bundled:preferences", str(BUNDLED_PREFERENCES))
    recipe = recipe.replace("output_dir: outputs/smollm2-135m/reward", f"output_dir: {tmp_path / 'out'}")
    path = tmp_path / "reward.yaml"
    path.write_text(recipe)
    # 5 of the recipe's 16 steps on the float32 base, as the quickstart trains it (load_in_4bit: false; the 4-bit
    # path is tested on the tiny model): 2 min 17 s on an AVX2-only 2-core CPU, 0.95 held-out accuracy there
    # (on the recipe's NF4 base: 3 min 49 s to 5 min, 0.933)
    command = reward_command("--config", str(path), "--max_steps", "5", "--save_steps", "5", "--load_in_4bit", "false")
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["eval_pairs"] >= 50  # the recipe holds out 60 pairs
    assert metrics["eval_accuracy"] >= 0.75, metrics


def test_init_from_sft_without_an_sft_lora_exits_2_naming_the_key(tmp_path, labeled_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE.format(data=labeled_data, max_steps=1, save_steps=10, output_dir=tmp_path / "o"))
    result = run(reward_command("--config", str(recipe), "--init_from_sft", "true", "--use_peft", "true"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "init_from_sft: true needs sft_adapter" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()
