"""The reward stage with each ranking's prompt tokens run once (`share_prompt_tokens: true`, the default) against
every answer run whole (`false`, the baseline), on one pipeline run's labels: time and what it trains.

    python bench/reward_shared_prompt.py [--run outputs/quickstart] [--repeats 1]
                                         [--out bench/results/reward_shared_prompt-<machine>.json]

Runs `workbench reward --config RUN/recipes/reward.yaml` (the run's own reward recipe: its labels, held-out split,
seed and sizes) into a scratch folder, baseline then shared, `repeats` times, W&B off. Per way: the stage's wall
seconds (the process, imports and model loading included), TRL's `train_runtime`, the held-out accuracy and mean
margin; then the ratios baseline / shared (the median of the repeats) and the largest difference between the two
ways' saved adapter weights (LoRA dropout draws different masks for a prompt run once than for its rows run whole,
so the weights agree closely, not bit for bit). Prints one JSON object (and writes it with --out).
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_record  # noqa: E402  (bench/, beside this script)

WAYS = {"baseline": "false", "shared": "true"}


def run_stage(recipe: Path, output_dir: Path, share: str) -> dict:
    command = ["workbench", "reward", "--config", str(recipe), "--output_dir", str(output_dir)]
    command += ["--wandb_mode", "disabled", "--share_prompt_tokens", share, "--overwrite"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    keep = ("train_runtime", "train_loss", "eval_accuracy", "eval_mean_margin", "eval_pairs")
    return {"stage_seconds": round(seconds, 1), **{key: metrics.get(key) for key in keep}}


def largest_weight_difference(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    first, second = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    return max((first[key].float() - second[key].float()).abs().max().item() for key in first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/quickstart", help="a finished pipeline run (its reward recipe)")
    parser.add_argument("--repeats", type=int, default=1, help="baseline-then-shared pairs to run")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    recipe = Path(args.run) / "recipes" / "reward.yaml"
    if not recipe.is_file():
        raise SystemExit(f"{recipe}: not found; give --run a pipeline run folder whose reward stage has run")
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(args.repeats):
            for way, share in WAYS.items():
                runs[way].append(run_stage(recipe, Path(scratch) / f"{way}-{repeat}", share))
                print(f"{way} {repeat}: {runs[way][-1]}", file=sys.stderr)
        difference = largest_weight_difference(
            Path(scratch) / "baseline-0" / "adapter", Path(scratch) / "shared-0" / "adapter"
        )

    def median(way: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[way])

    bench_record.emit(
        {
            "benchmark": "reward_shared_prompt",
            "command": " ".join(["python", "bench/reward_shared_prompt.py", *sys.argv[1:]]),
            "machine": bench_record.machine(),
            "versions": bench_record.versions("torch", "transformers", "trl", "peft"),
            "recipe": str(recipe),
            "runs": runs,
            "ratio_stage_seconds": round(median("baseline", "stage_seconds") / median("shared", "stage_seconds"), 3),
            "ratio_train_runtime": round(median("baseline", "train_runtime") / median("shared", "train_runtime"), 3),
            "largest_adapter_weight_difference": difference,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
