"""Reward scores of K answers per prompt with each prompt's tokens run once against every row run whole: what
`shared_prefix.shared_prefix_scores` saves where the eval scores best-of-N samples and every policy's answer, and
where RLOO/GRPO score their groups.

    python bench/shared_prefix_scoring.py [--run outputs/quickstart] [--batch 120] [--repeats 3]
                                          [--out bench/results/shared_prefix_scoring-<machine>.json]

The run's reward adapter on the float32 base as the eval holds it (one base, the LoRA folded in for the call:
`evaluation.policies.reward_scores`), scoring the run's SFT candidates (`generate/candidates.jsonl`, K answers per
prompt, in prompt order as best-of-N lays them out) in batches of `batch` rows, with the shared prefix and without it
(the baseline: every row run whole, as before), alternating, best of `repeats`. Prints one JSON object (and writes it
with --out): each way's seconds, the ratio baseline / shared, the tokens each way runs and the largest difference
between the two ways' scores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bench_record  # noqa: E402  (bench/, beside this script)


def main() -> None:
    from workbench.evaluation import policies
    from workbench.modeling import heads, loading, shared_prefix
    from workbench.modeling.arguments import ModelArguments
    from workbench.modeling.single_base import REWARD
    from workbench.modeling.tokens import reward_input_ids

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="outputs/quickstart", help="a pipeline run: its reward adapter, candidates")
    parser.add_argument("--batch", type=int, default=120, help="rows per call (the quickstart eval's batch_size)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    cli = parser.parse_args()

    run = Path(cli.run)
    adapter = run / "reward" / "adapter"
    rows = [json.loads(line) for line in (run / "generate" / "candidates.jsonl").read_text().splitlines()]
    prompts = [row["prompt"] for row in rows for _ in row["completions"]]
    answers = [text for row in rows for text in row["completions"]]
    base = json.loads((adapter / "workbench.json").read_text())["base_model"]["name_or_path"]
    args = ModelArguments(model_name_or_path=base, load_in_4bit=False, dtype="float32")
    tokenizer = loading.load_tokenizer(args)
    model = heads.attach_scalar_adapter(loading.load_model(args).eval(), REWARD, adapter).eval()

    real = shared_prefix.shared_prefix_scores
    ways = {"shared": real, "baseline": lambda *args: None}
    seconds: dict[str, list[float]] = {way: [] for way in ways}
    scores = {}
    load_before = os.getloadavg()
    for _ in range(cli.repeats):
        for way, function in ways.items():
            shared_prefix.shared_prefix_scores = function
            start = time.perf_counter()
            scores[way] = policies.reward_scores(model, tokenizer, prompts, answers, cli.batch)
            seconds[way].append(time.perf_counter() - start)
    shared_prefix.shared_prefix_scores = real
    sequences = [reward_input_ids(tokenizer, p, a) for p, a in zip(prompts, answers)]
    keys = [json.dumps(prompt, sort_keys=True) for prompt in prompts]
    order = sorted(range(len(prompts)), key=keys.__getitem__)  # the batches policies.reward_scores makes
    shared_tokens = 0
    for start in range(0, len(order), cli.batch):
        members: dict[str, list[list[int]]] = {}
        for row in order[start : start + cli.batch]:
            members.setdefault(keys[row], []).append(sequences[row])
        shared_tokens += sum(
            (len(group) - 1) * shared_prefix.common_prefix_length(group) for group in members.values()
        )
    whole_tokens = sum(len(s) for s in sequences)
    best = {way: round(min(values), 3) for way, values in seconds.items()}
    result = {
        "benchmark": "shared_prefix_scoring",
        "run": str(run),
        "model": base,
        "machine": bench_record.machine(),
        "versions": bench_record.versions("torch", "transformers", "peft"),
        "command": "python bench/shared_prefix_scoring.py " + " ".join(sys.argv[1:]),
        "settings": {"prompts": len(rows), "rows": len(answers), "batch": cli.batch, "repeats": cli.repeats},
        "tokens": {"baseline": whole_tokens, "shared": whole_tokens - shared_tokens},
        "seconds": best,
        "all_seconds": seconds,
        "ratio_baseline_over_shared": round(best["baseline"] / best["shared"], 3),
        "max_abs_score_difference": max(abs(a - b) for a, b in zip(scores["shared"], scores["baseline"])),
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    bench_record.emit(result, cli.out)


if __name__ == "__main__":
    main()
