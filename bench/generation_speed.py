"""Answers per second by batch size, base precision and LoRA folding, and what the precision costs in held-out
loss: the numbers behind the quickstart's generate/eval batch sizes and its CPU precision.

    python bench/generation_speed.py [--model smollm2-135m-instruct] [--batches 60,120] [--new_tokens 48]
                                     [--out bench/results/generation_speed-<machine>.json]

Policies as the stages sample them: the base plus a LoRA adapter (r 16, all linear layers, the recipes' shape) through
`Sampling.generate`. Three ways: the 4-bit NF4 base (double quantization, float32 compute; a 4-bit base cannot be
folded), the float32 base with the LoRA beside it (`unfolded`), and the float32 base with the LoRA folded into it for
the call (`adapters.folded_for_inference`, what `Sampling.generate` does on a float32 CPU base). Greedy answers to
the bundled training prompts, forced to exactly `new_tokens` tokens; timed as prefill (1 new token) and the rest;
seconds per answer = whole call / batch. Baseline: 4-bit at batch 60 (the quickstart's eval before); every row has its
ratio to it. Quality: the bare base's mean token loss on 64 chats of the bundled instruction test split, per
precision.

The floor: decoding one token for the batch must read every weight and the batch's KV cache once, and do 2 FLOPs per
weight of the linear layers (the tied output layer included) per answer. The machine's rates are measured in the same
run (`machine_rates`: read bandwidth, a sum over a 1 GiB tensor; fp32 matmul rate, 2048 x 2048 products), so each row
gets the floor of a decode step, max(bytes / bandwidth, FLOPs / matmul rate), and of the prefill (FLOPs over the
padded prompt tokens), and the fraction of the floor it reaches (floor / measured: 1.0 is the floor). Prints one JSON
object (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_features() -> dict:
    """The CPU's name and the instruction sets that pick bitsandbytes' 4-bit CPU kernel: with AVX512-BF16 an
    inference-only `Linear4bit` repacks its weights for a fused bf16 kernel (see loading.keep_4bit_weights_unpacked),
    so the 4-bit rows are only comparable between machines that agree here."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"name": platform.processor(), "avx512_bf16": None, "amx_bf16": None}
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "")
    return {"name": name, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def machine_rates(repeats: int = 5) -> dict:
    """This machine's read bandwidth (GB/s, summing a 1 GiB fp32 tensor) and fp32 matmul rate (GFLOP/s, 2048^3
    products), each the best of `repeats`, with torch's own threads."""
    import torch

    data = torch.ones(256 * 1024 * 1024)  # 1 GiB
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    data.sum(), a @ b  # warm
    reads, products = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        reads.append(time.perf_counter() - start)
        start = time.perf_counter()
        a @ b
        products.append(time.perf_counter() - start)
    return {
        "read_bandwidth_gb_s": round(data.numel() * 4 / min(reads) / 1e9, 2),
        "matmul_gflop_s": round(2 * 2048**3 / min(products) / 1e9, 1),
        "threads": torch.get_num_threads(),
    }


def model_sizes(model) -> dict:
    """Bytes held by the weights (4-bit storage as stored) and weights multiplied per token (every linear layer,
    the output layer included: a tied output layer is read again)."""
    import torch

    linear = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    config = model.config
    kv_per_token = (
        2
        * config.num_hidden_layers
        * config.num_key_value_heads
        * (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    )
    return {"weight_bytes": held, "linear_weights": linear, "kv_values_per_token": kv_per_token}


def floor(sizes: dict, rates: dict, batch: int, prompt_tokens: int, new_tokens: int) -> dict:
    """Seconds a decode step and the prefill cannot go under on this machine (see the module's docstring)."""
    bandwidth, flops = rates["read_bandwidth_gb_s"] * 1e9, rates["matmul_gflop_s"] * 1e9
    context = prompt_tokens + new_tokens / 2  # the mean context a decode step attends over
    reading = (sizes["weight_bytes"] + 4 * sizes["kv_values_per_token"] * context * batch) / bandwidth
    computing = 2 * sizes["linear_weights"] * batch / flops
    return {
        "decode_step": max(reading, computing),
        "decode_bound": "memory" if reading > computing else "compute",
        "prefill": computing * prompt_tokens,
    }


def held_out_loss(model, tokenizer, chats: list[list[dict]], batch: int = 16) -> float:
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(chats), batch):
            texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in chats[start : start + batch]]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, padding_side="right")
            labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
            loss = model(**encoded, labels=labels).loss.item()
            tokens = int((labels[:, 1:] != -100).sum())
            total, count = total + loss * tokens, count + tokens
    return total / count


@contextmanager
def never_folded():
    """Sampling.generate with folding switched off: the LoRA runs beside the base as in training."""
    from workbench.modeling import adapters

    real = adapters._foldable_lora_layers
    adapters._foldable_lora_layers = lambda model: []
    try:
        yield
    finally:
        adapters._foldable_lora_layers = real


def main() -> None:
    import torch

    from workbench.data.bundled import bundled_path
    from workbench.data.prompts import load_prompts
    from workbench.modeling import adapters
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.generation import Sampling
    from workbench.modeling.loading import load_model, load_tokenizer
    from workbench.modeling.tokens import encode_prompts, left_pad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batches", default="60,120")
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()
    batches = [int(b) for b in cli.batches.split(",")]

    prompts = [row["prompt"] for row in load_prompts("bundled:prompts", where={"split": "train"})]
    with open(bundled_path("instructions")) as file:
        chats = [row["messages"] for row in map(json.loads, file) if row["split"] == "test"][:64]
    load_before = os.getloadavg()
    result = {
        "benchmark": "generation_speed",
        "model": cli.model,
        "new_tokens": cli.new_tokens,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"
        if not torch.cuda.is_available()
        else torch.cuda.get_device_name(),
        "cpu": cpu_features(),
        "versions": {"torch": torch.__version__, **_versions()},
        "command": "python bench/generation_speed.py " + " ".join(sys.argv[1:]),
        "rows": [],
        "held_out_loss": {},
        "machine_rates": machine_rates(),
    }
    for four_bit in (True, False):
        precision = "4bit-nf4" if four_bit else "fp32"
        args = ModelArguments(model_name_or_path=cli.model, load_in_4bit=four_bit, dtype="float32")
        tokenizer = load_tokenizer(args, padding_side="left")
        model = load_model(args).eval()
        result["held_out_loss"][precision] = round(held_out_loss(model, tokenizer, chats), 4)
        sizes = model_sizes(model)
        result.setdefault("model_sizes", {})[precision] = sizes
        model = adapters.attach(model, "policy", config=adapters.get_peft_config(args)).eval()
        for folding in ("unfolded", "folded") if not four_bit else ("unfoldable",):
            # `never_folded` stands in for the adapter check that Sampling.generate runs: it finds nothing to fold
            context = nullcontext if folding == "folded" else never_folded
            for batch in batches:
                encoded = encode_prompts(tokenizer, (prompts * (batch // len(prompts) + 1))[:batch])
                ids, mask = left_pad(encoded, tokenizer.pad_token_id)
                times = {}
                for tokens in (1, cli.new_tokens):
                    sampling = Sampling(max_new_tokens=tokens, temperature=0.0, min_new_tokens=tokens)
                    start = time.perf_counter()
                    with torch.inference_mode(), context():
                        sampling.generate(model, tokenizer, ids, mask)
                    times[tokens] = time.perf_counter() - start
                row = {
                    "precision": precision,
                    "lora": folding,
                    "batch": batch,
                    "prefill_seconds": round(times[1], 3),
                    "decode_seconds_per_step": round((times[cli.new_tokens] - times[1]) / (cli.new_tokens - 1), 4),
                    "seconds_per_answer": round(times[cli.new_tokens] / batch, 4),
                }
                least = floor(sizes, result["machine_rates"], batch, ids.shape[1], cli.new_tokens)
                row["floor"] = {
                    "padded_prompt_tokens": ids.shape[1],
                    "decode_step_seconds": round(least["decode_step"], 4),
                    "decode_bound": least["decode_bound"],
                    "decode_fraction_of_floor": round(least["decode_step"] / row["decode_seconds_per_step"], 3),
                    "prefill_seconds": round(least["prefill"], 3),
                    "prefill_fraction_of_floor": round(least["prefill"] / row["prefill_seconds"], 3),
                }
                result["rows"].append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        del model
    baseline = next(r for r in result["rows"] if r["precision"] == "4bit-nf4" and r["batch"] == batches[0])
    for row in result["rows"]:
        row[f"ratio_to_4bit_batch_{batches[0]}"] = round(row["seconds_per_answer"] / baseline["seconds_per_answer"], 3)
    result["load_average_1_5_15min"] = {"before": load_before, "after": os.getloadavg()}
    text = json.dumps(result, indent=1)
    print(text)
    if cli.out:
        Path(cli.out).write_text(text + "\n")


def _versions() -> dict:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("transformers", "bitsandbytes", "peft")}


if __name__ == "__main__":
    main()
