"""How much of a run's decoding goes to rows that have already stopped: the most that dropping finished rows from the
decode batch could save (issue 15's "stopping finished sequences early"), before building it.

    python bench/decode_waste.py --run outputs/quickstart [--speed bench/results/generation_speed-cpu-2core.json]
                                 [--out bench/results/decode_waste-<machine>.json]

`transformers`' `generate` keeps every row of a batch until the last one stops (or `max_new_tokens`): a row that
stopped at token 20 of 48 still costs 28 decoding steps. Here, from a finished pipeline run, the answers as the
stages decoded them: the generate stage's candidates (its `batch_size` rows a call) and each policy's greedy eval
answers (`eval/samples.jsonl`, one call of `batch_size` rows per policy; best-of-N keeps only the chosen samples, so
its calls are not counted). For every call: its decoding steps (its longest answer), the row-steps it ran and those
of rows still live, and so the finished share. Seconds come from a linear model of one decoding step's time,
a + c x rows, fitted on `--speed`'s two batch sizes of the stages' CPU path (float32 base, LoRA folded): the time a
call would save if each step cost only its live rows. Prints one JSON object (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_record  # noqa: E402  (bench/, beside this script)


def step_cost(speed: dict) -> tuple[float, float]:
    """(a, c): seconds of one decoding step = a + c x rows, from the float32 folded rows of generation_speed's JSON."""
    rows = sorted(
        (row["batch"], row["decode_seconds_per_step"])
        for row in speed["rows"]
        if row["precision"] == "fp32" and row["lora"] == "folded"
    )
    (b1, t1), (b2, t2) = rows[0], rows[-1]
    per_row = (t2 - t1) / (b2 - b1)
    return t1 - per_row * b1, per_row


def call_waste(lengths: list[int], cost: tuple[float, float]) -> dict:
    """One decode call's rows, each running `length` steps (its tokens, the stop token included)."""
    fixed, per_row = cost
    steps = max(lengths)
    row_steps, live = steps * len(lengths), sum(lengths)
    return {
        "rows": len(lengths),
        "steps": steps,
        "row_steps": row_steps,
        "live_row_steps": live,
        "finished_share": round(1 - live / row_steps, 3),
        "stopped_rows": sum(length < steps for length in lengths),
        "decode_seconds_model": round(steps * fixed + row_steps * per_row, 2),
        "saved_seconds_model": round((row_steps - live) * per_row, 2),
    }


def calls(lengths: list[int], batch: int, cost) -> list[dict]:
    return [call_waste(lengths[start : start + batch], cost) for start in range(0, len(lengths), batch)]


def summed(rows: list[dict]) -> dict:
    total = {key: sum(row[key] for row in rows) for key in ("row_steps", "live_row_steps")}
    decode = sum(row["decode_seconds_model"] for row in rows)
    saved = sum(row["saved_seconds_model"] for row in rows)
    return {
        "calls": len(rows),
        "finished_share": round(1 - total["live_row_steps"] / total["row_steps"], 3),
        "decode_seconds_model": round(decode, 1),
        "saved_seconds_model": round(saved, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished pipeline run folder")
    parser.add_argument("--speed", default=str(ROOT / "bench/results/generation_speed-cpu-2core.json"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import yaml

    from workbench.modeling.loading import load_tokenizer

    run = Path(args.run)
    cost = step_cost(json.loads(Path(args.speed).read_text()))
    generate = yaml.safe_load((run / "recipes/generate.yaml").read_text())
    evaluate = yaml.safe_load((run / "recipes/eval.yaml").read_text())
    sft = yaml.safe_load((run / "recipes/sft.yaml").read_text())
    tokenizer = load_tokenizer(sft["model_name_or_path"])
    limit = generate["max_new_tokens"]

    def tokens(text: str) -> int:  # the answer's tokens and its stop token, unless it ran to the limit
        return min(limit, len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1)

    candidates = [json.loads(line) for line in (run / "generate/candidates.jsonl").read_text().splitlines()]
    answers = [tokens(text) for row in candidates for text in row["completions"]]
    stages = {"generate": calls(answers, generate["batch_size"], cost)}
    by_policy: dict[str, list[int]] = {}
    for line in (run / "eval/samples.jsonl").read_text().splitlines():
        sample = json.loads(line)
        if not sample["policy"].startswith("best_of"):  # the chosen samples only: not the calls that drew them
            by_policy.setdefault(sample["policy"], []).append(min(evaluate["max_new_tokens"], sample["tokens"] + 1))
    for policy, lengths in by_policy.items():
        stages[f"eval:{policy}"] = calls(lengths, evaluate["batch_size"], cost)
    result = {
        "benchmark": "decode_waste",
        "command": " ".join(["python", "bench/decode_waste.py", *sys.argv[1:]]),
        "machine": bench_record.machine(),
        "versions": bench_record.versions("torch", "transformers"),
        "run": str(run),
        "step_cost_model": {"fixed_seconds": round(cost[0], 4), "seconds_per_row": round(cost[1], 5)},
        "stages": {name: {**summed(rows), "per_call": rows} for name, rows in stages.items()},
        "all": summed([row for rows in stages.values() for row in rows]),
    }
    bench_record.emit(result, args.out)


if __name__ == "__main__":
    main()
