"""Bad input, every command: one line naming the file, line or key, exit 2, no traceback, nothing finished-looking.

The project promise for bad input: "one line naming the file, line (1-based) or key, what was expected and what was
found; exit 2; no traceback; nothing half-written left looking finished; a finished result is never overwritten
without --overwrite". Each case below runs the real command in-process through `workbench.cli.main(argv)` (the
console script's function) and checks that promise: return code 2, no "Traceback" and no argparse usage on stderr,
the error is the last thing on stderr and one line, it holds the file/key/line the case names, the command's output
folder holds no finished result, and files that were there before are unchanged.

The corpus covers recipes (missing, not UTF-8, YAML syntax errors, not a mapping, unknown keys, values of the wrong
type), sizes a library divides by or iterates with (batch sizes, gradient accumulation, K candidates, PPO mini-
batches), out-of-range hyper-parameters (negative learning rate, temperature, eval split), data files (missing local
paths, malformed and empty JSONL, not UTF-8, chosen equal to rejected, a max_length that drops every pair), adapters
(corrupted adapter_config.json, a reward adapter where a policy is expected), model configs for estimate-memory, output
folders holding a finished result or checkpoints, and the `label` subcommands' checks that need no Argilla server.

Errors should be caught before any model trains or samples: the guards below make `Trainer.train`, the PPO step,
sampling and the pipeline's stage runner raise, so a command that goes on to train on bad input fails its case
quickly instead of training. A new case that exposes a bug not fixed yet may be registered with `xfail="what
happens now"` (a strict xfail: the file fails once the bug is fixed, until the mark goes).
"""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

# Files that say a command finished: none may appear in (or as) the output of a refused command.
FINISHED = {
    "sft": ("adapter", "model", "metrics.json"),
    "reward": ("adapter", "model", "metrics.json"),
    "generate": ("candidates.jsonl", "manifest.json"),
    "ppo": ("adapter", "value_adapter", "metrics.json"),
    "dpo": ("adapter", "metrics.json"),
    "raft": ("adapter", "metrics.json", "samples.jsonl"),
    "eval": ("metrics.json", "report.md", "samples.jsonl"),
    "merge": ("workbench.json", "config.json", "model.safetensors"),
    "pipeline": ("report.md", "pipeline.json", "sft", "generate"),
    "label": ("preferences.jsonl", "manifest.json"),
}
TINY = {"model_name_or_path": "tiny-llama", "load_in_4bit": False, "dtype": "float32", "wandb_mode": "disabled"}


class ReachedWork(BaseException):
    """Raised by the guards: the command went on to train or sample instead of refusing its input.

    A BaseException, so that no `except Exception` in the code under test turns it into something else."""


@dataclass
class Case:
    """One bad input: the command line, what its one-line error must hold, and what must be left alone."""

    argv: list[str]
    expect: list = field(default_factory=list)  # each a fragment, or a tuple of alternatives (any one will do)
    forbid: tuple[str, ...] = ()  # fragments the error must not hold
    output: Path | None = None  # output folder (or file) that must hold no finished result
    unchanged: tuple[Path, ...] = ()  # files that must be left byte for byte as they were
    guard: bool = True  # stop the command before it trains or samples
    may_succeed: bool = False  # exit 0 with a finished result is fine too (valid input that used to crash)


class Inputs:
    """What a case builds its input from: a fresh folder, tiny data files, and (lazily) tiny adapters."""

    def __init__(self, tmp: Path, request):
        self.tmp = tmp
        self.out = tmp / "out"
        self._request = request

    @property
    def adapters(self) -> tuple[Path, Path]:
        """(sft, reward): tiny random-weight LoRA adapters with manifests, as the stages save them."""
        return self._request.getfixturevalue("tiny_adapters")

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def jsonl(self, name: str, rows: list[dict]) -> Path:
        return self.write(name, "".join(json.dumps(row) + "\n" for row in rows))

    def recipe(self, keys: dict, name: str = "recipe.yaml") -> Path:
        return self.write(name, yaml.safe_dump(keys, sort_keys=False))

    def sft_recipe(self, **keys) -> Path:
        return self.recipe({**TINY, "datasets": [{"path": str(self.chats())}], "output_dir": str(self.out), **keys})

    def reward_recipe(self, data: Path | None = None, **keys) -> Path:
        recipe = {**TINY, "bf16": False, "datasets": [{"path": str(data or self.pairs())}], "eval_split_size": 0}
        return self.recipe({**recipe, "max_steps": 1, "output_dir": str(self.out), **keys})

    def ppo_recipe(self, **keys) -> Path:
        sft, reward = self.adapters
        recipe = {**TINY, "sft_adapter": str(sft), "reward_adapter": str(reward)}
        recipe |= {"prompts": [{"path": str(self.prompts())}], "total_steps": 1, "batch_size": 2}
        recipe |= {"mini_batch_size": 2, "max_new_tokens": 3}
        return self.recipe({**recipe, "output_dir": str(self.out), **keys})

    def dpo_recipe(self, data: Path | None = None, **keys) -> Path:
        recipe = {**TINY, "bf16": False, "sft_adapter": str(self.adapters[0]), "eval_split_size": 0}
        recipe |= {"datasets": [{"path": str(data or self.pairs())}], "max_steps": 1, "max_length": 64}
        return self.recipe({**recipe, "output_dir": str(self.out), **keys})

    def raft_recipe(self, **keys) -> Path:
        sft, reward = self.adapters
        recipe = {**TINY, "bf16": False, "sft_adapter": str(sft), "reward_adapter": str(reward)}
        recipe |= {"prompts": [{"path": str(self.prompts())}], "num_samples": 2, "max_new_tokens": 3, "max_steps": 1}
        return self.recipe({**recipe, "output_dir": str(self.out), **keys})

    def eval_recipe(self, **keys) -> Path:
        sft, reward = self.adapters
        recipe = {"policies": [{"name": "sft", "adapter": str(sft)}], "reward_adapter": str(reward)}
        recipe |= {"prompts": str(self.prompts()), "prompts_where": None, "max_new_tokens": 2}
        return self.recipe({**recipe, "wandb_mode": "disabled", "output_dir": str(self.out), **keys})

    def pipeline_recipe(self, **keys) -> Path:
        recipe = {"run_dir": str(self.out), "model_name_or_path": "tiny-llama", "argilla_home": str(self.tmp / "ag")}
        return self.recipe({**recipe, "wandb_mode": "disabled", **keys})

    def chats(self, name: str = "chats.jsonl") -> Path:
        turns = [
            [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i}."}] for i in range(4)
        ]
        return self.jsonl(name, [{"messages": messages} for messages in turns])

    def pairs(self, name: str = "pairs.jsonl", same_at: int | None = None) -> Path:
        rows = [
            {"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": f"no {i}"} for i in range(8)
        ]
        if same_at is not None:
            rows[same_at]["rejected"] = rows[same_at]["chosen"]
        return self.jsonl(name, rows)

    def prompts(self, name: str = "prompts.jsonl") -> Path:
        return self.jsonl(name, [{"prompt_id": f"p{i}", "prompt": f"Say {i}.", "split": "train"} for i in range(4)])

    def candidates(self, name: str = "candidates.jsonl") -> Path:
        rows = [{"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
        return self.jsonl(name, [{**row, "completions": ["Yes.", "No."]} for row in rows])

    def sft_adapter_copy(self, name: str = "sft-adapter") -> Path:
        """A copy of the SFT adapter that a case may damage (or a wrong command may overwrite)."""
        return Path(shutil.copytree(self.adapters[0], self.tmp / name))

    def corrupted_adapter(self) -> Path:
        """The SFT adapter with its adapter_config.json cut off mid-object (as an interrupted copy leaves it)."""
        adapter = self.sft_adapter_copy("corrupted")
        (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "r": ')
        return adapter


CASES: list = []


def case(case_id: str, xfail: str | None = None):
    """Register a case builder under a readable id; `xfail`: what happens today (a product bug to fix)."""

    def register(build):
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        CASES.append(pytest.param(build, id=case_id, marks=marks))
        return build

    return register


# ── recipes ──────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("recipe-missing-config-file")
def _(t: Inputs):
    return Case(["sft", "--config", str(t.tmp / "nowhere.yaml")], [str(t.tmp / "nowhere.yaml"), "does not exist"])


@case("recipe-config-flag-without-path")
def _(t: Inputs):
    return Case(["sft", "--config"], ["--config"])


@case("recipe-not-utf8")
def _(t: Inputs):
    recipe = t.write("latin1.yaml", "model_name_or_path: tiny-llama\n# entraîné\n".encode("latin-1"))
    return Case(["sft", "--config", str(recipe)], [str(recipe), ("UTF-8", "utf-8")], output=t.out)


@case("recipe-yaml-syntax-error")
def _(t: Inputs):
    recipe = t.write("broken.yaml", "model_name_or_path: tiny-llama\nlearning_rate: 1.0e-4\n  max_steps: 3\n")
    return Case(["sft", "--config", str(recipe)], [str(recipe), (f"{recipe}:3", "line 3")], output=t.out)


@case("recipe-not-a-mapping")
def _(t: Inputs):
    recipe = t.write("list.yaml", "- model_name_or_path: tiny-llama\n- max_steps: 3\n")
    return Case(["sft", "--config", str(recipe)], [str(recipe), "mapping"], output=t.out)


@case("sft-unknown-key")
def _(t: Inputs):
    recipe = t.write("typo.yaml", f"model_name_or_path: tiny-llama\noutput_dir: {t.out}\nlearning_rat: 0.1\n")
    return Case(["sft", "--config", str(recipe)], [f"{recipe}:3", "'learning_rat'", "learning_rate"], output=t.out)


@case("sft-wrong-type")
def _(t: Inputs):
    recipe = t.write("type.yaml", f"model_name_or_path: tiny-llama\nlearning_rate: fast\noutput_dir: {t.out}\n")
    return Case(["sft", "--config", str(recipe)], [str(recipe), "learning_rate", "fast"], output=t.out)


@case("eval-wrong-type-policies")
def _(t: Inputs):
    recipe = t.write("eval.yaml", f"policies: sft\nreward_adapter: {t.tmp}\noutput_dir: {t.out}\n")
    return Case(["eval", "--config", str(recipe)], [str(recipe), "policies"], output=t.out)


@case("pipeline-wrong-type")
def _(t: Inputs):
    recipe = t.write("pipeline.yaml", f"run_dir: {t.out}\nnum_prompts: many\n")
    return Case(["pipeline", "--config", str(recipe)], [str(recipe), "num_prompts", "many"], output=t.out)


@case("chat-wrong-type-flag")
def _(t: Inputs):
    return Case(["chat", "--prompt", "hi", "--max_new_tokens", "many"], ["--max_new_tokens", "many"])


@case("generate-unknown-flag")
def _(t: Inputs):
    return Case(
        ["generate", "--num_completionz", "3", "--output_dir", str(t.out)], ["--num_completionz"], output=t.out
    )


# ── SFT ──────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("sft-zero-batch-size")
def _(t: Inputs):
    recipe = t.sft_recipe(per_device_train_batch_size=0)
    return Case(["sft", "--config", str(recipe)], ["per_device_train_batch_size"], output=t.out)


@case("sft-zero-gradient-accumulation")
def _(t: Inputs):
    recipe = t.sft_recipe(gradient_accumulation_steps=0)
    return Case(["sft", "--config", str(recipe)], ["gradient_accumulation_steps"], output=t.out)


@case("sft-negative-learning-rate")
def _(t: Inputs):
    recipe = t.sft_recipe(learning_rate=-0.1)
    return Case(["sft", "--config", str(recipe)], ["learning_rate"], output=t.out)


@case("sft-eval-split-above-one")
def _(t: Inputs):
    recipe = t.sft_recipe(eval_split_size=1.5)
    return Case(["sft", "--config", str(recipe)], ["eval_split_size"], output=t.out)


@case("sft-missing-local-dataset")
def _(t: Inputs):
    recipe = t.sft_recipe(datasets=[{"path": "data/train.jsonl"}])
    expect = ["data/train.jsonl", ("does not exist", "not found", "no such file")]
    return Case(["sft", "--config", str(recipe)], expect, forbid=("Hub", "hub"), output=t.out)


@case("sft-malformed-jsonl-line")
def _(t: Inputs):
    rows = t.chats().read_text().splitlines()
    data = t.write("broken.jsonl", "\n".join([rows[0], rows[1], '{"messages": [oops}', *rows[2:]]) + "\n")
    recipe = t.sft_recipe(datasets=[{"path": str(data)}])
    return Case(["sft", "--config", str(recipe)], [(f"{data}:3", f"{data} line 3", "line 3")], output=t.out)


@case("sft-empty-jsonl")
def _(t: Inputs):
    data = t.write("data/train.jsonl", "")  # a name without "empty" in it: the message must say so
    recipe = t.sft_recipe(datasets=[{"path": str(data)}])
    return Case(["sft", "--config", str(recipe)], [str(data), ("empty", "no rows")], output=t.out)


@case("sft-dataset-weight-zero")
def _(t: Inputs):
    recipe = t.sft_recipe(datasets=[{"path": str(t.chats()), "weight": 0}])
    return Case(["sft", "--config", str(recipe)], ["datasets[0]", "weight"], output=t.out)


@case("sft-dataset-unreadable-suffix")
def _(t: Inputs):
    data = t.write("notes.txt", "hello\n")
    recipe = t.sft_recipe(datasets=[{"path": str(data)}])
    return Case(["sft", "--config", str(recipe)], ["datasets[0]", ".txt"], output=t.out)


@case("sft-finished-run-without-checkpoints")
def _(t: Inputs):
    finished = [t.write("out/adapter/workbench.json", '{"stage": "sft"}'), t.write("out/metrics.json", "{}")]
    finished.append(t.write("out/recipe.yaml", "# the finished run's recipe\n"))
    recipe = t.sft_recipe()
    return Case(["sft", "--config", str(recipe)], [str(t.out), "--overwrite"], unchanged=tuple(finished))


@case("sft-checkpoint-without-resume")
def _(t: Inputs):
    state = t.write("out/checkpoint-4/trainer_state.json", "{}")
    recipe = t.sft_recipe()
    return Case(["sft", "--config", str(recipe)], ["checkpoint-4", "--resume"], output=t.out, unchanged=(state,))


# ── generate ─────────────────────────────────────────────────────────────────────────────────────────────────────────
def generate_argv(t: Inputs, *extra: str) -> list[str]:
    base = ["generate", "--adapter", str(t.adapters[0]), "--prompts", str(t.prompts()), "--max_new_tokens", "2"]
    return [*base, "--load_in_4bit", "false", "--dtype", "float32", "--wandb_mode", "disabled", *extra]


@case("generate-zero-num-completions")
def _(t: Inputs):
    return Case(
        generate_argv(t, "--num_completions", "0", "--output_dir", str(t.out)), ["num_completions"], output=t.out
    )


@case("generate-skips-every-prompt")
def _(t: Inputs):
    argv = generate_argv(t, "--skip_prompts", "100000", "--output_dir", str(t.out))
    return Case(argv, ["no prompts left", "skipping the first 100000 of"], output=t.out)


@case("generate-negative-skip-prompts")
def _(t: Inputs):
    return Case(generate_argv(t, "--skip_prompts", "-1", "--output_dir", str(t.out)), ["skip_prompts"], output=t.out)


@case("generate-zero-batch-size")
def _(t: Inputs):
    return Case(generate_argv(t, "--batch_size", "0", "--output_dir", str(t.out)), ["batch_size"], output=t.out)


@case("generate-negative-temperature")
def _(t: Inputs):
    return Case(generate_argv(t, "--temperature", "-0.5", "--output_dir", str(t.out)), ["temperature"], output=t.out)


@case("generate-with-reward-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    argv = generate_argv(t, "--output_dir", str(t.out))
    argv[argv.index("--adapter") + 1] = str(reward)
    return Case(argv, [str(reward), ("SEQ_CLS", "reward adapter", "not a policy")], output=t.out)


@case("generate-corrupted-adapter-config")
def _(t: Inputs):
    adapter = t.corrupted_adapter()
    argv = generate_argv(t, "--output_dir", str(t.out))
    argv[argv.index("--adapter") + 1] = str(adapter)
    return Case(argv, [str(adapter / "adapter_config.json")], output=t.out)


@case("generate-missing-prompts-file")
def _(t: Inputs):
    argv = generate_argv(t, "--output_dir", str(t.out))
    argv[argv.index("--prompts") + 1] = "prompts/missing.jsonl"
    expect = ["prompts/missing.jsonl", ("does not exist", "not found", "no such file")]
    return Case(argv, expect, forbid=("Hub", "hub"), output=t.out)


@case("generate-malformed-prompts-line")
def _(t: Inputs):
    argv = generate_argv(t, "--output_dir", str(t.out))
    prompts = t.write("broken.jsonl", '{"prompt_id": "a", "prompt": "Hi.", "split": "train"}\n{"prompt_id": "b",\n')
    argv[argv.index("--prompts") + 1] = str(prompts)
    return Case(argv, [(f"{prompts}:2", "line 2")], output=t.out)


@case("generate-finished-candidates")
def _(t: Inputs):
    finished = (t.write("out/candidates.jsonl", '{"prompt_id": "a"}\n'), t.write("out/manifest.json", "{}"))
    return Case(generate_argv(t, "--output_dir", str(t.out)), [str(t.out), "--overwrite"], unchanged=finished)


# ── reward ───────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("reward-zero-batch-size")
def _(t: Inputs):
    recipe = t.reward_recipe(per_device_train_batch_size=0)
    return Case(["reward", "--config", str(recipe)], ["per_device_train_batch_size"], output=t.out)


@case("reward-max-length-drops-every-pair")
def _(t: Inputs):
    recipe = t.reward_recipe(max_length=4)
    return Case(["reward", "--config", str(recipe)], ["max_length"], output=t.out)


@case("reward-chosen-equals-rejected")
def _(t: Inputs):
    data = t.pairs(same_at=5)
    recipe = t.reward_recipe(data)
    expect = [str(data), (f"{data}:6", "line 6", "row 6"), "chosen"]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-eval-split-takes-every-prompt")
def _(t: Inputs):
    recipe = t.reward_recipe(eval_split_size=8)
    return Case(["reward", "--config", str(recipe)], ["eval_split_size"], output=t.out)


@case("reward-missing-sft-adapter")
def _(t: Inputs):
    recipe = t.reward_recipe(sft_adapter=str(t.tmp / "no-sft"))
    return Case(["reward", "--config", str(recipe)], [str(t.tmp / "no-sft"), "workbench.json"], output=t.out)


@case("reward-warm-start-from-a-policy")
def _(t: Inputs):
    sft = t.adapters[0]
    recipe = t.reward_recipe(init_adapter=str(sft))
    expect = ["init_adapter", str(sft), ("CAUSAL_LM", "policy adapter", "not a reward")]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-off-topic-pairs-without-prompts")
def _(t: Inputs):
    data = t.jsonl("no-prompt.jsonl", [{"chosen": f"A careful answer {i}.", "rejected": f"no {i}"} for i in range(4)])
    recipe = t.reward_recipe(data, off_topic_pairs=True)
    return Case(["reward", "--config", str(recipe)], ["off_topic_pairs", "prompt"], output=t.out)


@case("reward-zero-off-topic-pairs-per-prompt")
def _(t: Inputs):
    recipe = t.reward_recipe(off_topic_pairs=True, off_topic_pairs_per_prompt=0)
    expect = [f"{recipe}:", "off_topic_pairs_per_prompt", "whole number >= 1", "found 0"]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-more-off-topic-pairs-per-prompt-than-other-prompts")
def _(t: Inputs):
    recipe = t.reward_recipe(off_topic_pairs=True, off_topic_pairs_per_prompt=500)
    expect = ["off_topic_pairs_per_prompt", "expected 1 to", "found 500"]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-negative-length-decorrelation")
def _(t: Inputs):
    recipe = t.reward_recipe(length_term=True, length_decorrelation=-1.0)
    return Case(["reward", "--config", str(recipe)], ["length_decorrelation", ">= 0", "-1.0"], output=t.out)


@case("reward-negative-length-decorrelation-floor")
def _(t: Inputs):
    recipe = t.reward_recipe(length_term=True, length_decorrelation_floor=-0.5)
    return Case(["reward", "--config", str(recipe)], ["length_decorrelation_floor", ">= 0", "-0.5"], output=t.out)


@case("reward-zero-length-term-learning-rate")
def _(t: Inputs):
    recipe = t.reward_recipe(length_term=True, length_term_learning_rate=0.0)
    return Case(["reward", "--config", str(recipe)], ["length_term_learning_rate", "> 0", "0.0"], output=t.out)


@case("reward-zero-linear-head-l2")
def _(t: Inputs):
    recipe = t.reward_recipe(linear_head_fit=True, linear_head_l2=0.0)
    return Case(["reward", "--config", str(recipe)], [f"{recipe}:", "linear_head_l2", "> 0", "0.0"], output=t.out)


@case("reward-layer-beyond-the-base")
def _(t: Inputs):
    recipe = t.reward_recipe(reward_layer=3)  # tiny-llama has 2 decoder layers
    expect = [f"{recipe}:", "reward_layer", "decoder layer 1 to 2", "found 3"]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-nothing-to-train")
def _(t: Inputs):
    recipe = t.reward_recipe(train_after_head_fit=False)
    expect = [f"{recipe}:", "train_after_head_fit", "linear_head_fit: true"]
    return Case(["reward", "--config", str(recipe)], expect, output=t.out)


@case("reward-default-dtype-on-cpu")
def _(t: Inputs):
    """The default precision (4-bit, bfloat16 compute) on a CPU: train, or refuse in one line; never a dtype crash."""
    recipe = t.recipe(
        {
            "model_name_or_path": "tiny-llama",
            "datasets": [{"path": str(t.pairs())}],
            "eval_split_size": 0,
            "max_steps": 1,
            "per_device_train_batch_size": 2,
            "wandb_mode": "disabled",
            "output_dir": str(t.out),
        }
    )
    return Case(["reward", "--config", str(recipe)], [("dtype", "bf16", "bfloat16")], guard=False, may_succeed=True)


# ── reward average ───────────────────────────────────────────────────────────────────────────────────────────────────
def average_argv(t: Inputs, output: Path, *members: Path) -> list[str]:
    return ["reward", "average", *[a for m in members for a in ("--adapter", str(m))], "--output", str(output)]


@case("reward-average-existing-output")
def _(t: Inputs):
    written = t.write("averaged/adapter/workbench.json", "{}\n")
    argv = average_argv(t, written.parent, t.adapters[1], t.adapters[1].parent)
    return Case(argv, [str(written.parent), "--overwrite"], unchanged=(written,))


@case("reward-average-one-member")
def _(t: Inputs):
    output = t.tmp / "averaged" / "adapter"
    return Case(average_argv(t, output, t.adapters[1]), ["--adapter", "2 or more"], output=output.parent)


@case("reward-average-policy-adapter-as-member")
def _(t: Inputs):
    output = t.tmp / "averaged" / "adapter"
    sft, reward = t.adapters
    return Case(average_argv(t, output, reward, sft), [str(sft), "SEQ_CLS"], output=output.parent)


# ── reward score ─────────────────────────────────────────────────────────────────────────────────────────────────────
def score_argv(t: Inputs, output: Path, *extra: str) -> list[str]:
    scored = t.jsonl("completions.jsonl", [{"prompt": "Hi.", "completion": "Hello."}])
    base = ["reward", "score", "--adapter", str(t.adapters[1]), "--input", str(scored), "--output", str(output)]
    return [*base, "--device_map", "cpu", *extra]


@case("reward-score-existing-output")
def _(t: Inputs):
    output = t.write("scored.jsonl", '{"prompt": "Hi.", "completion": "Hello.", "score": 1.0}\n')
    return Case(score_argv(t, output), [str(output), ("--overwrite", "exists")], unchanged=(output,))


@case("reward-score-output-not-jsonl")
def _(t: Inputs):
    output = t.tmp / "scored.csv"
    return Case(score_argv(t, output), ["--output", str(output)], output=output)


@case("reward-score-zero-batch-size")
def _(t: Inputs):
    output = t.tmp / "scored.jsonl"
    return Case(score_argv(t, output, "--batch_size", "0"), ["--batch_size"], output=output)


@case("reward-score-missing-input")
def _(t: Inputs):
    output = t.tmp / "scored.jsonl"
    argv = score_argv(t, output)
    argv[argv.index("--input") + 1] = "inputs/missing.jsonl"
    expect = ["inputs/missing.jsonl", ("does not exist", "not found", "no such file")]
    return Case(argv, expect, forbid=("Hub", "hub"), output=output)


# ── PPO ──────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("ppo-zero-mini-batch-size")
def _(t: Inputs):
    return Case(["ppo", "--config", str(t.ppo_recipe(mini_batch_size=0))], ["mini_batch_size"], output=t.out)


@case("ppo-zero-gradient-accumulation")
def _(t: Inputs):
    recipe = t.ppo_recipe(gradient_accumulation_steps=0)
    return Case(["ppo", "--config", str(recipe)], ["gradient_accumulation_steps"], output=t.out)


@case("ppo-negative-learning-rate")
def _(t: Inputs):
    return Case(["ppo", "--config", str(t.ppo_recipe(learning_rate=-1e-4))], ["learning_rate"], output=t.out)


@case("ppo-zero-temperature")
def _(t: Inputs):
    return Case(["ppo", "--config", str(t.ppo_recipe(temperature=0.0))], ["temperature"], output=t.out)


@case("ppo-unknown-key")
def _(t: Inputs):
    recipe = t.ppo_recipe()
    recipe.write_text(recipe.read_text() + "kl_coeff: 0.1\n")
    line = len(recipe.read_text().splitlines())
    return Case(["ppo", "--config", str(recipe)], [f"{recipe}:{line}", "'kl_coeff'", "kl_coef"], output=t.out)


@case("ppo-missing-sft-adapter")
def _(t: Inputs):
    recipe = t.ppo_recipe(sft_adapter=str(t.tmp / "no-sft"))
    return Case(["ppo", "--config", str(recipe)], [str(t.tmp / "no-sft"), "workbench.json"], output=t.out)


@case("ppo-reward-adapter-as-policy-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    recipe = t.ppo_recipe(policy_adapter=str(reward))
    expect = ["policy_adapter", str(reward), ("SEQ_CLS", "reward adapter", "not a policy")]
    return Case(["ppo", "--config", str(recipe)], expect, output=t.out)


@case("ppo-reward-adapter-as-sft-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    recipe = t.ppo_recipe(sft_adapter=str(reward))
    expect = ["sft_adapter", str(reward), ("SEQ_CLS", "reward adapter", "not a policy")]
    return Case(["ppo", "--config", str(recipe)], expect, output=t.out)


@case("ppo-rloo-one-response-per-prompt")
def _(t: Inputs):
    recipe = t.ppo_recipe(advantage_estimator="rloo", rollouts_per_prompt=1)
    return Case(["ppo", "--config", str(recipe)], ["advantage_estimator rloo", "rollouts_per_prompt"], output=t.out)


@case("ppo-critic-free-with-a-critic-key")
def _(t: Inputs):
    recipe = t.ppo_recipe(advantage_estimator="reinforce++", value_learning_rate=1e-3)
    return Case(["ppo", "--config", str(recipe)], ["value_learning_rate", "reinforce++"], output=t.out)


# ── RAFT ─────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("raft-one-sample-per-prompt")
def _(t: Inputs):
    recipe = t.raft_recipe(num_samples=1)
    return Case(["raft", "--config", str(recipe)], ["num_samples", "at least 2", "got 1"], output=t.out)


@case("raft-no-reward-adapter")
def _(t: Inputs):
    recipe = t.raft_recipe(reward_adapter=None)
    return Case(["raft", "--config", str(recipe)], ["reward_adapter is required"], output=t.out)


@case("raft-policy-adapter-is-a-reward-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    recipe = t.raft_recipe(policy_adapter=str(reward))
    expect = ["policy_adapter", str(reward), ("SEQ_CLS", "reward adapter")]
    return Case(["raft", "--config", str(recipe)], expect, output=t.out)


@case("raft-missing-prompts-file")
def _(t: Inputs):
    missing = t.tmp / "no-such-prompts.jsonl"
    recipe = t.raft_recipe(prompts=[{"path": str(missing)}])
    return Case(["raft", "--config", str(recipe)], ["prompts[0]", str(missing)], output=t.out)


@case("raft-negative-temperature")
def _(t: Inputs):
    recipe = t.raft_recipe(temperature=-0.5)
    return Case(["raft", "--config", str(recipe)], ["temperature", "-0.5"], output=t.out)


# ── DPO ──────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("dpo-reward-adapter-as-sft-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    recipe = t.dpo_recipe(sft_adapter=str(reward))
    expect = ["sft_adapter", str(reward), ("SEQ_CLS", "reward adapter", "not a policy")]
    return Case(["dpo", "--config", str(recipe)], expect, output=t.out)


@case("dpo-no-sft-adapter")
def _(t: Inputs):
    recipe = t.dpo_recipe()
    recipe.write_text(recipe.read_text().replace("sft_adapter:", "# sft_adapter:"))
    return Case(["dpo", "--config", str(recipe)], ["sft_adapter is required"], output=t.out)


@case("dpo-lora-key-of-the-sft-stage")
def _(t: Inputs):
    recipe = t.dpo_recipe(lora_r=8)
    return Case(["dpo", "--config", str(recipe)], ["'lora_r'", "continues the SFT adapter"], output=t.out)


@case("dpo-chosen-equals-rejected")
def _(t: Inputs):
    data = t.pairs(same_at=2)
    recipe = t.dpo_recipe(data)
    expect = [str(data), (f"{data}:3", "line 3", "row 3"), "chosen"]
    return Case(["dpo", "--config", str(recipe)], expect, output=t.out)


@case("dpo-zero-batch-size")
def _(t: Inputs):
    return Case(
        ["dpo", "--config", str(t.dpo_recipe(per_device_train_batch_size=0))],
        ["per_device_train_batch_size"],
        output=t.out,
    )


# ── eval ─────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("eval-zero-batch-size")
def _(t: Inputs):
    return Case(["eval", "--config", str(t.eval_recipe(batch_size=0))], ["batch_size"], output=t.out)


@case("eval-best-of-one")
def _(t: Inputs):
    return Case(["eval", "--config", str(t.eval_recipe(best_of=1))], ["best_of"], output=t.out)


@case("eval-corrupted-policy-adapter-config")
def _(t: Inputs):
    adapter = t.corrupted_adapter()
    recipe = t.eval_recipe(policies=[{"name": "sft", "adapter": str(adapter)}])
    return Case(["eval", "--config", str(recipe)], [str(adapter / "adapter_config.json")], output=t.out)


# ── merge ────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("merge-into-existing-merged-model")
def _(t: Inputs):
    merged = (t.write("out/workbench.json", '{"stage": "merge"}'), t.write("out/config.json", "{}"))
    argv = ["merge", "--adapter", str(t.adapters[0]), "--output_dir", str(t.out), "--dtype", "float32"]
    return Case(argv, [str(t.out), "--overwrite"], unchanged=merged)


@case("merge-corrupted-adapter-config")
def _(t: Inputs):
    adapter = t.corrupted_adapter()
    argv = ["merge", "--adapter", str(adapter), "--output_dir", str(t.out), "--dtype", "float32"]
    return Case(argv, [str(adapter / "adapter_config.json")], output=t.out)


@case("merge-output-is-the-adapter")
def _(t: Inputs):
    sft = t.sft_adapter_copy()
    manifest = sft / "workbench.json"
    return Case(["merge", "--adapter", str(sft), "--output_dir", str(sft)], ["output_dir"], unchanged=(manifest,))


@case("merge-in-4bit")
def _(t: Inputs):
    argv = ["merge", "--adapter", str(t.adapters[0]), "--output_dir", str(t.out), "--load_in_4bit", "true"]
    return Case(argv, ["load_in_4bit"], output=t.out)


# ── chat ─────────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("chat-negative-temperature")
def _(t: Inputs):
    return Case(["chat", "--prompt", "hi", "--temperature", "-1"], ["temperature"])


@case("chat-missing-adapter-folder")
def _(t: Inputs):
    return Case(["chat", "--prompt", "hi", "--adapter", str(t.tmp / "nothing")], [str(t.tmp / "nothing")])


@case("chat-with-reward-adapter")
def _(t: Inputs):
    reward = t.adapters[1]
    argv = ["chat", "--prompt", "hi", "--adapter", str(reward), "--max_new_tokens", "2", "--load_in_4bit", "false"]
    return Case(argv, [str(reward), ("SEQ_CLS", "reward adapter", "not a policy")])


# ── estimate-memory ──────────────────────────────────────────────────────────────────────────────────────────────────
@case("estimate-memory-config-not-json")
def _(t: Inputs):
    config = t.write("model/config.json", '{"model_type": "llama",\n hidden_size: 64}\n')
    return Case(["estimate-memory", str(config)], [str(config), ("JSON", "not valid")])


@case("estimate-memory-config-without-hidden-size")
def _(t: Inputs):
    config = t.write("model/config.json", json.dumps({"model_type": "llama", "num_hidden_layers": 2}))
    return Case(["estimate-memory", str(config)], [str(config), "hidden_size"])


@case("estimate-memory-zero-batch")
def _(t: Inputs):
    sizes = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "vocab_size": 128}
    config = t.write("model/config.json", json.dumps(sizes))
    return Case(["estimate-memory", str(config), "--batch", "0"], ["--batch"])


@case("estimate-memory-missing-directory")
def _(t: Inputs):
    return Case(["estimate-memory", str(t.tmp / "no-model") + "/"], [str(t.tmp / "no-model")])


# ── pipeline ─────────────────────────────────────────────────────────────────────────────────────────────────────────
@case("pipeline-zero-num-candidates")
def _(t: Inputs):
    recipe = t.pipeline_recipe(num_candidates=0)
    return Case(["pipeline", "--config", str(recipe)], ["num_candidates"], output=t.out)


@case("pipeline-zero-sft-batch-size")
def _(t: Inputs):
    recipe = t.pipeline_recipe(overrides={"sft": {"per_device_train_batch_size": 0}})
    return Case(["pipeline", "--config", str(recipe)], ["per_device_train_batch_size"], output=t.out)


@case("pipeline-zero-ppo-mini-batch-size")
def _(t: Inputs):
    recipe = t.pipeline_recipe(overrides={"ppo": {"mini_batch_size": 0}})
    return Case(["pipeline", "--config", str(recipe)], ["mini_batch_size", str(recipe)], output=t.out)


@case("pipeline-unknown-key")
def _(t: Inputs):
    recipe = t.write("pipeline.yaml", f"run_dir: {t.out}\nnum_promts: 4\n")
    return Case(["pipeline", "--config", str(recipe)], [f"{recipe}:2", "'num_promts'", "num_prompts"], output=t.out)


@case("pipeline-unknown-method")
def _(t: Inputs):
    recipe = t.pipeline_recipe(methods=["ppo", "dpo2"])
    return Case(["pipeline", "--config", str(recipe)], [str(recipe), "methods", "'dpo2'"], output=t.out)


@case("pipeline-unknown-force-stage")
def _(t: Inputs):
    argv = ["pipeline", "--config", str(t.pipeline_recipe()), "--force", "rewrad"]
    return Case(argv, ["--force rewrad"], output=t.out)


# ── label (the checks made before any server is contacted) ───────────────────────────────────────────────────────────
@case("label-push-malformed-candidates-line")
def _(t: Inputs):
    lines = t.candidates().read_text().splitlines()
    path = t.write("broken.jsonl", "\n".join([lines[0], lines[1], '{"prompt_id": "p2", "prompt": [}', lines[2]]))
    return Case(["label", "push", "--candidates", str(path), "--dataset", "d"], [f"{path}:3"])


@case("label-push-empty-candidates")
def _(t: Inputs):
    path = t.write("empty.jsonl", "\n")
    return Case(["label", "push", "--candidates", str(path), "--dataset", "d"], [str(path), "no rows"])


@case("label-push-candidates-not-utf8")
def _(t: Inputs):
    path = t.write("latin1.jsonl", '{"prompt_id": "a", "prompt": "caf\u00e9"}\n'.encode("latin-1"))
    return Case(["label", "push", "--candidates", str(path), "--dataset", "d"], [str(path), ("UTF-8", "utf-8")])


@case("label-push-missing-candidates")
def _(t: Inputs):
    path = t.tmp / "nowhere.jsonl"
    return Case(["label", "push", "--candidates", str(path), "--dataset", "d"], [str(path), "does not exist"])


@case("label-push-suggestions-wrong-k")
def _(t: Inputs):
    scores = t.jsonl("scores.jsonl", [{"prompt_id": "p0", "scores": [1, 2], "agent": "rm"}])
    scores.write_text(scores.read_text() + json.dumps({"prompt_id": "p1", "scores": [1], "agent": "rm"}) + "\n")
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--suggestions", str(scores)]
    return Case(argv, [f"{scores}:2", "K=2"])


@case("label-push-uncertainty-without-scores")
def _(t: Inputs):
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--select", "2"]
    return Case(argv + ["--strategy", "uncertainty"], ["--strategy uncertainty", "--suggestions"])


@case("label-push-spread-without-scores")
def _(t: Inputs):
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--select", "2"]
    return Case(argv + ["--strategy", "spread"], ["--strategy spread", "--suggestions"])


@case("label-push-zero-select")
def _(t: Inputs):
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--select", "0"]
    return Case(argv, ["--select", "got 0"])


@case("label-push-strategy-without-select")
def _(t: Inputs):
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--strategy", "diversity"]
    return Case(argv, ["--strategy diversity", "--select"])


@case("label-push-member-scores-wrong-k")
def _(t: Inputs):
    rows = [{"prompt_id": "p0", "scores": [1, 2], "member_scores": [[1, 2], [1]], "agent": "rm"}]
    scores = t.jsonl("scores.jsonl", rows)
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--suggestions", str(scores)]
    return Case(argv, [f"{scores}:1", "member_scores", "K=2"])


@case("label-push-zero-batch-size")
def _(t: Inputs):
    argv = ["label", "push", "--candidates", str(t.candidates()), "--dataset", "d", "--batch_size", "0"]
    return Case(argv, ["--batch_size"])


@case("label-watch-zero-every")
def _(t: Inputs):
    recipe = t.recipe({"model_name_or_path": "tiny-llama"})
    argv = ["label", "watch", "--dataset", "d", "--reward_recipe", str(recipe), "--output", str(t.out)]
    return Case(argv + ["--every", "0"], ["--every", "got 0"], output=t.out)


@case("label-watch-min-agreement-above-1")
def _(t: Inputs):
    recipe = t.recipe({"model_name_or_path": "tiny-llama"})
    argv = ["label", "watch", "--dataset", "d", "--reward_recipe", str(recipe), "--output", str(t.out)]
    return Case(argv + ["--min_agreement", "2"], ["--min_agreement", "between 0 and 1", "2.0"], output=t.out)


@case("label-watch-missing-reward-recipe")
def _(t: Inputs):
    recipe = t.tmp / "nowhere.yaml"
    argv = ["label", "watch", "--dataset", "d", "--reward_recipe", str(recipe), "--output", str(t.out)]
    return Case(argv, ["--reward_recipe", str(recipe), "does not exist"], output=t.out)


@case("label-watch-broken-reward-recipe")
def _(t: Inputs):
    recipe = t.tmp / "broken.yaml"
    recipe.write_text("model_name_or_path: tiny-llama\nmax_steps: [2\n")
    argv = ["label", "watch", "--dataset", "d", "--reward_recipe", str(recipe), "--output", str(t.out)]
    return Case(argv, [f"{recipe}:", "YAML"], output=t.out)


@case("label-pull-existing-output")
def _(t: Inputs):
    pulled = t.write("out/preferences.jsonl", '{"chosen": "a", "rejected": "b"}\n')
    return Case(
        ["label", "pull", "--dataset", "d", "--output", str(t.out)], [str(t.out), "--overwrite"], unchanged=(pulled,)
    )


@case("label-pull-min-agreement-above-one")
def _(t: Inputs):
    argv = ["label", "pull", "--dataset", "d", "--output", str(t.out), "--min_agreement", "2"]
    return Case(argv, ["--min_agreement"], output=t.out)


@case("label-simulate-negative-noise")
def _(t: Inputs):
    return Case(["label", "simulate", "--dataset", "d", "--annotator", "a", "--noise", "-1"], ["--noise"])


# ── the harness ──────────────────────────────────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("bad-input-adapters"))


def install_guards(monkeypatch) -> None:
    """Training, PPO steps, sampling and the pipeline's stages raise ReachedWork instead of running."""
    import transformers

    from workbench.modeling.generation import Sampling
    from workbench.pipeline.runner import Runner
    from workbench.rl.trainer import PPOTrainer

    def stop(where: str):
        def refuse(*args, **kwargs):
            raise ReachedWork(where)

        return refuse

    monkeypatch.setattr(transformers.Trainer, "train", stop("Trainer.train (training started)"))
    monkeypatch.setattr(PPOTrainer, "step", stop("PPOTrainer.step (PPO started)"))
    monkeypatch.setattr(Sampling, "generate", stop("Sampling.generate (sampling started)"))
    monkeypatch.setattr(Runner, "run", stop("Runner.run (the pipeline started its stages)"))


def log_handlers_to_real_stderr(stale) -> None:
    """Point library log handlers whose stream is `stale` at the real stderr (fd 2, which pytest captures)."""
    import logging

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            if type(handler) is logging.StreamHandler and stale(handler.stream):
                handler.stream = sys.__stderr__
                if "flush" in vars(handler):  # transformers binds the handler's flush to the stream it was made with
                    handler.flush = sys.__stderr__.flush


@pytest.fixture(autouse=True)
def library_logs_outside_capsys(capsys):
    """A library that configures its log handler during a case binds it to that case's capture, closed afterwards:
    every later log line would then print a "Logging error" traceback into stderr. Library logs go to fd 2 instead;
    capsys sees what the command itself prints."""
    log_handlers_to_real_stderr(lambda stream: getattr(stream, "closed", False))
    yield
    current = sys.stderr
    log_handlers_to_real_stderr(lambda stream: stream is current or getattr(stream, "closed", False))


def run_cli(argv: list[str]) -> int:
    """`workbench.cli.main(argv)` as the console script runs it; an escaping exception fails the case, named."""
    from workbench.cli import main

    try:
        return main(argv)
    except SystemExit as exit_:  # argparse exits on its own; the console script would exit with this code
        return exit_.code if isinstance(exit_.code, int) else 1
    except ReachedWork as reached:
        pytest.fail(f"the input was not refused: the command went on to {reached}", pytrace=False)
    except Exception as error:  # the console script would print this traceback and exit 1
        frame = traceback.extract_tb(error.__traceback__)[-1]
        where = f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"
        pytest.fail(f"traceback: {type(error).__name__}: {str(error)[:300]} (raised at {where})", pytrace=False)


def finished_files(command: str, output: Path) -> list[str]:
    if output.is_file() or (output.suffix and not output.is_dir()):
        return [output.name] if output.exists() else []
    return [name for name in FINISHED.get(command, ()) if (output / name).exists()]


@pytest.mark.parametrize("build", CASES)
def test_bad_input_is_refused_in_one_line(build, tmp_path, request, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default output_dir (outputs/...) lands here, never in the repository
    inputs = Inputs(tmp_path, request)
    spec: Case = build(inputs)
    before = {path: path.read_bytes() for path in spec.unchanged}
    if spec.guard:
        install_guards(monkeypatch)
    capsys.readouterr()

    code = run_cli(spec.argv)
    err = capsys.readouterr().err
    command = spec.argv[0]

    for path, content in before.items():
        assert path.read_bytes() == content, f"{path} was changed"
    if spec.may_succeed and code == 0:
        assert finished_files(command, inputs.out), f"exit 0 but {inputs.out} holds no finished result"
        return
    assert "Traceback" not in err, err[-2000:]
    assert "usage:" not in err, f"argparse usage instead of one line: ...{err[-600:]}"
    assert code == 2, f"exit status {code}; stderr: ...{err[-600:]}"
    marker = f"workbench {command}: error: "
    assert err.count(marker) == 1, f"expected one '{marker}...' line; stderr: ...{err[-600:]}"
    message = err.split(marker, 1)[1].rstrip("\n")
    assert "\n" not in message, f"the error is {message.count(chr(10)) + 1} lines: {message!r}"
    for fragment in spec.expect:
        alternatives = fragment if isinstance(fragment, tuple) else (fragment,)
        assert any(a in message for a in alternatives), f"{' or '.join(map(repr, alternatives))} not in {message!r}"
    for fragment in spec.forbid:
        assert fragment not in message, f"{fragment!r} in {message!r}"
    if spec.output is not None:
        assert not finished_files(command, spec.output), f"{spec.output} holds {finished_files(command, spec.output)}"
