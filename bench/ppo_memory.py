"""Peak memory of the single-base PPO (one 4-bit base, four adapters) against four separately loaded 4-bit models.

    python bench/ppo_memory.py [--model smollm2-135m-instruct] [--sft_adapter DIR --reward_adapter DIR]
                               [--batch 4 --query 128 --response 128] [--gradient_checkpointing both|on|off]
                               [--out bench/results/ppo_memory-<machine>.json]

Each setup runs in its own fresh process: load, then the passes of one PPO step on [batch, query + response] token
sequences, as that setup computes them: rollout scoring without gradient (reference log-probs, reward), then the
update's policy and value forward + backward.
- single_base: the RL stage's own functions (`response_logprobs`: the output head over the response positions only,
  a chunk of tokens at a time, workbench/modeling/chunked_logprobs.py; `response_values`; `scalar_scores`).
- single_base_ref_features: the same with PPO's `value_model: ref_features`: no value adapter; the reference pass's
  hidden states are kept (`response_logprobs_and_features`) and the value update is the head on them.
- four_models: TRL 1.12's PPOTrainer (trl/experimental/ppo): policy, reference, value and reward models loaded
  separately, the logits of the whole sequence, `selective_log_softmax` and the softmax entropy over the response's.
Every setup runs twice, without and with gradient checkpointing (the same setting on every side: the CPU quickstart
runs without, the GPU recipes with).

Peak memory is `torch.cuda.max_memory_allocated` on a GPU; on CPU it is the process's peak resident set (VmHWM in
/proc/self/status) above its resident set after the imports, with the kernel's peak counter reset there (writing 5 to
/proc/self/clear_refs), so the import-time peak does not hide what the models add, and glibc's mmap threshold
fixed (CHILD_ENV), so that freed memory leaves the resident set. Three figures per setup: `loaded_mb` once
loaded; `load_peak_mb`, the peak while loading; `step_peak_mb`, the peak of the step's passes, the counter reset once
loaded (the target's measure: loading's CPU peak is mostly the checkpoint file's pages, mapped while the weights are
read and quantized, page cache the kernel can drop, not tensors); `peak_mb` is the larger of the two, the whole
process. Dropout is off on both sides, as both PPOs run.
Without adapter folders, random LoRA adapters (r=16, all-linear) are made for the model first. Prints one JSON
object.
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
# glibc's malloc raises its mmap threshold as big blocks are freed, after which freed activations stay in its heaps:
# the resident set's peak then counts memory no tensor holds. A fixed threshold returns every block over 128 KiB to
# the kernel when it is freed, so the peak resident set follows the live tensors (every setup runs under it).
CHILD_ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}


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


def _backward(output) -> None:
    output.float().mean().backward()


def measure(
    setup: str,
    model: str,
    sft: str,
    reward: str,
    batch: int,
    query: int,
    response: int,
    dtype: str,
    checkpointing: bool,
) -> dict:
    """One setup in this process: load it, run the passes of one PPO step as that setup computes them, report the
    peak. Rollout scoring without gradient (reference log-probs, reward), then the update's policy and value
    forward + backward on the same [batch, query + response] sequences."""
    import torch
    from trl.trainer.utils import disable_dropout_in_model, selective_log_softmax

    from workbench.modeling import adapters, heads, loading
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.single_base import (
        POLICY,
        REF,
        REWARD,
        VALUE,
        load_single_base,
        response_logprobs,
        response_logprobs_and_features,
        response_values,
    )

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    warm_imports(model)
    gc.collect()
    peak_reset = reset_peak_rss()
    baseline = rss_mb()
    args = ModelArguments(model_name_or_path=model, dtype=dtype, device_map=device)
    loading.get_quantization(args)  # fail early on a bad dtype
    generator = torch.Generator().manual_seed(0)
    query_ids = torch.randint(10, 1000, (batch, query), generator=generator).to(device)
    response_ids = torch.randint(10, 1000, (batch, response), generator=generator).to(device)
    query_mask, response_mask = torch.ones_like(query_ids), torch.ones_like(response_ids)
    ids, mask = torch.cat([query_ids, response_ids], 1), torch.ones(batch, query + response, device=device).long()
    parts = (query_ids, query_mask, response_ids, response_mask)

    def on(name, forward, backward=False):  # a single-base pass (and its backward) under one adapter
        def run():  # under gradient checkpointing backward recomputes under the active adapter: keep it on
            with adapters.use_adapter(model_, name):
                return _backward(forward()) if backward else forward()

        return run

    if setup == "single_base":  # the RL stage's own functions (workbench/rl/rollout.py, workbench/rl/trainer.py)
        model_ = load_single_base(args, sft_adapter=sft, reward_adapter=reward, gradient_checkpointing=checkpointing)
        scoring = [
            on(REF, lambda: response_logprobs(model_, *parts, 1.0)[0]),
            lambda: heads.scalar_scores(model_, REWARD, ids, mask),
        ]
        update = [  # the RL trainer's order (workbench/rl/trainer.py): policy, then value, one optimizer step
            on(POLICY, lambda: response_logprobs(model_, *parts, 1.0)[0], backward=True),
            on(VALUE, lambda: response_values(model_, *parts), backward=True),
        ]
        trained = [model_]
    elif setup == "single_base_ref_features":  # value_model ref_features: the critic is a head on ref's features
        model_ = load_single_base(
            args,
            sft_adapter=sft,
            reward_adapter=reward,
            gradient_checkpointing=checkpointing,
            value_model="ref_features",
        )
        kept = {}  # the rollout keeps the reference pass's hidden states for the value updates
        scoring = [
            on(REF, lambda: kept.update(features=response_logprobs_and_features(model_, *parts, 1.0)[1])),
            lambda: heads.scalar_scores(model_, REWARD, ids, mask),
        ]
        update = [
            on(POLICY, lambda: response_logprobs(model_, *parts, 1.0)[0], backward=True),
            lambda: _backward(heads.head_values(model_, VALUE, kept["features"])),
        ]
        trained = [model_]
    else:  # TRL 1.12's PPOTrainer: four models, logits of the whole sequence, log-softmax and entropy over them
        tokenizer = loading.load_tokenizer(model)

        def load(head, path, trainable):
            base = loading.load_model(
                args,
                head=head,
                for_training=trainable,
                pad_token_id=tokenizer.pad_token_id,
                gradient_checkpointing=checkpointing and trainable,
            )
            return adapters.attach(base, "default", path=path, trainable=trainable)

        policy, ref = load("causal_lm", sft, True), load("causal_lm", sft, False)
        value, reward_model = load("scalar", reward, True), load("scalar", reward, False)

        def logprobs(causal_lm, with_entropy):
            logits = causal_lm(input_ids=ids, attention_mask=mask).logits[:, query - 1 : -1]
            logprobs = selective_log_softmax(logits, response_ids)
            if with_entropy:  # trl/experimental/ppo/ppo_trainer.py: in the minibatch loop, with the graph kept
                probs = torch.nn.functional.softmax(logits, dim=-1)
                return logprobs, torch.logsumexp(logits, dim=-1) - torch.sum(probs * logits, dim=-1)
            return logprobs, None

        scoring = [lambda: logprobs(ref, False)[0], lambda: reward_model(input_ids=ids, attention_mask=mask).logits]
        update = [
            lambda: _backward(logprobs(policy, True)[0]),
            lambda: _backward(value(input_ids=ids, attention_mask=mask).logits),
        ]
        trained = [policy, value]
    gc.collect()
    loaded_mb = (torch.cuda.memory_allocated() / 2**20) if cuda else rss_mb() - baseline
    load_peak_mb = (torch.cuda.max_memory_allocated() / 2**20) if cuda else peak_rss_mb() - baseline
    # the step's own peak: the counter restarts from what is loaded (on CPU loading's peak is mostly the checkpoint
    # file's pages, mapped while the weights are read and quantized, which the kernel can drop; a GPU's loading peak
    # is the bf16 weights before quantization)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        peak_reset = reset_peak_rss() and peak_reset
    with torch.no_grad():
        for forward in scoring:
            forward()
    for module in trained:  # gradient checkpointing only acts in train mode; both PPOs turn dropout off
        module.train()
        disable_dropout_in_model(module)
    for forward_and_backward in update:
        forward_and_backward()
    step_peak_mb = (torch.cuda.max_memory_allocated() / 2**20) if cuda else peak_rss_mb() - baseline
    result = {
        "setup": setup,
        "loaded_mb": round(loaded_mb, 1),
        "load_peak_mb": round(load_peak_mb, 1),
        "step_peak_mb": round(step_peak_mb, 1),
        "peak_mb": round(max(load_peak_mb, step_peak_mb), 1),
    }
    if not cuda:  # the whole process too (imports included, the same in every setup)
        result.update(
            baseline_rss_mb=round(baseline, 1),
            peak_counter_reset=peak_reset,
            process_peak_rss_mb=round(peak_rss_mb(), 1),
        )
    return result


def ratio(results: dict, key: str, single: str = "single_base") -> float | None:
    """single base / four models: the issue's target is <= 0.35 at the step's peak (step_peak_mb)."""
    single, four = results[single].get(key), results["four_models"].get(key)
    return round(single / four, 3) if single is not None and four else None


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
    parser.add_argument("--query", type=int, default=128, help="prompt tokens per sequence")
    parser.add_argument("--response", type=int, default=128, help="response tokens per sequence")
    parser.add_argument("--dtype", default=None, help="4-bit compute dtype; default float32 on CPU, bfloat16 on GPU")
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--gradient_checkpointing",
        choices=("both", "on", "off"),
        default="both",
        help="run both setups without and with it (both), or only one way (long sequences without need a lot)",
    )
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    shape = (args.batch, args.query, args.response)
    if args.child:
        result = measure(
            args.child, args.model, args.sft_adapter, args.reward_adapter, *shape, dtype, args.checkpointing
        )
        print(json.dumps(result))
        return 0
    settings = {}
    with tempfile.TemporaryDirectory() as scratch:
        sft, reward = args.sft_adapter, args.reward_adapter
        if not (sft and reward):
            sft, reward = map(str, make_adapters(args.model, Path(scratch)))
        ways = {"both": (False, True), "on": (True,), "off": (False,)}[args.gradient_checkpointing]
        for checkpointing in ways:  # the same setting on both sides
            results = {}
            for setup in ("single_base", "single_base_ref_features", "four_models"):
                command = [sys.executable, __file__, "--child", setup, "--model", args.model, "--dtype", dtype]
                command += ["--sft_adapter", sft, "--reward_adapter", reward, "--batch", str(args.batch)]
                command += ["--query", str(args.query), "--response", str(args.response)]
                command += ["--checkpointing"] * checkpointing
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True, env=CHILD_ENV)
                results[setup] = json.loads(done.stdout.strip().splitlines()[-1])
            settings["gradient_checkpointing" if checkpointing else "no_checkpointing"] = {
                **results,
                "step_peak_ratio_single_over_four": ratio(results, "step_peak_mb"),
                "load_peak_ratio_single_over_four": ratio(results, "load_peak_mb"),
                "peak_ratio_single_over_four": ratio(results, "peak_mb"),
                "loaded_ratio_single_over_four": ratio(results, "loaded_mb"),
                "process_peak_ratio_single_over_four": ratio(results, "process_peak_rss_mb"),
                "ref_features_step_peak_ratio_single_over_four": ratio(
                    results, "step_peak_mb", "single_base_ref_features"
                ),
                "ref_features_peak_ratio_single_over_four": ratio(results, "peak_mb", "single_base_ref_features"),
            }
    report = {
        "benchmark": "ppo_memory",
        "command": " ".join(["python", "bench/ppo_memory.py", *sys.argv[1:]]),
        "model": args.model,
        "quantization": "4-bit nf4 + double quant",
        "compute_dtype": dtype,
        "batch": args.batch,
        "query_tokens": args.query,
        "response_tokens": args.response,
        "measure": "torch.cuda.max_memory_allocated"
        if torch.cuda.is_available()
        else "VmHWM (reset after imports) minus VmRSS after imports; loaded_mb: VmRSS after loading minus the same",
        "machine": machine(),
        "versions": versions(),
        **settings,
    }
    emit(report, args.out)
    return 0


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "peft", "bitsandbytes", "trl")}


if __name__ == "__main__":
    sys.exit(main())
