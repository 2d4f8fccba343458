"""`workbench label push --candidates FILE --dataset NAME`: candidates into an Argilla dataset for ranking.

With `--select N --strategy random|uncertainty|diversity|spread` the round holds N of the candidates' prompts: those
already in it count, and the strategy picks the rest from the others (labeling/selection.py). A repeated or interrupted
push therefore completes the same N and never adds more; to grow a round after the next reward model has scored the
pool (`--suggestions`), push with a larger N. Every record carries its `diversity`, and its `uncertainty` when scores
are given, as metadata a labeler's queue can be sorted by; the reward model's ranking is the record's suggestion.

Record ids are deterministic (`uuid5` of workspace, dataset, round and prompt id, stored as Argilla's external id),
so pushing again adds nothing, leaves every response alone, and an interrupted push picks up where it stopped. A
record that exists with other content is refused (push the new candidates as another `--round`). Batches are upserts
retried with backoff. The whole file is checked before anything is sent.
"""

from __future__ import annotations

import argparse
import uuid
from dataclasses import dataclass

from workbench.errors import UserError

from . import api, settings
from .candidates import RewardScores, load_candidates, load_scores, policy_label
from .selection import SCORED, STRATEGIES, select, selection_metadata

NAMESPACE = uuid.UUID("5b0c7a52-7f4e-4c38-9b8e-1f6a2d9e4c11")


def record_id(workspace: str, dataset: str, round_: int, prompt_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{workspace}/{dataset}/{round_}/{prompt_id}"))


@dataclass
class PushResult:
    dataset_id: str
    created: int
    already_there: int
    total: int


def _fields(row: dict) -> dict:
    fields = {settings.PROMPT: [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]}
    fields.update({settings.response_name(i): c for i, c in enumerate(row["completions"])})
    return fields


def _record_payload(
    row: dict, round_: int, external_id: str, suggestion: dict | None, score: RewardScores | None
) -> dict:
    fields = _fields(row)
    metadata = {"policy": policy_label(row.get("policy")), "round": round_, "prompt_id": row["prompt_id"]}
    metadata |= selection_metadata(row, score.members if score else None)
    payload = {"external_id": external_id, "fields": fields, "metadata": metadata}
    if suggestion is not None:
        payload["suggestions"] = [suggestion]
    return payload


def ensure_dataset(client, name: str, workspace: str, k: int, min_submitted: int, comment: bool = True):
    """The ranking dataset, created with our settings when new; an existing one must have K response fields."""
    import argilla as rg

    from .users import ensure_workspace

    dataset = api.find_dataset(client, name, workspace, required=False)
    if dataset is None:
        ensure_workspace(client, workspace)
        dataset = rg.Dataset(
            name=name,
            workspace=workspace,
            settings=settings.build_settings(k, min_submitted or 1, comment, client=client),
            client=client,
        )
        api.with_retry(dataset.create, f"creating dataset {workspace}/{name}")
        return dataset
    existing_k = settings.dataset_k(dataset)
    if existing_k != k:
        what = f"{existing_k} response fields" if existing_k else "no ranking question"
        raise UserError(f"Argilla dataset {workspace}/{name} has {what}; the candidates have K={k} completions")
    if min_submitted is not None and dataset.settings.distribution.min_submitted != min_submitted:
        print(
            f"note: dataset {name} keeps min_submitted={dataset.settings.distribution.min_submitted} "
            f"(asked {min_submitted}); change it in the Argilla UI's dataset settings"
        )
    api.with_retry(
        lambda: settings.ensure_selection_properties(client, dataset),
        f"adding selection metadata to {workspace}/{name}",
    )
    return dataset


def push(
    client,
    candidates: list[dict],
    dataset_name: str,
    workspace: str,
    round_: int = 1,
    min_submitted: int | None = None,
    scores: dict[str, RewardScores] | None = None,
    batch_size: int = 100,
    comment: bool = True,
    select_n: int | None = None,
    strategy: str = "random",
    seed: int = 0,
) -> PushResult:
    """Push the candidates as ranking records (with `select_n`: until the round holds `select_n` of them, chosen by
    `strategy`)."""
    from tqdm import tqdm

    k = len(candidates[0]["completions"])
    dataset = ensure_dataset(client, dataset_name, workspace, k, min_submitted, comment)
    question_id = str(dataset.settings.questions[settings.RANKING].id)
    existing = {
        record["external_id"]: record["fields"]
        for record in api.iter_records(client, dataset.id, include_responses=False)
    }
    new_rows, already_there = [], 0
    for row in candidates:
        external_id = record_id(workspace, dataset_name, round_, row["prompt_id"])
        if external_id in existing:
            if existing[external_id] != _fields(row):
                raise UserError(
                    f"prompt_id {row['prompt_id']!r} is already in {workspace}/{dataset_name} round {round_} with "
                    "other completions; push new candidates with another --round (nothing was sent)"
                )
            already_there += 1
        else:
            new_rows.append(row)
    if select_n is not None:  # the round holds select_n of these prompts; those already pushed count
        room = select_n - already_there
        members = {prompt_id: score.members for prompt_id, score in scores.items()} if scores else None
        # the order over every candidate, not only the unpushed ones: an interrupted push resumes the same choice
        ordered = select(candidates, strategy, len(candidates), seed, members)
        pending = {row["prompt_id"] for row in new_rows}
        new_rows = [row for row in ordered if row["prompt_id"] in pending][: max(room, 0)]
    payloads = []
    for row in new_rows:
        score = (scores or {}).get(row["prompt_id"])
        suggestion = settings.ranking_suggestion(score.scores, score.agent, question_id) if score else None
        external_id = record_id(workspace, dataset_name, round_, row["prompt_id"])
        payloads.append(_record_payload(row, round_, external_id, suggestion, score))

    with tqdm(total=len(payloads), desc=f"pushing to {dataset_name}", unit="record") as bar:
        for start in range(0, len(payloads), batch_size):
            batch = payloads[start : start + batch_size]

            what = f"records {start}-{start + len(batch) - 1}"

            def send(batch=batch, what=what):
                response = client.http_client.put(f"/api/v1/datasets/{dataset.id}/records/bulk", json={"items": batch})
                if response.status_code == 422:
                    raise UserError(f"Argilla refused {what}: {response.text}")
                response.raise_for_status()

            api.with_retry(send, f"pushing {what}", log=bar.write)
            bar.update(len(batch))
    return PushResult(str(dataset.id), len(payloads), already_there, len(existing) + len(payloads))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench label push", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--candidates", required=True, help="candidates JSONL from `workbench generate` (or its folder)"
    )
    parser.add_argument("--dataset", required=True, help="Argilla dataset name (created when new)")
    parser.add_argument("--workspace", default="workbench", help="Argilla workspace (created when new)")
    parser.add_argument("--round", type=int, default=1, help="labeling round: a new round gets new records")
    parser.add_argument(
        "--min_submitted", type=int, default=None, help="annotators needed per record (new dataset; default 1)"
    )
    parser.add_argument("--suggestions", default=None, help="`workbench reward score` JSONL: prompt_id, scores, agent")
    parser.add_argument(
        "--select",
        type=int,
        default=None,
        help="the round holds this many of the prompts: those already pushed count, --strategy picks the rest",
    )
    parser.add_argument(
        "--strategy", default="random", choices=STRATEGIES, help="how --select chooses (labeling/selection.py)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --select's random order and tie-breaks")
    parser.add_argument("--no_comment", action="store_true", help="leave out the optional comment question")
    parser.add_argument("--batch_size", type=int, default=100, help="records per request (at most 500)")
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    args = parser.parse_args(argv)
    if not 1 <= args.batch_size <= 500:
        raise UserError(f"--batch_size must be between 1 and 500; got {args.batch_size}")
    if args.select is not None and args.select < 1:
        raise UserError(f"--select must be at least 1; got {args.select}")
    if args.select is None and args.strategy != "random":
        raise UserError(f"--strategy {args.strategy} chooses prompts for --select N; give --select")
    if args.strategy in SCORED and not args.suggestions:
        needs = "--suggestions (`workbench reward score` of these candidates)"
        raise UserError(f"--strategy {args.strategy} needs {needs}")
    if args.min_submitted is not None and args.min_submitted < 1:
        raise UserError(f"--min_submitted must be at least 1; got {args.min_submitted}")

    candidates = load_candidates(args.candidates)
    k = len(candidates[0]["completions"])
    scores = load_scores(args.suggestions, k, {row["prompt_id"] for row in candidates}) if args.suggestions else None

    from .connection import connect

    client = connect(home=args.home)
    result = push(
        client,
        candidates,
        args.dataset,
        args.workspace,
        args.round,
        args.min_submitted,
        scores,
        args.batch_size,
        comment=not args.no_comment,
        select_n=args.select,
        strategy=args.strategy,
        seed=args.seed,
    )
    print(
        f"dataset {args.workspace}/{args.dataset}: {result.created} record(s) added, {result.already_there} already "
        f"there, {result.total} in all (round {args.round}, K={k})"
    )
    return 0
