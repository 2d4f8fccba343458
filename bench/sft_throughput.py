"""SFT throughput: `workbench sft` against a plain TRL script (SFTTrainer + peft + bitsandbytes, what a user writes
from TRL's docs), on the same model, data, sequence length and batch; non-padding tokens per second.

    python bench/sft_throughput.py [--model smollm2-135m-instruct] [--steps 20] [--batch 4] [--max_length 192]
                                   [--setups trl workbench workbench_padding_free] [--bases fp32 4bit]
                                   [--out bench/results/sft_throughput-<machine>.json]

Every (setup, base) runs in its own fresh process on the bundled instructions (split train, chat messages, loss on
the assistant turns only), LoRA r=16 / alpha 32 / dropout 0.05 on all linear layers, learning rate 3e-4, seed 42:
- `trl`: `AutoModelForCausalLM.from_pretrained` (with a `BitsAndBytesConfig` NF4 + double quantization on the 4-bit
  base), `LoraConfig`, `SFTTrainer(peft_config=...)`: the plain script, with gradient checkpointing off as in the
  workbench recipe (TRL's SFTConfig turns it on by default);
- `workbench`: `workbench sft` with its recipe keys set to the same values (its own loading, adapters and trainer);
- `workbench_padding_free`: the same with `padding_free: true` (each batch one flattened row, no pad tokens).
Both are timed the same way: the trainer class is wrapped to count each batch's non-padding tokens (the attention
mask's sum, or every token of a padding-free row) and a callback stamps the end of every optimizer step; throughput is
the tokens of the steps after the first `--warmup` over their wall time (forward, backward, optimizer, data loading).
The ratio of each setup to `trl` on the same base is reported. Prints one JSON object.
"""

from __future__ import annotations

import argparse
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

from ppo_memory import emit, machine  # noqa: E402

SETUPS = ("trl", "workbench", "workbench_padding_free")
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")

RECIPE = """\
model_name_or_path: {model}
load_in_4bit: {four_bit}
bnb_4bit_quant_type: nf4
use_bnb_nested_quant: true
dtype: {dtype}
bf16: {bf16}
use_peft: true
lora_r: 16
lora_alpha: 32
lora_dropout: 0.05
lora_target_modules: [all-linear]
datasets:
  - path: {data}
assistant_only_loss: true
padding_free: {padding_free}
max_length: {max_length}
max_steps: {steps}
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
gradient_checkpointing: false
learning_rate: 3.0e-4
lr_scheduler_type: constant
logging_steps: 1000
eval_strategy: "no"
save_steps: 100000
seed: 42
wandb_mode: disabled
output_dir: {output_dir}
"""


def timed(trainer_cls):
    """`trainer_cls` counting each batch's non-padding tokens, with a callback stamping every optimizer step's end."""
    from transformers import TrainerCallback

    class Stamps(TrainerCallback):
        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    class Timed(trainer_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.bench_stamps, self.bench_tokens, self.bench_slots = Stamps(), [], []
            self.add_callback(self.bench_stamps)
            Timed.last = self

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs.get("attention_mask")
            # a padding-free row holds no pad (TRL pads it only to pad_to_multiple_of, unset here)
            self.bench_tokens.append(int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel()))
            self.bench_slots.append(int(inputs["input_ids"].numel()))
            return super().training_step(model, inputs, num_items_in_batch)

    return Timed


def summary(trainer, warmup: int, started: float) -> dict:
    ends, tokens = trainer.bench_stamps.ends, trainer.bench_tokens
    if len(ends) <= warmup:
        raise SystemExit(f"bench/sft_throughput.py: only {len(ends)} steps ran; need more than --warmup {warmup}")
    seconds = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - started
    counted = sum(tokens[warmup:])
    step_times = [b - a for a, b in zip(ends[warmup - 1 :], ends[warmup:])] if warmup else []
    return {
        "steps": len(ends),
        "timed_steps": len(ends) - warmup,
        "non_padding_tokens": counted,
        "token_slots": sum(trainer.bench_slots[warmup:]),
        "padding_fraction": round(1 - counted / sum(trainer.bench_slots[warmup:]), 4),
        "seconds": round(seconds, 3),
        "median_step_seconds": round(statistics.median(step_times), 3) if step_times else None,
        "tokens_per_second": round(counted / seconds, 1),
    }


def base_dtype(base: str) -> str:
    """The weights' dtype (and the 4-bit base's compute dtype): bfloat16 on a GPU, float32 on CPU, as each base's
    recipes use; the `bf16` base is bfloat16 everywhere. Both setups train under autocast exactly when it is bf16."""
    import torch

    if base == "bf16" or (base == "4bit" and torch.cuda.is_available()):
        return "bfloat16"
    return "float32"


def matmul_tflops() -> float | None:
    """The GPU's bf16 matrix-product rate measured here (8192^3, mean of 10 after 3 warm-ups), MFU's denominator."""
    import torch

    if not torch.cuda.is_available():
        return None
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return round(2 * 8192**3 * 10 / (start.elapsed_time(end) / 1000) / 1e12, 1)


def parameter_count(model: str) -> int:
    """The base's parameters (a tied output head counted once: it is the embedding matrix, used as a matmul)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from workbench.modeling import loading

    with __import__("torch").device("meta"):
        meta = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(loading.resolve_model_path(model)[0]))
    return sum(p.numel() for p in meta.parameters())


def run_trl(args, data: Path, scratch: Path) -> dict:
    """The plain TRL script: nothing of the workbench but the data file, the model's path and its chat template."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, set_seed
    from trl import SFTConfig, SFTTrainer

    from workbench.modeling.chat_templates import training_chat_template
    from workbench.modeling.default_model import ensure_default_model

    path = str(ensure_default_model()) if args.model == "smollm2-135m-instruct" else args.model
    set_seed(42)
    dtype = getattr(torch, base_dtype(args.base))
    quantization = None
    if args.base == "4bit":
        quantization = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, quantization_config=quantization)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # TRL cannot patch this model's template for assistant-only loss itself; a user writes the {% generation %}
    # markers in by hand, as workbench.modeling.chat_templates does (the same string)
    tokenizer.chat_template = training_chat_template(tokenizer.chat_template)
    config = SFTConfig(
        output_dir=str(scratch / "trl"),
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
        max_length=args.max_length,
        assistant_only_loss=True,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        seed=42,
        bf16=dtype == torch.bfloat16,
        gradient_checkpointing=False,  # TRL's default is on; the workbench recipe has it off: same settings
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = timed(SFTTrainer)(
        model=model,
        args=config,
        train_dataset=load_dataset("json", data_files=str(data), split="train"),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
    )
    started = time.perf_counter()
    trainer.train()
    return summary(trainer, args.warmup, started)


def run_workbench(args, data: Path, scratch: Path, padding_free: bool) -> dict:
    """`workbench sft` through its own main(), its trainer class wrapped by `timed` (the only change)."""
    from workbench.stages import sft

    recipe = scratch / "sft.yaml"
    recipe.write_text(
        RECIPE.format(
            model=args.model,
            four_bit=str(args.base == "4bit").lower(),
            dtype=base_dtype(args.base),
            bf16=str(base_dtype(args.base) == "bfloat16").lower(),
            data=data,
            max_length=args.max_length,
            padding_free=str(padding_free).lower(),
            steps=args.steps,
            batch=args.batch,
            output_dir=scratch / "workbench",
        )
    )
    original = sft.trainer_class
    wrapped = timed(original())
    sft.trainer_class = lambda: wrapped
    started = time.perf_counter()
    sft.main(["--config", str(recipe)])
    return summary(wrapped.last, args.warmup, started)


def bundled_rows(path: Path, model: str, max_length: int) -> dict:
    """The bundled instructions (split train) as a messages JSONL; their token lengths under the chat template."""
    from workbench.data.bundled import bundled_path
    from workbench.fileio import write_jsonl_atomic
    from workbench.jsonl import read_jsonl
    from workbench.modeling import loading
    from workbench.modeling.arguments import ModelArguments

    bundled = [row for _, row in read_jsonl(bundled_path("instructions"))]
    rows = [{"messages": r["messages"]} for r in bundled if r.get("split") == "train"]
    write_jsonl_atomic(path, rows)
    tokenizer = loading.load_tokenizer(ModelArguments(model_name_or_path=model))
    chats = [tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True) for r in rows]
    lengths = [len(chat["input_ids"]) for chat in chats]
    cut = sum(length > max_length for length in lengths)
    return {
        "rows": len(rows),
        "mean_tokens": round(statistics.mean(lengths), 1),
        "max_tokens": max(lengths),
        "cut": cut,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=192)
    parser.add_argument("--setups", nargs="+", default=list(SETUPS), choices=SETUPS)
    parser.add_argument("--bases", nargs="+", default=["fp32", "4bit"], choices=["fp32", "bf16", "4bit"])
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", choices=SETUPS, help=argparse.SUPPRESS)
    parser.add_argument("--base", choices=["fp32", "bf16", "4bit"], help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        with tempfile.TemporaryDirectory() as scratch:
            if args.child == "trl":
                result = run_trl(args, Path(args.data), Path(scratch))
            else:
                result = run_workbench(args, Path(args.data), Path(scratch), args.child == "workbench_padding_free")
        print("BENCH " + json.dumps(result))
        return 0

    import peft
    import torch
    import transformers
    import trl

    results: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        data = Path(scratch) / "instructions.jsonl"
        dataset = bundled_rows(data, args.model, args.max_length)
        for base in args.bases:
            for setup in args.setups:
                command = [sys.executable, __file__, "--child", setup, "--base", base, "--data", str(data)]
                command += ["--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup)]
                command += ["--batch", str(args.batch), "--max_length", str(args.max_length)]
                print(f"bench/sft_throughput.py: {setup} on the {base} base", file=sys.stderr)
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
                lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
                if done.returncode or not lines:
                    raise SystemExit(f"bench/sft_throughput.py: {setup} ({base}) failed:\n{done.stderr[-3000:]}")
                results.setdefault(base, {})[setup] = json.loads(lines[-1][len("BENCH ") :])
                emit({"benchmark": "sft_throughput", "partial": True, "results": results}, args.out)
    for rows in results.values():
        trl_rate = rows.get("trl", {}).get("tokens_per_second")
        for setup, row in rows.items():
            if trl_rate and setup != "trl":
                row["ratio_over_trl"] = round(row["tokens_per_second"] / trl_rate, 3)
    # MFU on a GPU: LoRA on a frozen base costs about 4N FLOPs per token (forward 2N, the input gradients 2N, no
    # weight gradients for the base), over the bf16 matrix-product rate measured in this run
    peak = matmul_tflops()
    parameters = parameter_count(args.model)
    if peak:
        for rows in results.values():
            for row in rows.values():
                row["mfu"] = round(4 * parameters * row["tokens_per_second"] / (peak * 1e12), 4)
    report = {
        "benchmark": "sft_throughput",
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "data": {"source": "bundled:instructions where split=train, chat messages, assistant-only loss", **dataset},
        "batch": args.batch,
        "max_length": args.max_length,
        "lora": LORA,
        "measure": f"non-padding tokens per second over steps {args.warmup + 1}-{args.steps} (whole optimizer steps)",
        "machine": machine(),
        "versions": {m.__name__: m.__version__ for m in (torch, transformers, trl, peft)},
        "bases": {
            base: {"fp32": "float32 weights", "bf16": "bfloat16 weights, bf16 autocast"}.get(base)
            or f"bitsandbytes NF4 + double quantization, {base_dtype(base)} compute"
            + (", bf16 autocast" if base_dtype(base) == "bfloat16" else "")
            for base in args.bases
        },
        "parameters": parameters,
        "bf16_matmul_tflops": peak,
        "mfu": "4 * parameters * tokens_per_second / bf16_matmul_tflops (GPU only)",
        "results": results,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
