"""Peak memory of `workbench dpo` (one base: the SFT adapter trained, TRL's frozen copy of it as the reference)
against TRL's two-model DPO (the policy and a separately loaded reference model, `ref_model=`: the SFT
adapter merged into a second copy of the base).

    python bench/dpo_memory.py [--model smollm2-135m-instruct] [--sft_adapter DIR] [--load_in_4bit true|false]
                               [--steps 3 --batch 4 --max_length 256] [--out bench/results/dpo_memory-<machine>.json]

Each setup runs in its own fresh process: load, then `--steps` steps of TRL's DPOTrainer on the bundled preference
pairs. Peak memory is measured as in bench/ppo_memory.py (torch.cuda.max_memory_allocated on a GPU; on CPU the peak
resident set above the resident set after the imports). Without --sft_adapter a random LoRA (r=16, all-linear) is
made first. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ppo_memory import emit, machine, make_adapters, peak_rss_mb, reset_peak_rss, rss_mb, warm_imports  # noqa: E402


def measure(setup: str, model: str, sft: str, four_bit: bool, steps: int, batch: int, max_length: int) -> dict:
    """One setup in this process: load it, train `steps` DPO steps, report the peak."""
    import torch
    from trl import DPOConfig, DPOTrainer

    from workbench.data.preference_data import load_preferences
    from workbench.modeling import adapters, loading
    from workbench.modeling.arguments import ModelArguments

    cuda = torch.cuda.is_available()
    warm_imports(model)
    pairs, _, _ = load_preferences([{"path": "bundled:preferences", "where": {"split": "train"}}], "datasets", 0)
    pairs = pairs.select(range(steps * batch))
    gc.collect()
    peak_reset = reset_peak_rss()
    baseline = rss_mb()
    dtype = "bfloat16" if cuda else "float32"
    device = "cuda" if cuda else "cpu"
    args = ModelArguments(model_name_or_path=model, load_in_4bit=four_bit, dtype=dtype, device_map=device)
    tokenizer = loading.load_tokenizer(args)

    def load(trainable: bool):
        base = loading.load_model(args, for_training=trainable)
        return adapters.attach(base, "default", path=sft, trainable=trainable)

    policy = load(True)
    # TRL's two-model DPO takes the reference as its own plain model: the SFT policy, merged into a second base
    ref_model = load(False).merge_and_unload() if setup == "two_models" else None
    with tempfile.TemporaryDirectory() as scratch:
        config = DPOConfig(
            output_dir=scratch,
            max_steps=steps,
            per_device_train_batch_size=batch,
            max_length=max_length,
            learning_rate=5e-5,
            report_to=[],
            save_strategy="no",
            use_cpu=not cuda,
            bf16=cuda,
            logging_steps=1,
        )
        trainer = DPOTrainer(
            model=policy, ref_model=ref_model, args=config, train_dataset=pairs, processing_class=tokenizer
        )
        adapters_on_policy = sorted(trainer.model.peft_config)
        gc.collect()
        loaded_mb = (torch.cuda.memory_allocated() / 2**20) if cuda else rss_mb() - baseline
        trainer.train()
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20) if cuda else peak_rss_mb() - baseline
    result = {
        "setup": setup,
        "adapters_on_the_policy_base": adapters_on_policy,
        "separate_reference_model": ref_model is not None,
        "loaded_mb": round(loaded_mb, 1),
        "peak_mb": round(peak_mb, 1),
    }
    if not cuda:
        result.update(baseline_rss_mb=round(baseline, 1), peak_counter_reset=peak_reset)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--sft_adapter")
    parser.add_argument("--load_in_4bit", default="true", choices=["true", "false"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max_length", type=int, default=256)
    parser.add_argument("--out", help="also write the JSON here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    four_bit = args.load_in_4bit == "true"
    sizes = ["--steps", str(args.steps), "--batch", str(args.batch), "--max_length", str(args.max_length)]
    if args.child:
        result = measure(args.child, args.model, args.sft_adapter, four_bit, args.steps, args.batch, args.max_length)
        print(json.dumps(result))
        return 0
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        sft = args.sft_adapter or str(make_adapters(args.model, Path(scratch))[0])
        results = {}
        for setup in ("single_base", "two_models"):
            command = [sys.executable, __file__, "--child", setup, "--model", args.model, "--sft_adapter", sft]
            command += ["--load_in_4bit", args.load_in_4bit, *sizes]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
            if done.returncode:
                raise SystemExit(f"bench/dpo_memory.py: {setup} failed:\n{done.stderr[-3000:]}")
            results[setup] = json.loads(done.stdout.strip().splitlines()[-1])
    single, two = results["single_base"], results["two_models"]
    report = {
        "benchmark": "dpo_memory",
        "command": "python " + " ".join(sys.argv),
        "model": args.model,
        "quantization": "4-bit nf4 + double quant" if four_bit else "none (float32 base)",
        **dict(zip(("steps", "batch", "max_length"), (args.steps, args.batch, args.max_length))),
        "measure": "torch.cuda.max_memory_allocated"
        if torch.cuda.is_available()
        else "VmHWM (reset after imports) minus VmRSS after imports; loaded_mb: VmRSS after loading minus the same",
        "machine": machine(),
        "torch": torch.__version__,
        **results,
        "peak_ratio_two_models_over_single_base": round(two["peak_mb"] / single["peak_mb"], 2),
        "loaded_ratio_two_models_over_single_base": round(two["loaded_mb"] / single["loaded_mb"], 2),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
