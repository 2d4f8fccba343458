"""K samples of each prompt with one shared prefill against K prefills: what `generation.shared_prompt_cache` saves
where the stages draw several answers to one prompt (generate's candidates, eval's best-of-N, RLOO/GRPO groups).

    python bench/shared_prefill.py [--model smollm2-135m-instruct] [--k 4] [--batch 120] [--new_tokens 48]
                                   [--repeats 2] [--out bench/results/shared_prefill-<machine>.json]

The policy as the stages sample it: the float32 base with a LoRA (r 16, all linear layers) folded in for the call
(`Sampling.generate`), `batch` rows = batch / k bundled training prompts, each k times, sampled at temperature 1 to
exactly `new_tokens` tokens. Timed as prefill (1 new token) and the whole call, with the shared cache and without it
(the baseline: `shared_prompt_cache` switched off, every row prefilled as before), alternating, best of `repeats`.
Prints one JSON object (and writes it with --out): each way's seconds and the ratio baseline / shared.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_record  # noqa: E402  (bench/, beside this script)
from sampling_policy import sampling_policy  # noqa: E402


def main() -> None:
    import torch

    from workbench.modeling import generation
    from workbench.modeling.generation import Sampling
    from workbench.modeling.tokens import encode_prompts, left_pad

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--batch", type=int, default=120)
    parser.add_argument("--new_tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()

    model, tokenizer, prompts = sampling_policy(cli.model)
    prompts = prompts[: cli.batch // cli.k]
    rows = [row for row in encode_prompts(tokenizer, prompts) for _ in range(cli.k)]
    ids, mask = left_pad(rows, tokenizer.pad_token_id)
    real = generation.shared_prompt_cache
    ways = {"shared": real, "baseline": lambda *args: None}
    times = {way: {"prefill": [], "call": []} for way in ways}
    load_before = os.getloadavg()
    for _ in range(cli.repeats):
        for way, cache in ways.items():
            generation.shared_prompt_cache = cache
            for phase, tokens in (("prefill", 1), ("call", cli.new_tokens)):
                sampling = Sampling(max_new_tokens=tokens, temperature=1.0, min_new_tokens=tokens)
                torch.manual_seed(0)
                start = time.perf_counter()
                with torch.inference_mode():
                    sampling.generate(model, tokenizer, ids, mask)
                times[way][phase].append(time.perf_counter() - start)
    generation.shared_prompt_cache = real
    best = {way: {phase: round(min(values), 3) for phase, values in phases.items()} for way, phases in times.items()}
    result = {
        "benchmark": "shared_prefill",
        "model": cli.model,
        "machine": bench_record.machine(),
        "versions": bench_record.versions("torch", "transformers", "peft"),
        "command": "python bench/shared_prefill.py " + " ".join(sys.argv[1:]),
        "settings": {
            "k": cli.k,
            "batch": cli.batch,
            "prompts": len(prompts),
            "padded_prompt_tokens": ids.shape[1],
            "new_tokens": cli.new_tokens,
            "repeats": cli.repeats,
        },
        "seconds": best,
        "all_seconds": times,
        "ratio_baseline_over_shared": {
            phase: round(best["baseline"][phase] / best["shared"][phase], 3) for phase in ("prefill", "call")
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    bench_record.emit(result, cli.out)


if __name__ == "__main__":
    main()
