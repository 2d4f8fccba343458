"""SFT, reward and PPO steps at real model sizes: step time, tokens per second and peak GPU memory of the workbench's
own stages, next to `workbench estimate-memory`'s figure for the same settings.

    python bench/model_sizes.py [--models recipes/configs/smollm2-135m-instruct recipes/configs/qwen2.5-1.5b-instruct
                                 recipes/configs/llama-3.1-8b-instruct] [--stages sft reward ppo]
                                [--batch 4] [--seq 512] [--ppo_seq 256] [--steps 4]
                                [--out bench/results/model_sizes-<machine>.json]

Each model is its published architecture with random weights (bench/random_model.py: speed and memory do not depend
on the values). Every (model, stage) runs `workbench <stage>`'s own main() in a fresh process, with the settings of
the GPU recipes (recipes/llama-3.1-8b-instruct/): 4-bit NF4 base with double quantization, bf16 compute, LoRA r=16
alpha 32 on all linear layers, gradient checkpointing, paged 8-bit AdamW for SFT and reward. So that the measured
peak is the ceiling that the estimate describes, every sequence is exactly `--seq` tokens:
- sft: `--batch` rows of plain text, each longer than `--seq` and cut to it (loss on every token);
- reward: `--batch` preference pairs whose prompt + answer is `--seq` tokens on both sides (2 x batch sequences);
- ppo: `--batch` prompts of `--ppo_seq`/2 tokens, each answered with exactly `--ppo_seq`/2 sampled tokens (a stop
  token the model never writes), one minibatch of `--batch`, one PPO epoch; the adapters are the sft and reward
  runs' own.
Step time: the median over the steps after the first two (sft, reward) or the first (ppo); peak memory:
`torch.cuda.max_memory_allocated` over the whole stage (loading, steps, saving) and `max_memory_reserved`, split by
phase in `memory_phases` (loading; sft and reward: forward, forward + backward, optimizer; ppo: each phase its step
times), each with what was allocated when it began: where the peak is, and what the weights take.
Prints one JSON object; needs a CUDA device (on CPU the stages run, but no GPU memory is measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ppo_memory import emit, machine, versions  # noqa: E402
from random_model import ensure_random_model  # noqa: E402

MODEL = """\
model_name_or_path: {model}
load_in_4bit: true
bnb_4bit_quant_type: nf4
use_bnb_nested_quant: true
dtype: bfloat16
attn_implementation: sdpa
wandb_mode: disabled
seed: 0
"""
LORA = """\
use_peft: true
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_modules: [all-linear]
"""
TRAINER = """\
bf16: true
gradient_checkpointing: true
optim: paged_adamw_8bit
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
max_length: {seq}
max_steps: {steps}
learning_rate: 1.0e-4
lr_scheduler_type: constant
logging_steps: 1000
eval_strategy: "no"
save_steps: 100000
"""
STAGE = {
    "sft": MODEL + LORA + TRAINER + "datasets:\n  - path: {data}\noutput_dir: {out}\n",
    "reward": MODEL + LORA + TRAINER + "datasets:\n  - path: {data}\neval_base: false\noutput_dir: {out}\n",
    "ppo": MODEL
    + """\
sft_adapter: {sft}
reward_adapter: {reward}
prompts:
  - path: {data}
total_steps: {steps}
batch_size: {batch}
forward_batch_size: {batch}
mini_batch_size: {batch}
gradient_accumulation_steps: 1
ppo_epochs: 1
max_prompt_length: {half}
max_new_tokens: {half}
temperature: 0.7
top_k: 0
top_p: 1.0
stop_tokens: ["<filename>"]
gradient_checkpointing: true
learning_rate: 1.0e-5
save_steps: 100000
output_dir: {out}
""",
}
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wise owls count stars above quiet hills and rivers run "
    "toward distant seas under morning light that paints every field gold before the long working day begins"
).split()


def text_of(tokenizer, tokens: int, offset: int) -> str:
    """A text of exactly `tokens` tokens under `tokenizer` (words drawn in a fixed rotation, cut at a token)."""
    words = [WORDS[(offset + k) % len(WORDS)] for k in range(tokens * 2)]
    ids = tokenizer(" ".join(words), add_special_tokens=False)["input_ids"][:tokens]
    return tokenizer.decode(ids)


def chat_tokens(tokenizer, messages: list, **kwargs) -> int:
    return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, **kwargs)["input_ids"])


def fit(tokenizer, prompt: list, tokens: int, offset: int) -> list:
    """The longest assistant turn that keeps prompt + answer, under the chat template, within `tokens` tokens."""
    answer = tokens
    while answer > 0:
        turn = [{"role": "assistant", "content": text_of(tokenizer, answer, offset)}]
        length = chat_tokens(tokenizer, prompt + turn)
        if length <= tokens:
            return turn
        answer -= length - tokens
    raise SystemExit(f"bench/model_sizes.py: --seq {tokens + 1} leaves no room for an answer after the prompt")


def write_data(stage: str, path: Path, tokenizer, batch: int, seq: int, steps: int) -> dict:
    """The stage's rows, sized so that every sequence is `seq` tokens (sft, reward) or half of it (ppo's prompts)."""
    rows, n = [], batch * (steps + 1)
    if stage == "sft":
        rows = [{"text": text_of(tokenizer, seq + 64, k)} for k in range(n)]
    elif stage == "reward":
        for k in range(n):
            prompt = [{"role": "user", "content": text_of(tokenizer, seq // 4, k)}]
            pair = [fit(tokenizer, prompt, seq - 1, k + side) for side in (1, 2)]  # the stage may append an EOS
            rows.append({"prompt": prompt, "chosen": pair[0], "rejected": pair[1]})
    else:
        overhead = chat_tokens(tokenizer, [{"role": "user", "content": ""}], add_generation_prompt=True)
        contents = [text_of(tokenizer, seq // 2 - overhead, k) for k in range(n)]
        rows = [{"prompt": [{"role": "user", "content": content}]} for content in contents]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"rows": len(rows)}


def run_child(stage: str, recipe: Path) -> dict:
    """This process: the stage's main() on the recipe (its trainer class wrapped to stamp each step), then the
    CUDA allocator's peaks."""
    import torch
    from transformers import TrainerCallback

    module = __import__(f"workbench.stages.{stage}", fromlist=["main"])
    stamps: list[float] = []
    tokens: list[int] = []
    memory = PhaseMemory()
    if stage == "ppo":  # each phase the PPO step times (generation, scoring passes, updates) is a memory phase too
        from workbench.rl import phase_timer

        timed_phase = phase_timer.PhaseTimer.__call__

        @contextlib.contextmanager
        def phase_with_memory(self, phase: str):
            with timed_phase(self, phase), memory(phase):
                yield

        phase_timer.PhaseTimer.__call__ = phase_with_memory
    if stage in ("sft", "reward"):

        class Stamp(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                stamps.append(time.perf_counter())

            def on_pre_optimizer_step(self, args, state, control, **kwargs):
                memory.enter("optimizer")

            def on_optimizer_step(self, args, state, control, **kwargs):
                memory.leave("optimizer")

        original = module.trainer_class()

        class Timed(original):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(Stamp())

            def training_step(self, model, inputs, num_items_in_batch=None):
                mask = inputs.get("attention_mask")
                tokens.append(int(mask.sum()) if mask is not None else -1)
                with memory("forward_backward"):
                    return super().training_step(model, inputs, num_items_in_batch)

            def compute_loss(self, *args, **kwargs):
                with memory("forward"):
                    return super().compute_loss(*args, **kwargs)

        module.trainer_class = lambda: Timed
    started = time.perf_counter()
    code = module.main(["--config", str(recipe)])
    result: dict = {"exit": code, "seconds": round(time.perf_counter() - started, 1)}
    if stamps:
        steps = [b - a for a, b in zip(stamps, stamps[1:])][1:]  # steps 3.. (the first two warm up)
        result["step_seconds"] = [round(s, 3) for s in steps]
        result["median_step_seconds"] = round(statistics.median(steps), 3) if steps else None
        if tokens and min(tokens) >= 0:
            result["tokens_per_step"] = tokens[-1]
            if steps:
                result["tokens_per_second"] = round(tokens[-1] / statistics.median(steps), 1)
    if torch.cuda.is_available():
        result["peak_allocated_mib"] = mib(memory.overall_peak())
        result["peak_reserved_mib"] = mib(torch.cuda.max_memory_reserved())
        result["memory_phases"] = memory.phases
    return result


def mib(n: int) -> float:
    return round(n / 2**20, 1)


class PhaseMemory:
    """Peak CUDA memory per phase of a step (`with memory("forward"): ...`; phases may nest), and the allocator's
    peak before the first phase (loading). Each phase records what was allocated when it first began and its peak
    over every time it ran; the allocator's peak counter is reset at each boundary, so `overall_peak()` folds the
    phases' peaks back into the whole run's. On a machine without CUDA it records nothing."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()
        self.phases: dict[str, dict] = {}
        self.open: list[str] = []
        self.peak = 0

    def _fold(self) -> None:
        import torch

        peak = torch.cuda.max_memory_allocated()
        self.peak = max(self.peak, peak)
        if not self.phases:  # loading, and whatever the stage does before its first step
            allocated = torch.cuda.memory_allocated()
            self.phases["before_first_phase"] = {"peak_mib": mib(peak), "allocated_at_end_mib": mib(allocated)}
        for name in self.open:
            self.phases[name]["peak_mib"] = max(self.phases[name]["peak_mib"], mib(peak))

    def enter(self, name: str) -> None:
        import torch

        if not self.cuda:
            return
        torch.cuda.synchronize()
        self._fold()
        torch.cuda.reset_peak_memory_stats()
        self.phases.setdefault(name, {"allocated_at_start_mib": mib(torch.cuda.memory_allocated()), "peak_mib": 0.0})
        self.open.append(name)

    def leave(self, name: str) -> None:
        import torch

        if not self.cuda or name not in self.open:
            return
        torch.cuda.synchronize()
        self._fold()
        self.open.remove(name)
        torch.cuda.reset_peak_memory_stats()

    @contextlib.contextmanager
    def __call__(self, name: str):
        self.enter(name)
        try:
            yield
        finally:
            self.leave(name)

    def overall_peak(self) -> int:
        if self.cuda:
            self._fold()
        return self.peak


def ppo_phases(out: Path) -> dict:
    history = json.loads((out / "metrics.json").read_text())["history"]
    timed = history[1:] or history

    def median(key):
        return round(statistics.median(row[key] for row in timed), 3)

    return {
        "step_seconds": [round(row["perf/step_seconds"], 3) for row in history],
        "median_step_seconds": median("perf/step_seconds"),
        "phase_seconds": {
            key[len("perf/") : -len("_seconds")]: median(key)
            for key in history[0]
            if key.startswith("perf/") and key.endswith("_seconds") and key != "perf/step_seconds"
        },
        "mean_response_length": statistics.mean(row["response/length"] for row in history),
    }


def estimate(config_dir: Path, stage: str, batch: int, seq: int) -> dict | None:
    """estimate-memory's figures for the stage's settings (GiB), where it models that stage."""
    from workbench.modeling.memory import MemorySettings, estimate_memory
    from workbench.stages.estimate_memory import resolve_config

    settings = dict(method="qlora", seq=seq, lora_r=16, lora_dropout=0.05, optim="paged_adamw_8bit")
    try:
        settings_ = MemorySettings(batch=batch, stage=stage, **settings)  # type: ignore[call-arg]
    except TypeError:  # estimate-memory without stage modes: the SFT estimate only
        if stage != "sft":
            return None
        settings_ = MemorySettings(batch=batch, **settings)
    figures = estimate_memory(resolve_config(str(config_dir)), settings_).training["int4/nf4"]
    return {key: round(value / 2**30, 3) for key, value in figures.items()} if isinstance(figures, dict) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            f"recipes/configs/{m}" for m in ("smollm2-135m-instruct", "qwen2.5-1.5b-instruct", "llama-3.1-8b-instruct")
        ],
    )
    parser.add_argument("--stages", nargs="+", default=["sft", "reward", "ppo"], choices=["sft", "reward", "ppo"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--ppo_seq", type=int, default=256, help="prompt + response tokens of a PPO sequence")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--timeout", type=int, default=600, help="seconds for one (model, stage) process")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", choices=["sft", "reward", "ppo"], help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("BENCH " + json.dumps(run_child(args.child, Path(args.recipe))), flush=True)
        return 0

    from workbench.modeling import loading

    report: dict = {
        "benchmark": "model_sizes",
        "command": " ".join(["python", "bench/model_sizes.py", *sys.argv[1:]]),
        "settings": {
            "base": "4-bit NF4 + double quantization, bf16 compute, random weights of the published config",
            "lora": "r=16, alpha 32, dropout 0.05, all linear layers",
            "batch": args.batch,
            "seq": args.seq,
            "ppo_seq": args.ppo_seq,
            "steps": args.steps,
            "gradient_checkpointing": True,
            "optim": "paged_adamw_8bit (sft, reward); adamw_torch (ppo)",
        },
        "machine": machine(),
        "versions": versions(),
        "models": {},
    }
    for config_dir in map(Path, args.models):
        name = config_dir.name
        row: dict = {}
        report["models"][name] = row
        started = time.perf_counter()
        try:
            path = ensure_random_model(ROOT / config_dir if not config_dir.is_absolute() else config_dir)
        except Exception as error:  # noqa: BLE001 - recorded in the JSON, the other models still run
            row["error"] = f"building the random checkpoint failed: {error!r}"
            continue
        row["build_seconds"] = round(time.perf_counter() - started, 1)
        tokenizer = loading.load_tokenizer(str(path))
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            outs = {stage: scratch / stage for stage in ("sft", "reward", "ppo")}
            for stage in args.stages:
                data = scratch / f"{stage}.jsonl"
                seq = args.ppo_seq if stage == "ppo" else args.seq
                write_data(stage, data, tokenizer, args.batch, seq, args.steps)
                recipe = scratch / f"{stage}.yaml"
                recipe.write_text(
                    STAGE[stage].format(
                        model=path, batch=args.batch, seq=args.seq, half=seq // 2, steps=args.steps, data=data,
                        out=outs[stage], sft=outs["sft"] / "adapter", reward=outs["reward"] / "adapter",
                    )
                )  # fmt: skip
                command = [sys.executable, __file__, "--child", stage, "--recipe", str(recipe)]
                print(f"bench/model_sizes.py: {name} {stage}", file=sys.stderr, flush=True)
                try:
                    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    row[stage] = {"error": f"over {args.timeout} s"}
                    continue
                lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
                if done.returncode or not lines:
                    row[stage] = {"error": f"exit {done.returncode}: {done.stderr[-2500:]}"}
                    continue
                result = json.loads(lines[-1][len("BENCH ") :])
                if stage == "ppo":
                    result.update(ppo_phases(outs["ppo"]))
                result["estimate_gib"] = estimate(ROOT / config_dir, stage, args.batch, seq)
                row[stage] = result
                emit(report, args.out)  # after every stage: a run cut short keeps what it measured
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
