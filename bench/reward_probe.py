"""What a trained reward model's hidden states hold about each part of the gold rubric: linear probes, by prompt.

    python bench/reward_probe.py --adapter outputs/quickstart/reward/adapter
                                 --candidates outputs/quickstart/generate/candidates.jsonl [more.jsonl ...]
                                 [--out bench/results/reward_probe-<machine>.json]

The reward model's score is a linear head on the final hidden state of the last token. When its agreement with the gold
rubric is at chance on the pairs that differ mainly in one rubric part (the eval's `reward_model_vs_gold.by_part`),
this asks whether the information is there to be read: ridge regressions from (a) the last token's final hidden state,
what the head reads, (b) the mean of the answer tokens' states, (c) both, to each rubric part's value, each answer of
`--candidates` (candidates.jsonl rows: prompt, completions) one sample. The score is the cross-validated R² (5 folds of
whole prompts, so no prompt is on both sides; standardised features; the ridge penalty picked from a small grid on the
same folds, an optimistic choice that is the same for every feature set). High R² for a part the reward model still
ranks at chance: a training-signal problem. Low R² from every feature set: the trained representation does not hold it,
so the linear head cannot rank by it; the LoRA has not learned to compute it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

PENALTIES = (10.0, 100.0, 1000.0, 10000.0)
FOLDS = 5


def features(adapter: str, candidates: list[Path]) -> tuple[dict, list[dict], list[str]]:
    """{"last": [n, h], "mean": [n, h]}, the rubric parts of every answer, and its prompt's key (for the folds)."""
    import numpy as np
    import torch

    from labeling import rubric
    from workbench.modeling.reward_model import load_reward_model
    from workbench.modeling.tokens import reward_input_ids

    model, tokenizer, _ = load_reward_model(adapter)
    last, mean, parts, groups = [], [], [], []
    with torch.no_grad():
        for path in candidates:
            for index, line in enumerate(path.read_text().splitlines()):
                row = json.loads(line)
                prompt = row["prompt"]
                template = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)
                answer_starts = len(template["input_ids"])
                for text in row["completions"]:
                    ids = reward_input_ids(tokenizer, prompt, text)
                    states = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
                    last.append(states[-1].float().numpy())
                    mean.append(states[answer_starts:].float().mean(0).numpy())
                    parts.append(rubric.parts(prompt, text))
                    groups.append(f"{path}:{index}")
    last, mean = np.array(last), np.array(mean)
    return {"last": last, "mean": mean, "both": np.concatenate([last, mean], axis=1)}, parts, groups


def cross_validated_r2(x, y, groups: list[str], penalty: float) -> float:
    import random

    import numpy as np

    keys = sorted(set(groups))
    random.Random(0).shuffle(keys)
    fold_of = {key: i % FOLDS for i, key in enumerate(keys)}
    folds = np.array([fold_of[g] for g in groups])
    predicted = np.zeros_like(y)
    for fold in range(FOLDS):
        test, train = folds == fold, folds != fold
        centre, scale = x[train].mean(0), x[train].std(0) + 1e-6
        a = (x[train] - centre) / scale
        weights = np.linalg.solve(a.T @ a + penalty * np.eye(a.shape[1]), a.T @ (y[train] - y[train].mean()))
        predicted[test] = ((x[test] - centre) / scale) @ weights + y[train].mean()
    return float(1.0 - ((predicted - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def main() -> int:
    import numpy as np
    from ppo_memory import emit, machine, versions

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", required=True, help="a reward stage's adapter/ folder")
    parser.add_argument("--candidates", nargs="+", required=True, help="candidates.jsonl files (prompt, completions)")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    x, parts, groups = features(args.adapter, [Path(p) for p in args.candidates])
    names = list(parts[0])
    r2 = {
        pooling: {
            name: max(cross_validated_r2(matrix, np.array([p[name] for p in parts]), groups, c) for c in PENALTIES)
            for name in names
            if len({p[name] for p in parts}) > 1  # a part every answer scores alike has nothing to predict
        }
        for pooling, matrix in x.items()
    }
    emit(
        {
            "benchmark": "reward_probe",
            "command": "python " + " ".join(sys.argv),
            "adapter": args.adapter,
            "answers": len(parts),
            "prompts": len(set(groups)),
            "cross_validated_r2": r2,
            "part_std": {name: float(np.std([p[name] for p in parts])) for name in names},
            "machine": machine(),
            "versions": versions(),
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
