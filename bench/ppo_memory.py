"""Peak memory of the single-base PPO (one 4-bit base, four adapters) against four separately loaded 4-bit models.

    python bench/ppo_memory.py [--model smollm2-135m-instruct] [--sft_adapter DIR --reward_adapter DIR]
                               [--batch 4 --seq 256] [--out bench/results/ppo_memory-<machine>.json]

Each setup runs in its own fresh process: load, then what one PPO step asks of each role on a [batch, seq] batch
(policy forward+backward, ref forward, value forward+backward, reward forward). Peak memory is
`torch.cuda.max_memory_allocated` on a GPU; on CPU it is the process's peak resident set (VmHWM in
/proc/self/status) above its resident set after the imports, with the kernel's peak counter reset there (writing 5 to
/proc/self/clear_refs), so the import-time peak does not hide what the models add. Without adapter folders, random
LoRA adapters (r=16, all-linear) are made for the model first. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: peak resident) in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def rss_mb() -> float:
    return _status_mb("VmRSS")


def peak_rss_mb() -> float:
    return _status_mb("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def warm_imports(model: str) -> None:
    """Import what loading imports lazily (bitsandbytes, peft, the architecture's modeling module) before the
    baseline is taken, so that the measured memory is the models' and not the libraries' code."""
    import importlib

    import bitsandbytes  # noqa: F401
    import peft  # noqa: F401
    from transformers import AutoConfig

    from workbench.modeling import loading

    path, _ = loading.resolve_model_path(model)
    kind = AutoConfig.from_pretrained(path).model_type
    importlib.import_module(f"transformers.models.{kind}.modeling_{kind}")
    importlib.import_module("transformers.integrations.bitsandbytes")


def make_adapters(model: str, out: Path) -> tuple[Path, Path]:
    import torch

    from workbench.modeling import adapters, loading
    from workbench.modeling.arguments import ModelArguments

    args = ModelArguments(model_name_or_path=model, load_in_4bit=False, dtype="float32", device_map="cpu", lora_r=16)
    tokenizer = loading.load_tokenizer(model)
    made = []
    for head, task, stage in (("causal_lm", "CAUSAL_LM", "sft"), ("scalar", "SEQ_CLS", "reward")):
        base = loading.load_model(args, head=head, pad_token_id=tokenizer.pad_token_id)
        peft = adapters.attach(base, "default", config=adapters.get_peft_config(args, task))
        with torch.no_grad():
            for name, parameter in peft.named_parameters():
                if ".default." in name and parameter.is_floating_point():
                    parameter.normal_(0, 0.01)
        info = peft.workbench_base.to_dict()
        manifest = adapters.AdapterManifest(stage=stage, base_model=info, peft_method="lora", task_type=task)
        made.append(adapters.save(peft, "default", out / stage, manifest))
    return made[0], made[1]


def measure(setup: str, model: str, sft: str, reward: str, batch: int, seq: int, dtype: str) -> dict:
    """One setup in this process: load it, run one PPO step's worth of forward/backward passes, report the peak."""
    import torch

    from workbench.modeling import adapters, heads, loading
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.single_base import load_single_base

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    warm_imports(model)
    gc.collect()
    peak_reset = reset_peak_rss()
    baseline = rss_mb()
    args = ModelArguments(model_name_or_path=model, dtype=dtype, device_map=device)
    loading.get_quantization(args)  # fail early on a bad dtype
    ids = torch.randint(10, 1000, (batch, seq), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    if setup == "single_base":
        model_ = load_single_base(args, sft_adapter=sft, reward_adapter=reward)
        roles = {
            "policy": lambda: (adapters.switch(model_, "policy"), model_(input_ids=ids, attention_mask=mask).logits)[
                1
            ],
            "ref": lambda: (adapters.switch(model_, "ref"), model_(input_ids=ids, attention_mask=mask).logits)[1],
            "value": lambda: heads.token_values(model_, "value", ids, mask),
            "reward": lambda: heads.scalar_scores(model_, "reward", ids, mask),
        }
    else:
        tokenizer = loading.load_tokenizer(model)

        def load(head, path, trainable):
            base = loading.load_model(args, head=head, for_training=trainable, pad_token_id=tokenizer.pad_token_id)
            return adapters.attach(base, "default", path=path, trainable=trainable)

        policy, ref = load("causal_lm", sft, True), load("causal_lm", sft, False)
        value, reward_model = load("scalar", reward, True), load("scalar", reward, False)
        roles = {
            "policy": lambda: policy(input_ids=ids, attention_mask=mask).logits,
            "ref": lambda: ref(input_ids=ids, attention_mask=mask).logits,
            "value": lambda: value(input_ids=ids, attention_mask=mask).logits,
            "reward": lambda: reward_model(input_ids=ids, attention_mask=mask).logits,
        }
    gc.collect()
    loaded_mb = (torch.cuda.memory_allocated() / 2**20) if cuda else rss_mb() - baseline
    for role, forward in roles.items():
        if role in ("policy", "value"):
            forward().float().mean().backward()
        else:
            with torch.no_grad():
                forward()
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20) if cuda else peak_rss_mb() - baseline
    result = {"setup": setup, "loaded_mb": round(loaded_mb, 1), "peak_mb": round(peak_mb, 1)}
    if not cuda:  # the whole process too (imports included, the same in both setups)
        result.update(
            baseline_rss_mb=round(baseline, 1),
            peak_counter_reset=peak_reset,
            process_peak_rss_mb=round(peak_rss_mb(), 1),
        )
    return result


def ratio(results: dict, key: str) -> float | None:
    single, four = results["single_base"].get(key), results["four_models"].get(key)
    return round(four / single, 2) if single and four is not None else None


def machine() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def emit(result: dict, out: str | None) -> None:
    """Print a benchmark's JSON; with `out`, also write it there (its folder made, the file replaced whole)."""
    from workbench.fileio import write_json_atomic

    print(json.dumps(result, indent=2))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--sft_adapter")
    parser.add_argument("--reward_adapter")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--dtype", default=None, help="4-bit compute dtype; default float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    if args.child:
        result = measure(args.child, args.model, args.sft_adapter, args.reward_adapter, args.batch, args.seq, dtype)
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        sft, reward = args.sft_adapter, args.reward_adapter
        if not (sft and reward):
            sft, reward = map(str, make_adapters(args.model, Path(scratch)))
        results = {}
        for setup in ("single_base", "four_models"):
            command = [sys.executable, __file__, "--child", setup, "--model", args.model, "--sft_adapter", sft]
            command += [
                "--reward_adapter",
                reward,
                "--batch",
                str(args.batch),
                "--seq",
                str(args.seq),
                "--dtype",
                dtype,
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True)
            results[setup] = json.loads(done.stdout.strip().splitlines()[-1])
    report = {
        "benchmark": "ppo_memory",
        "model": args.model,
        "quantization": "4-bit nf4 + double quant",
        "compute_dtype": dtype,
        "batch": args.batch,
        "seq": args.seq,
        "measure": "torch.cuda.max_memory_allocated"
        if torch.cuda.is_available()
        else "VmHWM (reset after imports) minus VmRSS after imports; loaded_mb: VmRSS after loading minus the same",
        "machine": machine(),
        "torch": torch.__version__,
        **results,
        "peak_ratio_four_over_single": ratio(results, "peak_mb"),
        "loaded_ratio_four_over_single": ratio(results, "loaded_mb"),
        "process_peak_ratio_four_over_single": ratio(results, "process_peak_rss_mb"),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
