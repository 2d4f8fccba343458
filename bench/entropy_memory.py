"""Peak memory of the per-token entropy that an RL step's scoring pass computes on a chunk of logits: ours
(`workbench.rl.losses.per_token_entropy`) against the written-out -sum(p * log p) it replaced, same input, one run.

    python bench/entropy_memory.py [--rows 1024] [--vocab 128256] [--dtypes bfloat16 float32]
                                   [--out bench/results/entropy_memory-<machine>.json]

A chunk is `--rows` positions of `--vocab` logits (the default: one 1024-row chunk of Llama-3.1's vocabulary, as
workbench/modeling/chunked_logprobs.py scores it), in the head's output dtype, at temperature 0.7. Each (setup,
dtype) runs in a fresh process: peak resident set (VmHWM) above the resident set with the input made, the kernel's
peak counter reset there, glibc's mmap threshold fixed so that freed tensors leave the resident set (as
bench/ppo_memory.py measures). The two results must agree (max difference in the JSON). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from ppo_memory import CHILD_ENV, emit, machine, peak_rss_mb, reset_peak_rss, rss_mb, versions  # noqa: E402

TEMPERATURE = 0.7


def written_out(logits, temperature: float):
    """The formula as it was written before: float copy, scaled copy, log-softmax, probabilities, their product, a
    mask and a select, all [rows, vocab]."""
    import torch

    logits = logits.float()
    logits = logits / temperature
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    plogp = torch.where(probs > 0, probs * log_probs, torch.zeros((), dtype=probs.dtype))
    return -plogp.sum(dim=-1)


def child(setup: str, dtype: str, rows: int, vocab: int) -> dict:
    import torch

    from workbench.rl.losses import per_token_entropy

    torch.manual_seed(0)
    logits = (torch.randn(rows, vocab) * 3).to(getattr(torch, dtype))
    function = per_token_entropy if setup == "workbench" else written_out
    function(logits[:2], TEMPERATURE)  # warm up the kernels outside the measured call
    before = rss_mb()
    reset = reset_peak_rss()
    with torch.no_grad():
        entropy = function(logits, TEMPERATURE)
    peak = peak_rss_mb() - before
    torch.save(entropy, f"/tmp/entropy-{setup}-{dtype}.pt")
    return {"peak_above_input_mib": round(peak, 1), "peak_counter_reset": reset}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=128256)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--out")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("BENCH " + json.dumps(child(*args.child, args.rows, args.vocab)), flush=True)
        return 0

    import torch

    fp32_copy_mib = args.rows * args.vocab * 4 / 2**20
    report: dict = {
        "benchmark": "entropy_memory",
        "command": " ".join(["python", "bench/entropy_memory.py", *sys.argv[1:]]),
        "machine": machine(),
        "versions": versions(),
        "settings": {"rows": args.rows, "vocab": args.vocab, "temperature": TEMPERATURE},
        "one_float32_copy_mib": round(fp32_copy_mib, 1),
        "results": {},
    }
    for dtype in args.dtypes:
        row: dict = {}
        for setup in ("written_out", "workbench"):
            command = [sys.executable, __file__, "--rows", str(args.rows), "--vocab", str(args.vocab)]
            done = subprocess.run(
                [*command, "--child", setup, dtype], capture_output=True, text=True, env=CHILD_ENV, cwd=ROOT
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
            if done.returncode or not lines:
                raise SystemExit(f"bench/entropy_memory.py: {setup} {dtype} failed: {done.stderr[-2000:]}")
            row[setup] = json.loads(lines[-1][len("BENCH ") :])
            row[setup]["float32_copies"] = round(row[setup]["peak_above_input_mib"] / fp32_copy_mib, 2)
        ours, theirs = (torch.load(f"/tmp/entropy-{s}-{dtype}.pt") for s in ("workbench", "written_out"))
        row["max_abs_difference"] = float((ours - theirs).abs().max())
        ours_mib, theirs_mib = (row[s]["peak_above_input_mib"] for s in ("workbench", "written_out"))
        row["peak_ratio"] = round(ours_mib / theirs_mib, 3)
        report["results"][dtype] = row
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
