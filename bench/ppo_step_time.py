"""Time per PPO step: `workbench ppo` (one base, four adapters) against TRL 1.12.0's `trl.experimental.ppo`
PPOTrainer (the last TRL with PPO; deleted in 1.13), on the same model, prompts, batch and response length.

    python bench/ppo_step_time.py [--model smollm2-135m-instruct] [--steps 4] [--batch 8] [--response_length 32]
                                  [--out bench/results/ppo_step_time-<machine>.json]

TRL 1.12 runs in its own venv (default ~/.cache/workbench/venvs/trl-1.12.0, made here on first use: `pip install
torch==<ours> trl==1.12.0` plus our transformers/peft/accelerate/datasets versions) through bench/trl112/ppo_driver.py.
Both sides: batch of B prompts, one sampled response each of exactly `response_length` tokens (no stop token:
TRL `stop_token=None`, ours a stop token the model never writes; the JSON records the measured lengths), 2 PPO
epochs over one minibatch of B, LoRA r=16 on all linear layers of the policy, k3 KL. The workbench is timed three
times: its fp32 base (TRL's precision) and its default 4-bit NF4 base, both with the value adapter as the critic (as
TRL's separate value model), and the fp32 base with the critic as a head on the reference pass's hidden states
(`value_model: ref_features`: no value forward pass, only the head trained). Step time: the median over the steps
after the first (warm-up); the workbench's steps are also split into their phases (generation, each scoring pass,
the policy and value updates, the optimizer steps). If TRL cannot be installed or run, the JSON records the exact
error. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
VENV = Path.home() / ".cache" / "workbench" / "venvs" / "trl-1.12.0"
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
NEVER_WRITTEN = "<filename>"  # a SmolLM2 special token a chat model does not produce: responses run full length

RECIPE = """\
model_name_or_path: {model}
load_in_4bit: {four_bit}
use_bnb_nested_quant: true
dtype: {dtype}
sft_adapter: {sft}
reward_adapter: {reward}
prompts:
  - path: {prompts}
total_steps: {steps}
batch_size: {batch}
mini_batch_size: {batch}
gradient_accumulation_steps: 1
ppo_epochs: 2
max_new_tokens: {length}
temperature: 0.7
top_k: 0
top_p: 1.0
stop_tokens: ["{stop}"]
kl_estimator: k3
kl_coef: 0.05
learning_rate: 1.0e-5
save_steps: 1000
seed: 0
wandb_mode: disabled
output_dir: {output_dir}
value_model: {value_model}
"""


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def ensure_venv(venv: Path) -> tuple[Path | None, str | None]:
    """The TRL 1.12.0 venv's python, made if missing; (None, the exact error) when it cannot be made."""
    import accelerate
    import datasets
    import peft
    import torch
    import transformers

    python = venv / "bin" / "python"
    check = [str(python), "-c", "import trl, trl.experimental.ppo; assert trl.__version__ == '1.12.0'"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, None
    pins = [
        f"torch=={torch.__version__.split('+')[0]}",  # the local CPU wheel (plain `torch` pulls GBs of CUDA)
        "trl==1.12.0",
        f"transformers=={transformers.__version__}",
        f"peft=={peft.__version__}",
        f"accelerate=={accelerate.__version__}",
        f"datasets=={datasets.__version__}",
    ]
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", *pins]]
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"`{' '.join(command)}` exited {done.returncode}: {tail(done.stderr or done.stdout)}"
    done = subprocess.run(check, capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"trl 1.12.0 installed but does not import: {tail(done.stderr)}"
    return python, None


def steady(seconds: list[float]) -> float | None:
    timed = seconds[1:] or seconds
    return round(statistics.median(timed), 3) if timed else None


def run_workbench(
    model, sft, reward, prompts, args, four_bit: bool, scratch: Path, value_model: str = "adapter"
) -> dict:
    output_dir = scratch / f"ppo-{'4bit' if four_bit else 'full'}-{value_model}"
    recipe = scratch / f"{output_dir.name}.yaml"
    recipe.write_text(
        RECIPE.format(
            model=model, four_bit=str(four_bit).lower(), sft=sft, reward=reward, prompts=prompts, steps=args.steps,
            batch=args.batch, length=args.response_length, stop=NEVER_WRITTEN, output_dir=output_dir,
            dtype=args.dtype, value_model=value_model,
        )
    )  # fmt: skip
    command = [sys.executable, "-m", "workbench.cli", "ppo", "--config", str(recipe)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        return {"error": f"workbench ppo exited {done.returncode}: {tail(done.stderr)}"}
    history = json.loads((output_dir / "metrics.json").read_text())["history"]
    seconds = [row["perf/step_seconds"] for row in history]
    return {
        "base": f"4-bit nf4 + double quant, {args.dtype} compute" if four_bit else args.dtype,
        "value_model": value_model,
        "step_seconds": [round(s, 3) for s in seconds],
        "steady_step_seconds": steady(seconds),
        # the step's phases (workbench/rl/phase_timer.py), each the median over the steps after the first
        "steady_phase_seconds": {
            key[len("perf/") : -len("_seconds")]: steady([row[key] for row in history])
            for key in history[0]
            if key.startswith("perf/") and key.endswith("_seconds") and key != "perf/step_seconds"
        },
        "mean_response_length": statistics.mean(row["response/length"] for row in history),
    }


def run_trl(python: Path, model_path: str, prompt_ids: list, args, scratch: Path) -> dict:
    spec = {
        "model": model_path, "prompts": prompt_ids, "steps": args.steps, "batch_size": args.batch, "ppo_epochs": 2,
        "response_length": args.response_length, "temperature": 0.7, "learning_rate": 1e-5, "kl_coef": 0.05,
        "kl_estimator": "k3", "lora_r": 16, "lora_alpha": 32, "seed": 0, "dtype": args.dtype,
    }  # fmt: skip
    (scratch / "spec.json").write_text(json.dumps(spec))
    out = scratch / "trl.json"
    command = [str(python), str(ROOT / "bench" / "trl112" / "ppo_driver.py"), "--spec", str(scratch / "spec.json")]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if args.trl_pythonpath:  # TRL 1.12 installed into a folder of its own, ahead of the other packages
        env["PYTHONPATH"] = args.trl_pythonpath
    done = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": f"trl 1.12.0 PPOTrainer exited {done.returncode}: {tail(done.stderr)}"}
    result = json.loads(out.read_text())
    seconds = result.pop("step_seconds")
    return {
        **result,
        "base": f"{args.dtype}; policy + LoRA (ref = adapter disabled), reward and value models loaded separately",
        "step_seconds": [round(s, 3) for s in seconds],
        "steady_step_seconds": steady(seconds),
        "mean_response_length": args.response_length,  # stop_token=None: TRL always generates response_length
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--response_length", type=int, default=32)
    parser.add_argument("--venv", default=str(VENV))
    parser.add_argument(
        "--trl_pythonpath",
        help="run TRL 1.12 with this PYTHONPATH and our python instead of a venv (where nothing can be installed: "
        "a folder holding trl 1.12.0 first, then the one with the other packages)",
    )
    parser.add_argument("--dtype", help="weights and compute dtype of both sides; float32 on CPU, bfloat16 on a GPU")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    import torch

    args.dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")

    from ppo_memory import emit, machine, make_adapters

    from workbench.data.mixture import DatasetSpec, load_raw
    from workbench.modeling import loading
    from workbench.modeling.tokens import encode_prompts

    model_path = str(loading.resolve_model_path(args.model)[0])
    tokenizer = loading.load_tokenizer(model_path)
    rows = load_raw(DatasetSpec(path="bundled:prompts"), "bundled:prompts").filter(lambda r: r["split"] == "train")
    prompts = [row["prompt"] for row in rows][: args.batch * args.steps]
    prompt_ids = encode_prompts(tokenizer, prompts, max_prompt_length=256)

    python, venv_error = (Path(sys.executable), None) if args.trl_pythonpath else ensure_venv(Path(args.venv))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        prompts_file = scratch / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        sft, reward = make_adapters(model_path, scratch / "adapters")
        full = f"workbench_{DTYPE_NAMES[args.dtype]}"
        sides = {
            "trl_1_12_0": lambda: (
                {"error": venv_error} if venv_error else run_trl(python, model_path, prompt_ids, args, scratch)
            ),
            "workbench_4bit": lambda: run_workbench(model_path, sft, reward, prompts_file, args, True, scratch),
            full: lambda: run_workbench(model_path, sft, reward, prompts_file, args, False, scratch),
            f"{full}_ref_features": lambda: run_workbench(
                model_path, sft, reward, prompts_file, args, False, scratch, "ref_features"
            ),
        }
        results = {}
        for name, side in sides.items():
            results[name] = side()
            emit({"benchmark": "ppo_step_time", "partial": True, **results}, args.out)  # a run cut short keeps these

    def ratio(theirs: str, ours: str) -> float | None:
        a, b = results[theirs].get("steady_step_seconds"), results[ours].get("steady_step_seconds")
        return round(a / b, 2) if a and b else None

    report = {
        "benchmark": "ppo_step_time",
        "model": args.model,
        "prompts": f"bundled:prompts (split train), first {len(prompts)}, chat template with generation prompt",
        "batch": args.batch,
        "mini_batch": args.batch,
        "ppo_epochs": 2,
        "response_length": args.response_length,
        "steps": args.steps,
        "step_time": "median seconds per PPO step (rollout + scoring + updates) over the steps after the first",
        "machine": machine(),
        "load_average_1_5_15min": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        **results,
        "dtype": args.dtype,
        "command": " ".join(["python", "bench/ppo_step_time.py", *sys.argv[1:]]),
        f"ratio_trl_over_{full}": ratio("trl_1_12_0", full),
        f"ratio_trl_over_{full}_ref_features": ratio("trl_1_12_0", f"{full}_ref_features"),
        "ratio_trl_over_workbench_4bit": ratio("trl_1_12_0", "workbench_4bit"),
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
