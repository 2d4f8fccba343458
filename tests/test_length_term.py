"""The reward model's length term: a learned w * (length difference) in the training loss that the saved head leaves
out (workbench/modeling/length_term.py)."""

from __future__ import annotations

import json

import pytest
import torch
from test_reward_stage import reward_command, run

from workbench.modeling.length_term import LengthTermMixin


def test_the_term_is_w_times_the_length_difference_per_10_tokens():
    class Base:  # what the mixin reads of a Trainer
        is_deepspeed_enabled = False

        def __init__(self, *args, **kwargs):
            self.callbacks = []

        def add_callback(self, callback):
            self.callbacks.append(callback)

    class Trainer(LengthTermMixin, Base):
        pass

    trainer = Trainer(length_term_learning_rate=0.1)
    trainer.length_weight.data.fill_(2.0)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])  # 3, 5 and 2 tokens
    term = trainer.pair_length_term(mask, torch.tensor([[0, 1], [1, 2]]))
    assert term.tolist() == pytest.approx([2.0 * (3 - 5) / 10, 2.0 * (5 - 2) / 10])
    assert Trainer(length_term_learning_rate=None).length_weight is None  # off: no term


def test_the_decorrelation_is_the_cosine_with_the_head_s_norm_floored():
    """Length differences (-2, 3): above the floor (RMS score difference 1, here a norm of sqrt(2)) the loss is the
    |cosine| at any scale; below it, |d . l| / (|l| sqrt(2)). A cosine's gradient grows as the head's scores shrink
    (it would push a fresh head about); the floored loss's gradient is |l / |l|| / sqrt(2) at any small scale."""

    class Trainer(LengthTermMixin):
        is_deepspeed_enabled = False

        def add_callback(self, callback):
            pass

    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])  # 3, 5 and 2 tokens
    pairs = torch.tensor([[0, 1], [1, 2]])  # length differences -2 and 3
    floored = Trainer(length_term_learning_rate=0.1, length_decorrelation_floor=1.0)
    cosine = 0.4 / 13**0.5 / 0.05**0.5  # d = (0.1, 0.2): d . l = 0.4
    loss, correlation = floored.head_length_correlation(torch.tensor([0.1, 0.2]), mask, pairs)
    assert correlation.item() == pytest.approx(cosine)
    assert loss.item() == pytest.approx(0.4 / 13**0.5 / 2**0.5)
    loss, correlation = floored.head_length_correlation(torch.tensor([10.0, 20.0]), mask, pairs)
    assert loss.item() == pytest.approx(cosine) and correlation.item() == pytest.approx(cosine)

    def gradient_norm(trainer, scale: float) -> float:
        small = torch.tensor([0.1 * scale, 0.2 * scale], requires_grad=True)
        trainer.head_length_correlation(small, mask, pairs)[0].backward()
        return small.grad.norm().item()

    plain = Trainer(length_term_learning_rate=0.1, length_decorrelation_floor=0.0)  # the cosine itself
    assert gradient_norm(plain, 1e-3) == pytest.approx(1e3 * gradient_norm(plain, 1.0))
    assert gradient_norm(floored, 1e-3) == pytest.approx(gradient_norm(floored, 1.0)) == pytest.approx(2**-0.5)
    loss, correlation = floored.head_length_correlation(torch.tensor([0.1, 0.2]), mask[[0, 0, 0]], pairs)
    assert loss.item() == 0 and correlation.item() == 0  # no length difference: nothing to decorrelate


def toy_trainer(tmp_path, steps: int):
    """A transformers Trainer with the mixin whose loss is model.a * x + w: every step w's gradient is exactly 1."""
    from transformers import Trainer, TrainingArguments

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.zeros(()))

    class ToyTrainer(LengthTermMixin, Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            return (model.a * inputs["x"]).sum() + self.length_weight

    args = TrainingArguments(
        output_dir=str(tmp_path / "toy"),
        max_steps=steps,
        learning_rate=0.1,
        optim="sgd",
        lr_scheduler_type="constant",
        per_device_train_batch_size=1,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
    )
    data = [{"x": 1.0}] * steps

    def collate(rows):
        return {"x": torch.tensor([row["x"] for row in rows])}

    return ToyTrainer(model=Toy(), args=args, train_dataset=data, data_collator=collate, length_term_learning_rate=0.1)


def test_w_steps_like_a_parameter_and_resumes(tmp_path):
    """w is outside the model, so nothing in the Trainer clears its gradient: the mixin does. With SGD at its rate 0.1
    and a gradient of 1 per step, 3 steps give w = -0.3 (a gradient summed over steps would give -0.6); each checkpoint
    carries w, and a run resumed from step 2 ends where the whole run did."""
    trainer = toy_trainer(tmp_path, 3)
    trainer.train()
    assert trainer.length_weight.item() == pytest.approx(-0.3)
    saved = json.loads((tmp_path / "toy" / "checkpoint-2" / "length_term.json").read_text())
    assert saved["length_weight"] == pytest.approx(-0.2)
    resumed = toy_trainer(tmp_path, 3)
    resumed.train(resume_from_checkpoint=str(tmp_path / "toy" / "checkpoint-2"))
    assert resumed.length_weight.item() == pytest.approx(-0.3)


def rows(prompts: int = 16) -> list[dict]:
    """Rankings where length is all there is: the chosen answer is the rejected one cut short."""
    long = "It depends on the weather and on the time of day and on many other things you could name"
    return [
        {"prompt": f"Question number {p}?", "chosen": f"Answer {p}.", "rejected": f"Answer {p}. {long}."}
        for p in range(prompts)
    ]


def train(tmp_path, name: str, data, *extra: str):
    recipe = tmp_path / f"{name}.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\ndtype: float32\nbf16: false\ndatasets: [{{path: {data}}}]\n"
        "eval_split_size: 0\nper_device_train_batch_size: 4\nmax_steps: 6\nsave_steps: 3\nlearning_rate: 1.0e-3\n"
        f"max_length: 64\nseed: 1\ndataloader_num_workers: 0\noutput_dir: {tmp_path / name}\n" + "".join(extra)
    )
    result = run(reward_command("--config", str(recipe)))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def test_with_the_term_the_length_preference_goes_to_w_not_to_the_head(tmp_path, tiny_model_path):
    """Chosen answers are always shorter. Without the term the head learns to prefer the short answer (its margin
    on the training pairs grows); with it, w turns negative (shorter preferred) and the head learns less of it. The
    checkpoints carry w, and both ways of batching pairs (one row per pair, rankings as groups) train it."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows()))
    plain = train(tmp_path, "plain", data)
    termed = train(tmp_path, "termed", data, "length_term: true\nlength_term_learning_rate: 0.5\n")
    grouped = train(
        tmp_path, "grouped", data, "length_term: true\nlength_term_learning_rate: 0.5\ngroup_rankings: true\n"
    )
    assert "length_weight" not in plain
    assert termed["length_weight"] < -0.5 and grouped["length_weight"] < -0.5
    saved = json.loads((tmp_path / "termed" / "checkpoint-3" / "length_term.json").read_text())["length_weight"]
    assert termed["length_weight"] < saved < 0  # still moving at step 3
    manifest = json.loads((tmp_path / "termed" / "adapter" / "workbench.json").read_text())
    assert manifest["extra"]["length_term"] == termed["length_weight"]
    head = {}  # the saved head's mean score margin, chosen - rejected, over the training pairs
    for name in ("plain", "termed"):
        scores = tmp_path / f"{name}-scores.jsonl"
        adapter = str(tmp_path / name / "adapter")
        result = run(reward_command("score", "--adapter", adapter, "--input", str(data), "--output", str(scores)))
        assert result.returncode == 0, result.stderr[-3000:]
        scored = [json.loads(line) for line in scores.read_text().splitlines()]
        head[name] = sum(r["score_chosen"] - r["score_rejected"] for r in scored) / len(scored)
    assert head["plain"] > 0.5  # the head alone learned "shorter is better"
    assert head["termed"] < 0.5 * head["plain"]  # with the term, w took most of it
