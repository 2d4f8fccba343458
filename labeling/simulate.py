"""`workbench label simulate --dataset NAME --annotator NAME`: a simulated labeler, for demos and tests.

It is a real Argilla user (an annotator in the dataset's workspace) that submits rankings through the REST API with
its own API key, exactly as the UI would. It ranks each pending record it has not answered yet by the gold rubric
(labeling/rubric.py), optionally with Gaussian noise on the scores; equal scores give equal ranks. Its responses are
marked as simulated twice: the username always starts with `sim-`, and the comment (when the dataset has one) names
the rubric, the noise and the seed.
"""

from __future__ import annotations

import argparse
import random
import secrets

from workbench.errors import UserError

from . import api, rubric, settings
from .aggregate import dense_ranks

PREFIX = "sim-"


def simulated_name(annotator: str) -> str:
    return annotator if annotator.startswith(PREFIX) else PREFIX + annotator


def is_simulated(username: str) -> bool:
    return username.startswith(PREFIX)


def rank_record(prompt: list[dict], completions: list[str], noise: float, rng: random.Random) -> list[int]:
    """Ranks (1 best, ties shared) of the completions by rubric score plus N(0, noise) noise."""
    scores = [round(rubric.score(prompt, text), 9) for text in completions]
    if noise > 0:
        scores = [s + rng.gauss(0.0, noise) for s in scores]
    return dense_ranks(scores, higher_is_better=True)


def simulate(
    client,
    dataset,
    username: str,
    noise: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    include_completed: bool = False,
    password: str | None = None,
) -> int:
    """Submit rankings as `username` (created as an annotator when new); returns how many records it ranked."""
    import argilla as rg
    from tqdm import tqdm

    from .users import add_user

    _, user_key = add_user(
        client, username, password or secrets.token_urlsafe(12), "annotator", [dataset.workspace.name]
    )
    annotator = rg.Argilla(api_url=client.api_url, api_key=user_key)
    k = settings.dataset_k(dataset)
    if k == 0:
        raise UserError(f"dataset {dataset.name} has no {settings.RANKING!r} question over response fields")
    has_comment = settings.COMMENT in {q.name for q in dataset.settings.questions}
    me = str(annotator.me.id)
    todo = []
    for record in api.iter_records(client, dataset.id):
        if any(str(r["user_id"]) == me for r in record.get("responses") or []):
            continue
        if record.get("status") == "completed" and not include_completed:
            continue
        todo.append(record)
    todo = todo[:limit] if limit is not None else todo
    note = f"simulated by {rubric.RUBRIC_VERSION} (noise={noise}, seed={seed})"
    for record in tqdm(todo, desc=f"{username} ranking", unit="record"):
        fields = record["fields"]
        completions = [fields.get(settings.response_name(i)) or "" for i in range(k)]
        rng = random.Random(f"{seed}/{record.get('external_id') or record['id']}")
        ranks = rank_record(fields[settings.PROMPT], completions, noise, rng)
        values = {settings.RANKING: {"value": settings.ranking_value(ranks)}}
        if has_comment:
            values[settings.COMMENT] = {"value": note}

        def send(record_id=record["id"], values=values):
            response = annotator.http_client.post(
                f"/api/v1/records/{record_id}/responses", json={"values": values, "status": "submitted"}
            )
            response.raise_for_status()

        api.with_retry(send, f"{username} submitting record {record['id']}")
    return len(todo)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench label simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Argilla dataset to rank")
    parser.add_argument("--workspace", default=None, help="its workspace (when the name is not unique)")
    parser.add_argument("--annotator", required=True, help="user name; `sim-` is prepended when missing")
    parser.add_argument("--noise", type=float, default=0.0, help="std-dev of Gaussian noise added to rubric scores")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise (per record: reproducible)")
    parser.add_argument("--limit", type=int, default=None, help="rank at most this many records")
    parser.add_argument("--include_completed", action="store_true", help="also rank records already completed")
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    args = parser.parse_args(argv)
    if args.noise < 0:
        raise UserError(f"--noise must be >= 0; got {args.noise}")

    from .connection import connect

    client = connect(home=args.home)
    dataset = api.find_dataset(client, args.dataset, args.workspace)
    username = simulated_name(args.annotator)
    count = simulate(client, dataset, username, args.noise, args.seed, args.limit, args.include_completed)
    print(f"{username} submitted {count} ranking(s) in {dataset.workspace.name}/{dataset.name}")
    return 0
