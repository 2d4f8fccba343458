"""Active selection against random with the head-only reward model, in one process: a dozen seeds in minutes.

    python bench/active_labeling_probe.py --run outputs/quickstart [--strategies random uncertainty spread]
                                          [--seeds 0 1 ... 11] [--batch 16] [--budget 64] [--pool 240]
                                          [--prompts 120] [--layer 15] [--l2 1.0] [--work /tmp/active-labeling]
                                          [--out bench/results/active_labeling_probe-<machine>.json]

bench/active_labeling.py runs the reward stage itself at every step (one to two minutes each), so it affords three
seeds, and its curves move by more between seeds than between strategies. The reward stage with `linear_head_fit:
true` and `train_after_head_fit: false` (the head fitted alone on the frozen base's features, no training steps) is a
function of those features and the labels only. So here every answer's features are computed once, with the stage's
own pieces: the base cut after decoder layer `--layer` and its final norm (`loading.load_model(num_hidden_layers=)`),
the last token's hidden state (`reward_model.final_features`), tokenised as `reward score` tokenises
(`tokens.reward_input_ids`); and each step refits the head on the labeled prompts' pairs with the stage's fit
(`linear_head.fit`, the length term's weight beside the head, `--l2` as `linear_head_l2`) after adding the stage's
off-topic pairs (`off_topic_pairs.add_off_topic_pairs`, one per prompt), in about a second. The one difference from
the stage: it holds a fifth of the labeled prompts out for its own accuracy (`eval_split_size`), here every labeled
pair is fitted.

The rest is bench/active_labeling.py's: the pool and agreement set in `--work` (generated there from the run if
missing: the same files, so both benches measure on the same answers), the run's simulated annotators and
`build_preferences`, `labeling.selection.select` on the head's scores, the agreement rule and the summary (each
point's paired difference to random, the labels each strategy needs to reach random's agreement at the full budget).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from active_labeling import emit, pool_candidates, settings, simulated_records, summarise  # noqa: E402
from alignment_common import MIN_GOLD_GAP, agreement_set, gold_scores  # noqa: E402

from labeling.selection import SCORED, STRATEGIES, candidate_diversity, select  # noqa: E402
from workbench.jsonl import read_jsonl  # noqa: E402


class Features:
    """The frozen features of (prompt, answer) pairs, computed in batches as they are first asked for."""

    def __init__(self, model_name: str, layer: int):
        from workbench.modeling.arguments import ModelArguments
        from workbench.modeling.loading import load_model, load_tokenizer

        args = ModelArguments(model_name_or_path=model_name, dtype="float32")
        self.tokenizer = load_tokenizer(args)
        self.model = load_model(args, num_hidden_layers=layer).eval()
        self.index: dict[str, int] = {}
        self.rows = []
        self.lengths: list[int] = []

    @staticmethod
    def key(prompt, answer: str) -> str:
        return json.dumps(prompt, sort_keys=True) + "\x00" + answer

    def ensure(self, items: list[tuple]) -> None:
        from workbench.modeling.reward_model import final_features
        from workbench.modeling.tokens import reward_input_ids

        missing = list(dict.fromkeys(self.key(p, a) for p, a in items if self.key(p, a) not in self.index))
        if not missing:
            return
        texts = {self.key(p, a): (p, a) for p, a in items}
        sequences = [reward_input_ids(self.tokenizer, *texts[k]) for k in missing]
        features = final_features(self.model, sequences, self.tokenizer.pad_token_id, batch_size=16)
        for key, sequence, row in zip(missing, sequences, features):
            self.index[key] = len(self.rows)
            self.rows.append(row)
            self.lengths.append(len(sequence))

    def of(self, prompt, answer: str) -> int:
        return self.index[self.key(prompt, answer)]


def labeled_pairs(prompt_ids: list[str], pairs_of: dict[str, list[dict]], seed: int) -> list[tuple]:
    """(prompt, chosen, rejected) texts: the labeled prompts' pairs and the reward stage's off-topic pairs."""
    import datasets

    from workbench.data.off_topic_pairs import add_off_topic_pairs

    rows = [pair for prompt_id in prompt_ids for pair in pairs_of.get(prompt_id, [])]
    columns = {name: [row[name] for row in rows] for name in ("prompt", "chosen", "rejected")}
    dataset = datasets.Dataset.from_dict(columns)
    if len({json.dumps(row["prompt"], sort_keys=True) for row in rows}) >= 2:
        dataset, _ = add_off_topic_pairs(dataset, seed, 1)
    return [(row["prompt"], row["chosen"][0]["content"], row["rejected"][0]["content"]) for row in dataset]


def fit_head(features: Features, pairs: list[tuple], l2: float) -> dict:
    """The stage's fit (`linear_head.fit` with the length term) on `pairs`' frozen features."""
    import torch

    from workbench.modeling import linear_head

    features.ensure([(p, a) for p, chosen, rejected in pairs for a in (chosen, rejected)])
    index = torch.tensor([[features.of(p, c), features.of(p, r)] for p, c, r in pairs])
    # the fit reads only the pairs' rows (their differences), so every answer's features can go in
    return linear_head.fit(torch.stack(features.rows), index, l2, torch.tensor(features.lengths))


def head_scores(features: Features, head: dict, row: dict) -> list[float]:
    """The head's scores of a candidates row's answers (the head alone, as `reward score` and the eval read it)."""
    weight = head["weight"].double()
    return [float(features.rows[features.of(row["prompt"], a)].double() @ weight) for a in row["completions"]]


def curve(features, strategy, seed, pool, agreement, gold, pairs_of, args) -> list[dict]:
    """One strategy's learning curve for one seed, as bench/active_labeling.py's `curve` draws it."""
    from workbench.evaluation.metrics import agreement_outcomes

    labeled = select(pool, "random", args.batch, seed)  # the first batch: no reward model yet
    rows = []
    while True:
        n = len(labeled)
        pairs = labeled_pairs([row["prompt_id"] for row in labeled], pairs_of, seed)
        head = fit_head(features, pairs, args.l2)
        samples = [
            {"prompt_id": row["prompt_id"], "reward": reward, "gold": value}
            for row, golds in zip(agreement, gold)
            for reward, value in zip(head_scores(features, head, row), golds)
        ]
        agree = agreement_outcomes(samples, min_gap=args.min_gold_gap)
        rows.append(
            {
                "strategy": strategy,
                "seed": seed,
                "labels": n,
                "pairs": sum(len(pairs_of.get(row["prompt_id"], [])) for row in labeled),
                "pairs_with_off_topic": len(pairs),
                "fit_train_accuracy": head["train_accuracy"],
                "agreement": sum(outcome for _, outcome in agree) / len(agree),
                "agreement_pairs": len(agree),
                "labeled_diversity": sum(candidate_diversity(r["completions"]) for r in labeled) / n,
                "outcomes": agree,
            }
        )
        if n >= args.budget:
            return rows
        done = {row["prompt_id"] for row in labeled}
        unlabeled = [row for row in pool if row["prompt_id"] not in done]
        members = None
        if strategy in SCORED:
            members = {row["prompt_id"]: [head_scores(features, head, row)] for row in unlabeled}
        labeled = labeled + select(unlabeled, strategy, min(args.batch, args.budget - n), seed * 7919 + n, members)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a pipeline run folder (its SFT adapter and recipes)")
    parser.add_argument("--strategies", nargs="+", default=["random", "uncertainty", "spread"], choices=STRATEGIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(12)))
    parser.add_argument("--batch", type=int, default=16, help="prompts labeled per step")
    parser.add_argument("--budget", type=int, default=64, help="prompts labeled in all")
    parser.add_argument("--pool", type=int, default=240, help="training prompts to choose from")
    parser.add_argument("--prompts", type=int, default=120, help="held-out prompts in the agreement set")
    parser.add_argument("--layer", type=int, default=15, help="the decoder layer the head reads (reward_layer)")
    parser.add_argument("--l2", type=float, default=1.0, help="the fit's penalty (linear_head_l2)")
    parser.add_argument("--work", default="/tmp/active-labeling")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.budget % args.batch or args.budget > args.pool:
        raise SystemExit("--budget must be a multiple of --batch and at most --pool")
    from labeling.ranking_pairs import build_preferences

    args.min_gold_gap = MIN_GOLD_GAP
    run_dir, work = Path(args.run).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pipeline = yaml.safe_load((run_dir / "recipe.yaml").read_text())
    started = time.perf_counter()

    pool = pool_candidates(run_dir, work, args.pool)
    agreement_file = agreement_set(run_dir, work, args.prompts)
    agreement = [row for _, row in read_jsonl(agreement_file)][: args.prompts]
    gold = gold_scores(agreement_file)[: len(agreement)]
    features = Features(pipeline["model_name_or_path"], args.layer)
    features.ensure([(row["prompt"], a) for row in pool + agreement for a in row["completions"]])
    print(f"bench/active_labeling_probe.py: features of {len(features.rows)} answers", file=sys.stderr)
    rows = []
    for seed in args.seeds:
        records = simulated_records(pool, pipeline, seed)
        pairs_of: dict[str, list[dict]] = {}
        for pair in build_preferences(records, {}, min_agreement=pipeline["min_agreement"]).rows:
            pairs_of.setdefault(pair["prompt_id"], []).append(pair)
        for strategy in args.strategies:
            rows += curve(features, strategy, seed, pool, agreement, gold, pairs_of, args)
            mine = [r for r in rows if r["strategy"] == strategy and r["seed"] == seed]
            points = " ".join(f"{r['labels']}:{r['agreement']:.3f}" for r in mine)
            print(f"bench/active_labeling_probe.py: {strategy} seed {seed}: {points}", file=sys.stderr)

    import torch
    import transformers

    result = {
        "bench": "active_labeling_probe",
        "command": " ".join(["python", "bench/active_labeling_probe.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "run": str(run_dir),
        "reward_model": f"the head fitted alone on the base's layer-{args.layer} features (linear_head_fit, "
        "train_after_head_fit false) to every labeled pair and one off-topic pair per prompt, the length term beside",
        "settings": settings(pool, agreement, pipeline, args) | {"layer": args.layer, "l2": args.l2},
        **summarise(rows, args.strategies, args.budget),
    }
    emit(result, rows, time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
