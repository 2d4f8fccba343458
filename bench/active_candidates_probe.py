"""Which candidates the labelers rank: `--shown` of each prompt's `--generated` candidates, chosen by the reward model.

    python bench/active_candidates_probe.py --run outputs/quickstart [--generated 8] [--shown 4]
                                            [--variants random spread even diverse] [--seeds 0 1 ... 11]
                                            [--batch 16] [--budget 64] [--pool 240] [--prompts 120] [--layer 15]
                                            [--l2 1.0] [--work /tmp/active-labeling]
                                            [--out bench/results/active_candidates_probe-<machine>.json]

The other half of active selection: bench/active_labeling_probe.py measures which prompts reach the labelers, this
measures which of a prompt's candidates they rank. The pool's prompts have `--generated` candidates each from the
run's SFT policy and generate recipe, and a ranking covers `--shown` of them. The prompts are labeled in one seeded
random order, the same for every variant, `--batch` at a time; before each batch the head fitted on the labels so
far chooses which candidates each of its prompts shows:

  random   `--shown` of them at random (what generating `--shown` candidates gives: the baseline);
  spread   half from the top of the head's order and half from the bottom: the largest mean score gap over the shown
           pairs (labeling.selection.ranking_spread maximised). Far-apart answers are ranked alike by every labeler,
           so more of a ranking's pairs survive `min_agreement`;
  even     the lowest, the highest and the rest at even steps of the head's order between: pairs at every distance;
  diverse  the most different in wording: from a seeded random first, each next the farthest (word-level difflib
           distance, labeling.selection.candidate_diversity's) from those already shown.

The first batch is the same random draw for every variant (no head yet). The rest is bench/active_labeling_probe.py's:
the frozen features, the stage's fit with the length term and off-topic pairs, the run's simulated annotators and
`build_preferences`, the agreement set (4 SFT answers per held-out prompt) and the summary (paired to random).
"""

from __future__ import annotations

import argparse
import difflib
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from active_labeling import emit, pool_candidates, simulated_records  # noqa: E402
from active_labeling_probe import (  # noqa: E402
    Features,
    add_probe_arguments,
    curve_row,
    fit_head,
    head_scores,
    labeled_pairs,
    open_run,
    probe_inputs,
    probe_result,
)

from labeling.selection import select  # noqa: E402

VARIANTS = ("random", "spread", "even", "diverse")


def shown(row: dict, variant: str, k: int, head: dict | None, features: Features, seed: int) -> dict:
    """`row` with the `k` candidates `variant` shows (in their generated order)."""
    completions = row["completions"]
    rng = random.Random(f"shown/{seed}/{row['prompt_id']}")
    if variant == "random" or head is None:
        chosen = rng.sample(range(len(completions)), k)
    elif variant in ("spread", "even"):
        scores = head_scores(features, head, row)
        order = sorted(range(len(completions)), key=lambda i: scores[i])
        if variant == "spread":
            chosen = order[: k // 2] + order[len(order) - (k - k // 2) :]
        else:
            chosen = [order[round(step * (len(order) - 1) / (k - 1))] for step in range(k)]
    else:
        words = [text.split() for text in completions]

        def distance(i, j):
            return 1.0 - difflib.SequenceMatcher(None, words[i], words[j], autojunk=False).ratio()

        chosen = [rng.randrange(len(completions))]
        while len(chosen) < k:
            rest = [i for i in range(len(completions)) if i not in chosen]
            chosen.append(max(rest, key=lambda i: min(distance(i, j) for j in chosen)))
    return row | {"completions": [completions[i] for i in sorted(chosen)]}


def curve(features, variant, seed, pool, agreement, gold, pipeline, args) -> list[dict]:
    """One variant's learning curve for one seed: a row per `--batch` labeled prompts up to `--budget`."""
    from labeling.ranking_pairs import build_preferences

    order = select(pool, "random", args.budget, seed)
    labeled, pairs_of, head, rows = [], {}, None, []
    while len(labeled) < args.budget:
        batch = [shown(row, variant, args.shown, head, features, seed) for row in order[len(labeled) :][: args.batch]]
        records = simulated_records(batch, pipeline, seed)
        for pair in build_preferences(records, {}, min_agreement=pipeline["min_agreement"]).rows:
            pairs_of.setdefault(pair["prompt_id"], []).append(pair)
        labeled += batch
        pairs = labeled_pairs([row["prompt_id"] for row in labeled], pairs_of, seed)
        head = fit_head(features, pairs, args.l2)
        rows.append(
            {"strategy": variant, "seed": seed}
            | curve_row(features, head, pairs, labeled, pairs_of, agreement, gold, args)
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", type=int, default=8, help="candidates generated per prompt")
    parser.add_argument("--shown", type=int, default=4, help="candidates a ranking covers")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    add_probe_arguments(parser)
    args = parser.parse_args()
    if not 2 <= args.shown < args.generated or args.budget > args.pool or args.budget % args.batch:
        raise SystemExit("need 2 <= --shown < --generated, --budget at most --pool and a multiple of --batch")
    run_dir, work, pipeline = open_run(args)
    started = time.perf_counter()

    pool = pool_candidates(run_dir, work, args.pool, args.generated)
    agreement, gold, features = probe_inputs(run_dir, work, pool, pipeline, args)
    rows = []
    for seed in args.seeds:
        for variant in args.variants:
            rows += curve(features, variant, seed, pool, agreement, gold, pipeline, args)
            points = " ".join(f"{r['labels']}:{r['agreement']:.3f}" for r in rows[-(args.budget // args.batch) :])
            print(f"bench/active_candidates_probe.py: {variant} seed {seed}: {points}", file=sys.stderr)

    extra = {"generated": args.generated, "shown": args.shown}
    result = probe_result(
        "active_candidates_probe", run_dir, pool, agreement, pipeline, args, rows, args.variants, extra
    )
    emit(result, rows, time.perf_counter() - started, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
