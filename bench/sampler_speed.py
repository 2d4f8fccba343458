"""Sampling with one uniform number per row and step (workbench/modeling/categorical_sampler.py, the CPU default of
`Sampling.generate`) against transformers' own sampling (torch.multinomial: one exponential number per vocabulary
entry and row), in one run.

    python bench/sampler_speed.py [--model smollm2-135m-instruct] [--batches 8 60] [--temperatures 0.7 1.0]
                                  [--new_tokens 48] [--repeats 3] [--out bench/results/sampler_speed-<machine>.json]

The policy as the stages sample it: the float32 base with a LoRA (r 16, all linear layers) folded in for the call,
`batch` distinct bundled training prompts, sampled to exactly `new_tokens` tokens (min_new_tokens = max_new_tokens, so
both ways decode the same number of steps), once through `Sampling.generate(inverse_cdf=True)` and once with
`inverse_cdf=False` (the baseline), alternating, `repeats` times; prefill (1 new token) timed the same way. Prints one
JSON object (and writes it with --out): the median seconds of each way, the decode seconds per step (call minus
prefill, over new_tokens - 1) and the ratios baseline / ours. The distributions are equal (tests/test_categorical_
sampler.py, tests/test_sampling_distribution.py); only the time is measured here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_record  # noqa: E402  (bench/, beside this script)
from sampling_policy import sampling_policy  # noqa: E402


def main() -> None:
    import torch

    from workbench.modeling.generation import Sampling
    from workbench.modeling.tokens import encode_prompts, left_pad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 60])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.7, 1.0])
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()

    model, tokenizer, prompts = sampling_policy(cli.model)
    ways = {"inverse_cdf": True, "multinomial": False}
    rows, load_before = [], os.getloadavg()
    for batch in cli.batches:
        ids, mask = left_pad(encode_prompts(tokenizer, prompts[:batch]), tokenizer.pad_token_id)
        prefill = Sampling(max_new_tokens=1, temperature=1.0, min_new_tokens=1)
        with torch.inference_mode():
            prefill.generate(model, tokenizer, ids, mask)  # warm-up
        for temperature in cli.temperatures:
            times = {way: {"prefill": [], "call": []} for way in ways}
            for _ in range(cli.repeats):
                for way, inverse_cdf in ways.items():
                    for phase, tokens in (("prefill", 1), ("call", cli.new_tokens)):
                        sampling = Sampling(max_new_tokens=tokens, temperature=temperature, min_new_tokens=tokens)
                        torch.manual_seed(0)
                        start = time.perf_counter()
                        with torch.inference_mode():
                            sampling.generate(model, tokenizer, ids, mask, inverse_cdf=inverse_cdf)
                        times[way][phase].append(round(time.perf_counter() - start, 3))
            median = {way: {phase: statistics.median(v) for phase, v in ph.items()} for way, ph in times.items()}
            step = {way: round((m["call"] - m["prefill"]) / (cli.new_tokens - 1), 4) for way, m in median.items()}
            rows.append(
                {
                    "batch": batch,
                    "temperature": temperature,
                    "padded_prompt_tokens": ids.shape[1],
                    "median_seconds": median,
                    "decode_seconds_per_step": step,
                    "ratio_multinomial_over_inverse_cdf": {
                        "call": round(median["multinomial"]["call"] / median["inverse_cdf"]["call"], 3),
                        "decode_step": round(step["multinomial"] / step["inverse_cdf"], 3),
                    },
                    "all_seconds": times,
                }
            )
            print(rows[-1]["ratio_multinomial_over_inverse_cdf"], batch, temperature, file=sys.stderr, flush=True)
    result = {
        "benchmark": "sampler_speed",
        "model": cli.model,
        "machine": bench_record.machine(),
        "versions": bench_record.versions("torch", "transformers", "peft"),
        "command": "python bench/sampler_speed.py " + " ".join(sys.argv[1:]),
        "new_tokens": cli.new_tokens,
        "repeats": cli.repeats,
        "rows": rows,
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    bench_record.emit(result, cli.out)


if __name__ == "__main__":
    main()
