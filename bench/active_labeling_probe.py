"""Active selection against random with the head-only reward model, in one process: a dozen seeds in minutes.

    python bench/active_labeling_probe.py --run outputs/quickstart [--strategies random uncertainty spread bald ...]
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
Besides `label push`'s strategies it measures three that choose by the fitted head's Laplace posterior, which only
this bench holds (`bald`, `dopt`, `vopt`: see POSTERIOR below).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from itertools import combinations
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
    """The stage's fit (`linear_head.fit` with the length term) on `pairs`' frozen features, and the fitted head's
    Laplace posterior in the fit's own coordinates (what the posterior strategies choose by)."""
    import torch

    from workbench.modeling import linear_head, reward_uncertainty

    features.ensure([(p, a) for p, chosen, rejected in pairs for a in (chosen, rejected)])
    index = torch.tensor([[features.of(p, c), features.of(p, r)] for p, c, r in pairs])
    # the fit reads only the pairs' rows (their differences), so every answer's features can go in
    rows = torch.stack(features.rows)
    head = linear_head.fit(rows, index, l2, torch.tensor(features.lengths))
    # the fit minimises the mean loss + l2 |w|^2 over standardised differences: as a sum over the m pairs, a Gaussian
    # prior of precision 2 m l2 on w = weight * scale; reward_uncertainty.fit gives the Laplace posterior around it
    scale = head["scale"]
    weight = head["weight"].double() * scale
    posterior = reward_uncertainty.fit(rows.double() / scale, index, weight, prior_precision=2 * len(index) * l2)
    return head | {"standardised_weight": weight, "covariance": posterior["covariance"]}


def head_scores(features: Features, head: dict, row: dict) -> list[float]:
    """The head's scores of a candidates row's answers (the head alone, as `reward score` and the eval read it)."""
    weight = head["weight"].double()
    return [float(features.rows[features.of(row["prompt"], a)].double() @ weight) for a in row["completions"]]


# Bench-only strategies, measured here and not in `label push`: they choose by the head's posterior over the features,
# which only this in-process bench holds. Each is a standard answer to "which labels teach a linear model most":
#   bald  mean over candidate pairs of the mutual information between the label and the head (Houlsby et al. 2011),
#         H(E p) - E H(p) over 64 heads drawn from the posterior: the members' disagreement without the coin flips;
#   dopt  greedy D-optimal batch: each next prompt the one whose pairs' Fisher information (weights p(1-p) from the
#         head) most increases log det of the posterior precision, the posterior updated after each pick;
#   vopt  greedy V-optimal (transductive) batch: the prompt that most reduces the posterior variance of the margins
#         of every pool pair, so that the labels are spent where the answers to be scored are, not on outliers.
POSTERIOR = ("bald", "dopt", "vopt")


def batch_gain(d, covariance, spread=None) -> float:
    """What labeling pairs with Fisher rows `d` gains: log det(I + d C d^T) (dopt), or with `spread` = C T C the
    drop in the trace of T C, the pool margins' summed variance (vopt)."""
    import torch

    k = torch.eye(len(d), dtype=torch.float64) + d @ covariance @ d.T
    if spread is None:
        return float(torch.logdet(k))
    return float(torch.trace(torch.linalg.solve(k, d @ spread @ d.T)))


def posterior_select(features, head, rows: list[dict], strategy: str, n: int, seed: int) -> list[dict]:
    """The n rows a posterior strategy sends first (ties in `select`'s random order)."""
    import torch

    order = select(rows, "random", len(rows), seed)
    x = torch.stack(features.rows).double() / head["scale"]
    pair_rows = {
        row["prompt_id"]: torch.stack(
            [
                x[features.of(row["prompt"], a)] - x[features.of(row["prompt"], b)]
                for a, b in combinations(row["completions"], 2)
            ]
        )
        for row in order
    }
    weight, covariance = head["standardised_weight"], head["covariance"]
    if strategy == "bald":
        draws = torch.randn(len(weight), 64, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        members = weight[:, None] + torch.linalg.cholesky(covariance) @ draws

        def entropy(p):
            p = p.clamp(1e-12, 1 - 1e-12)
            return -(p * p.log2() + (1 - p) * (1 - p).log2())

        def information(row):
            p = torch.sigmoid(pair_rows[row["prompt_id"]] @ members)  # [pairs, members]
            return float((entropy(p.mean(dim=1)) - entropy(p).mean(dim=1)).mean())

        return sorted(order, key=lambda row: -information(row))[:n]
    # the pairs' Fisher information rows: d * sqrt(p (1 - p)), p the head's probability of the pair's order
    probability = {k: torch.sigmoid(d @ weight) for k, d in pair_rows.items()}
    fisher = {k: d * (probability[k] * (1 - probability[k])).sqrt()[:, None] for k, d in pair_rows.items()}
    every_pair = torch.cat(list(pair_rows.values()))
    target = every_pair.T @ every_pair  # vopt: the pool pairs' second moment
    chosen, left = [], list(order)
    for _ in range(n):
        spread = covariance @ target @ covariance if strategy == "vopt" else None
        gains = [batch_gain(fisher[row["prompt_id"]], covariance, spread) for row in left]
        best = left[gains.index(max(gains))]  # the first of equals in `order`
        chosen.append(best)
        left.remove(best)
        d = fisher[best["prompt_id"]]
        k = torch.eye(len(d), dtype=torch.float64) + d @ covariance @ d.T
        covariance = covariance - covariance @ d.T @ torch.linalg.solve(k, d @ covariance)  # Woodbury
    return chosen


def curve_row(features, head, pairs, labeled, pairs_of, agreement, gold, args) -> dict:
    """A learning curve's point: the head's agreement with the gold rubric on the agreement set (the eval's rule),
    with the outcomes behind it, and what it was fitted on."""
    from workbench.evaluation.metrics import agreement_outcomes

    samples = [
        {"prompt_id": row["prompt_id"], "reward": reward, "gold": value}
        for row, golds in zip(agreement, gold)
        for reward, value in zip(head_scores(features, head, row), golds)
    ]
    agree = agreement_outcomes(samples, min_gap=args.min_gold_gap)
    return {
        "labels": len(labeled),
        "pairs": sum(len(pairs_of.get(row["prompt_id"], [])) for row in labeled),
        "pairs_with_off_topic": len(pairs),
        "fit_train_accuracy": head["train_accuracy"],
        "agreement": sum(outcome for _, outcome in agree) / len(agree),
        "agreement_pairs": len(agree),
        "outcomes": agree,
    }


def curve(features, strategy, seed, pool, agreement, gold, pairs_of, args) -> list[dict]:
    """One strategy's learning curve for one seed, as bench/active_labeling.py's `curve` draws it."""
    labeled = select(pool, "random", args.batch, seed)  # the first batch: no reward model yet
    rows = []
    while True:
        n = len(labeled)
        pairs = labeled_pairs([row["prompt_id"] for row in labeled], pairs_of, seed)
        head = fit_head(features, pairs, args.l2)
        row = curve_row(features, head, pairs, labeled, pairs_of, agreement, gold, args)
        diversity = sum(candidate_diversity(r["completions"]) for r in labeled) / n
        rows.append({"strategy": strategy, "seed": seed} | row | {"labeled_diversity": diversity})
        if n >= args.budget:
            return rows
        done = {row["prompt_id"] for row in labeled}
        unlabeled = [row for row in pool if row["prompt_id"] not in done]
        size, step_seed = min(args.batch, args.budget - n), seed * 7919 + n
        if strategy in POSTERIOR:
            labeled = labeled + posterior_select(features, head, unlabeled, strategy, size, step_seed)
            continue
        members = None
        if strategy in SCORED:
            members = {row["prompt_id"]: [head_scores(features, head, row)] for row in unlabeled}
        labeled = labeled + select(unlabeled, strategy, size, step_seed, members)


def probe_inputs(run_dir: Path, work: Path, pool: list[dict], pipeline: dict, args) -> tuple:
    """The agreement set (made in `work` if missing), its answers' gold scores, and the features of every pool and
    agreement-set answer, computed once."""
    agreement_file = agreement_set(run_dir, work, args.prompts)
    agreement = [row for _, row in read_jsonl(agreement_file)][: args.prompts]
    gold = gold_scores(agreement_file)[: len(agreement)]
    features = Features(pipeline["model_name_or_path"], args.layer)
    features.ensure([(row["prompt"], a) for row in pool + agreement for a in row["completions"]])
    print(f"bench: features of {len(features.rows)} answers", file=sys.stderr)
    return agreement, gold, features


def probe_result(bench, run_dir, pool, agreement, pipeline, args, rows, names, extra_settings=None) -> dict:
    """A probe bench's JSON (before `emit` adds the rows): its command, machine, versions, settings and summary."""
    import torch
    import transformers

    return {
        "bench": bench,
        "command": " ".join(["python", f"bench/{bench}.py", *sys.argv[1:]]),
        "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "run": str(run_dir),
        "reward_model": f"the head fitted alone on the base's layer-{args.layer} features (linear_head_fit, "
        "train_after_head_fit false) to every labeled pair and one off-topic pair per prompt, the length term beside",
        "settings": settings(pool, agreement, pipeline, args)
        | {"layer": args.layer, "l2": args.l2}
        | (extra_settings or {}),
        **summarise(rows, names, args.budget),
    }


def add_probe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every probe bench shares: the run, seeds, steps, pool and agreement set, the fit, where to work and
    write."""
    parser.add_argument("--run", required=True, help="a pipeline run folder (its SFT adapter and recipes)")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(range(12)))
    parser.add_argument("--batch", type=int, default=16, help="prompts labeled per step")
    parser.add_argument("--budget", type=int, default=64, help="prompts labeled in all")
    parser.add_argument("--pool", type=int, default=240, help="training prompts in the pool")
    parser.add_argument("--prompts", type=int, default=120, help="held-out prompts in the agreement set")
    parser.add_argument("--layer", type=int, default=15, help="the decoder layer the head reads (reward_layer)")
    parser.add_argument("--l2", type=float, default=1.0, help="the fit's penalty (linear_head_l2)")
    parser.add_argument("--work", default="/tmp/active-labeling")
    parser.add_argument("--out", default=None)


def open_run(args) -> tuple[Path, Path, dict]:
    """The run folder, the work folder (made if missing) and the run's pipeline recipe; sets `args.min_gold_gap`."""
    args.min_gold_gap = MIN_GOLD_GAP
    run_dir, work = Path(args.run).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    return run_dir, work, yaml.safe_load((run_dir / "recipe.yaml").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--strategies", nargs="+", default=["random", "uncertainty", "spread"], choices=STRATEGIES + POSTERIOR
    )
    add_probe_arguments(parser)
    args = parser.parse_args()
    if args.budget % args.batch or args.budget > args.pool:
        raise SystemExit("--budget must be a multiple of --batch and at most --pool")
    from labeling.ranking_pairs import build_preferences

    run_dir, work, pipeline = open_run(args)
    started = time.perf_counter()

    pool = pool_candidates(run_dir, work, args.pool)
    agreement, gold, features = probe_inputs(run_dir, work, pool, pipeline, args)
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

    result = probe_result("active_labeling_probe", run_dir, pool, agreement, pipeline, args, rows, args.strategies)
    emit(result, rows, time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
