"""`workbench label watch --dataset NAME --reward_recipe R.yaml --output DIR --every M`: as labelers rank, retrain the
reward model and refresh the suggestions they see.

Every M new submitted rankings, a generation g runs:

1. a snapshot of every submitted ranking of the dataset becomes preference pairs (`DIR/labels-g<g>/`, the files of
   `label pull`);
2. a fresh reward model trains on them (`DIR/reward-g<g>/`: `workbench reward` with the recipe, `datasets` and
   `output_dir` set; `DIR/recipes/reward-g<g>.yaml` is the exact recipe); with `--warm_start` it starts from
   generation g-1's reward model instead (the reward stage's `init_adapter`);
3. it scores the candidates of every record still pending (`DIR/scores-g<g>.jsonl`, `workbench reward score`);
4. those records get its ranking as their suggestion and its `uncertainty` as metadata, so the next labeler sees the
   newest reward model's opinion and can sort the queue by it. Completed records keep theirs.

New rankings are noticed through Argilla's webhooks (`response.*` events, delivered by the server's worker to a
listener on 127.0.0.1: labeling/webhooks.py; the default when Argilla runs on this machine) and, as a safety net or
with `--listen poll` (the default for a remote Argilla, whose worker cannot reach this machine's loopback), by reading
the dataset every `--poll_s` seconds.

Restart safety: a ranking is a submitted response's id on the server. `DIR/watch.json` records, per generation, the ids
its snapshot held, written together with the snapshot and before training. A restarted watcher (after kill -9 or a
server restart) finishes the generation it was in on that same snapshot (the reward stage resumes from its
last checkpoint) and then counts as new only ids no generation holds: no ranking is lost or counted twice. An edited
ranking keeps its id, so it is not counted again; its new value is in the next snapshot. A training in progress dies
with the watcher (no orphan races its successor), one watcher holds an output folder at a time, and while the server
is unreachable the watcher waits and retries. Ctrl-C stops it between checks, or interrupts a training, which the
next start resumes. A watcher needs the server when it starts; once running it waits out an outage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import write_json_atomic, write_jsonl_atomic
from workbench.pipeline.runner import hold_run_dir, interruptible

from . import api, settings, webhooks
from .aggregate import METHODS
from .candidates import load_scores
from .pull import pull
from .selection import selection_metadata

STATE = "watch.json"
LISTEN = ("auto", "webhook", "poll")


@dataclass
class Watch:
    """What `label watch` was asked to do (the command line)."""

    dataset: str
    workspace: str | None
    reward_recipe: Path
    output: Path
    every: int
    listen: str = "webhook"  # "webhook" or "poll" (main() resolves "auto")
    poll_s: float = 30.0
    max_generations: int | None = None
    aggregation: str = "majority"
    min_agreement: float = 0.0
    warm_start: bool = False  # generation g > 1 starts from generation g-1's reward model
    log: Callable[[str], object] = functools.partial(print, flush=True)
    child: subprocess.Popen | None = None  # the training or scoring process running now, if any
    stop: threading.Event = field(default_factory=threading.Event)
    wake: threading.Event = field(default_factory=threading.Event)  # a webhook delivery or `stop` cuts a wait short


def submitted_ids(records: list[dict]) -> set[str]:
    """The ids of every submitted response (ranking) in a snapshot of the dataset's records."""
    return {str(r["id"]) for record in records for r in record.get("responses") or [] if r["status"] == "submitted"}


def counted_ids(state: dict) -> set[str]:
    return {rid for generation in state["generations"] for rid in generation["response_ids"]}


def read_state(watch: Watch, dataset) -> dict:
    path = watch.output / STATE
    if not path.exists():
        return {"dataset": {"id": str(dataset.id), "name": dataset.name}, "generations": [], "webhook_id": None}
    try:
        state = json.loads(path.read_text())
    except ValueError as error:
        raise UserError(f"{path}: expected the watcher's JSON state, found invalid JSON ({error})") from error
    if not isinstance(state, dict) or not isinstance(state.get("generations"), list):
        raise UserError(f"{path}: expected the watcher's state (an object with `generations`), found something else")
    if (state.get("dataset") or {}).get("id") != str(dataset.id):
        raise UserError(
            f"{path} watches dataset {state.get('dataset', {}).get('name')!r} "
            f"({state.get('dataset', {}).get('id')}), not {dataset.name!r} ({dataset.id}); use another --output"
        )
    return state


def save_state(watch: Watch, state: dict) -> None:
    write_json_atomic(watch.output / STATE, state)


def pending_candidates(records: list[dict], k: int) -> list[dict]:
    """Records no one has finished yet, as candidate rows keyed by record id (prompt ids repeat across rounds)."""
    rows = []
    for record in records:
        if record.get("status") == "completed":
            continue
        fields = record["fields"]
        completions = [fields.get(settings.response_name(i)) or "" for i in range(k)]
        rows.append({"prompt_id": str(record["id"]), "prompt": fields[settings.PROMPT], "completions": completions})
    return rows


def run_workbench(watch: Watch, args: list[str], what: str) -> None:
    """A workbench command in its own process (labeling/ never imports torch); its output goes to `DIR/watch.log`."""
    command = [sys.executable, "-m", "workbench.cli", *args]
    log_path = watch.output / "watch.log"
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # dies with the watcher (kill -9 included), so a restarted watcher never races an orphaned training
        watch.child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ}, preexec_fn=interruptible
        )
        try:
            code = watch.child.wait()
        finally:
            watch.child = None
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-1:] or [""]
        raise UserError(f"{what} failed (exit {code}): {tail[0]} (full log: {log_path})")


def write_reward_recipe(watch: Watch, generation: int) -> Path:
    import yaml

    from workbench.recipe import load_recipe

    recipe = load_recipe(watch.reward_recipe)
    preferences = watch.output / f"labels-g{generation}" / "preferences.jsonl"
    recipe["datasets"] = [{"path": str(preferences.resolve())}]
    recipe["output_dir"] = str((watch.output / f"reward-g{generation}").resolve())
    recipe["wandb_job_type"] = "reward-watch"
    if watch.warm_start and generation > 1:  # continue the last generation's model (init_from_sft starts g1 only)
        previous = watch.output / f"reward-g{generation - 1}" / "adapter"
        recipe.update(init_adapter=str(previous.resolve()), init_from_sft=False)
    path = watch.output / "recipes" / f"reward-g{generation}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# workbench reward --config {path}\n# written by `workbench label watch` from {watch.reward_recipe}\n"
    path.write_text(header + yaml.safe_dump(recipe, sort_keys=False))
    return path


def take_snapshot(watch: Watch, client, dataset, state: dict, records: list[dict]) -> dict | None:
    """Generation g's labels: every submitted ranking in `records`, written as `label pull` writes them."""
    number = len(state["generations"]) + 1
    folder = watch.output / f"labels-g{number}"
    manifest = pull(
        client, dataset, folder, watch.aggregation, overwrite=True, min_agreement=watch.min_agreement, records=records
    )
    ids = submitted_ids(records)
    generation = {
        "generation": number,
        "response_ids": sorted(ids - counted_ids(state)),
        "rankings": len(ids),
        "pairs": manifest["counts"]["pairs"],
        "labels": folder.name,
        "status": "labeled",
    }
    if generation["pairs"] == 0:  # ties only, say: nothing to train on yet; these rankings stay counted
        generation.update(status="done", refreshed=0, reward=None)
    state["generations"].append(generation)
    save_state(watch, state)  # from here on, a restart finishes this generation on this snapshot
    return generation


def train(watch: Watch, generation: dict) -> None:
    number = generation["generation"]
    folder = watch.output / f"reward-g{number}"
    if not (folder / "adapter" / "workbench.json").exists():
        recipe = write_reward_recipe(watch, number)
        resume = ["--resume"] if folder.exists() else []
        watch.log(f"watch: generation {number}: training a reward model on {generation['pairs']} pair(s) -> {folder}")
        run_workbench(watch, ["reward", "--config", str(recipe), *resume], f"reward-g{number}")
    generation["reward"] = str(folder / "adapter")


def refresh(watch: Watch, client, dataset, generation: dict) -> int:
    """Score the records still pending with generation's reward model; put its ranking and uncertainty on them."""
    number = generation["generation"]
    records = list(api.iter_records(client, dataset.id, include_responses=False))
    k = settings.dataset_k(dataset)
    rows = pending_candidates(records, k)
    if not rows:
        return 0
    candidates, scored = watch.output / f"pending-g{number}.jsonl", watch.output / f"scores-g{number}.jsonl"
    write_jsonl_atomic(candidates, rows)
    run_workbench(
        watch,
        ["reward", "score", "--adapter", generation["reward"], "--input", str(candidates), "--output", str(scored)]
        + ["--overwrite"],
        f"scoring the pending records with reward-g{number}",
    )
    scores = load_scores(scored, k, {row["prompt_id"] for row in rows})
    question_id = str(dataset.settings.questions[settings.RANKING].id)
    # read again after scoring (minutes): metadata edited meanwhile is kept, records completed or deleted are skipped
    by_id = {str(record["id"]): record for record in api.iter_records(client, dataset.id, include_responses=False)}
    payloads = []
    for row in rows:
        now = by_id.get(row["prompt_id"])
        if now is None or now.get("status") == "completed":
            continue
        score = scores[row["prompt_id"]]
        metadata = {**(now.get("metadata") or {}), **selection_metadata(row, score.members)}
        suggestion = settings.ranking_suggestion(score.scores, score.agent, question_id)
        payloads.append({"id": row["prompt_id"], "metadata": metadata, "suggestions": [suggestion]})
    for start in range(0, len(payloads), 100):
        batch = payloads[start : start + 100]

        def send(batch=batch):
            response = client.http_client.put(f"/api/v1/datasets/{dataset.id}/records/bulk", json={"items": batch})
            if response.status_code == 422:
                raise UserError(f"Argilla refused the refreshed suggestions: {response.text}")
            response.raise_for_status()

        api.with_retry(send, f"refreshing suggestions {start}-{start + len(batch) - 1}", log=watch.log)
    return len(payloads)


def finish(watch: Watch, client, dataset, state: dict, generation: dict) -> None:
    """Train (or find trained), refresh, and mark the generation done."""
    train(watch, generation)
    generation["status"] = "trained"
    save_state(watch, state)
    generation["refreshed"] = refresh(watch, client, dataset, generation)
    generation["status"] = "done"
    generation["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    save_state(watch, state)
    watch.log(
        f"watch: generation {generation['generation']} done: {len(generation['response_ids'])} new ranking(s), "
        f"{generation['rankings']} in all, {generation['pairs']} pair(s); refreshed {generation['refreshed']} "
        "pending record(s)"
    )


def generations_done(state: dict) -> int:
    return sum(1 for generation in state["generations"] if generation["status"] == "done")


def check(watch: Watch, client, dataset, state: dict) -> None:
    """One look at the server: finish an interrupted generation, or start one when M new rankings are in."""
    unfinished = [g for g in state["generations"] if g["status"] != "done"]
    if unfinished:
        watch.log(f"watch: finishing generation {unfinished[0]['generation']} (interrupted before)")
        finish(watch, client, dataset, state, unfinished[0])
        return
    records = list(api.iter_records(client, dataset.id))
    new = submitted_ids(records) - counted_ids(state)
    if len(new) < watch.every:
        watch.log(f"watch: {len(new)}/{watch.every} new ranking(s) since generation {len(state['generations'])}")
        return
    generation = take_snapshot(watch, client, dataset, state, records)
    if generation["status"] == "done":
        watch.log(f"watch: generation {generation['generation']}: no preference pairs yet; waiting for more")
        return
    finish(watch, client, dataset, state, generation)


def server_down(error: UserError) -> bool:
    """A failure worth waiting out: the server did not answer (a restart, a network blip), as opposed to a refusal."""
    cause = error.__cause__
    return isinstance(cause, Exception) and api.is_transient(cause)


def watch_loop(watch: Watch, client, dataset) -> dict:
    """Watch until `max_generations` generations are done or `watch.stop` is set; returns the state."""
    watch.output.mkdir(parents=True, exist_ok=True)
    state = read_state(watch, dataset)
    listener = None
    # a killed watcher's webhook (this dataset, this folder) points at a listener that is gone
    description = f"workbench label watch {dataset.id} {watch.output.resolve()}"
    removed = webhooks.remove_ours(client, description)
    if removed:
        watch.log(f"watch: removed {removed} webhook(s) an earlier watcher of {watch.output} left")
    api.with_retry(lambda: settings.ensure_selection_properties(client, dataset), "adding the uncertainty metadata")
    if watch.listen == "webhook":
        listener = webhooks.Listener(str(dataset.id), watch.wake)
        state["webhook_id"] = webhooks.register(client, listener, description)
        save_state(watch, state)
        watch.log(f"watch: listening for Argilla webhooks on {listener.url}; polling every {watch.poll_s:g}s too")
    try:
        while not watch.stop.is_set():
            if watch.max_generations is not None and generations_done(state) >= watch.max_generations:
                break
            watch.wake.clear()  # deliveries from here on wake the next wait
            try:
                check(watch, client, dataset, state)
            except UserError as error:
                if watch.stop.is_set():  # Ctrl-C reached the training too: the next start finishes the generation
                    break
                if not server_down(error):
                    raise
                watch.log(f"watch: Argilla unreachable ({error}); retrying in {watch.poll_s:g}s")
            if watch.max_generations is not None and generations_done(state) >= watch.max_generations:
                break
            watch.wake.wait(watch.poll_s)
    finally:
        if listener is not None:
            listener.close()
            try:
                webhooks.unregister(client, state["webhook_id"])
                state["webhook_id"] = None
                save_state(watch, state)
            except Exception as error:  # the server may be down; the next start removes it
                watch.log(f"watch: could not remove webhook {state['webhook_id']}: {error}")
    return state


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench label watch", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Argilla dataset name")
    parser.add_argument("--workspace", default=None, help="its workspace (when the name is not unique)")
    parser.add_argument("--reward_recipe", required=True, help="`workbench reward` recipe each generation trains with")
    parser.add_argument("--output", required=True, help="folder for watch.json and every generation's files")
    parser.add_argument("--every", type=int, default=20, help="retrain after this many new submitted rankings")
    parser.add_argument(
        "--listen",
        choices=LISTEN,
        default="auto",
        help="webhook (wake on Argilla's events; Argilla on this machine only), poll, or auto (webhook when local)",
    )
    parser.add_argument("--poll_s", type=float, default=30.0, help="seconds between reads of the dataset")
    parser.add_argument("--max_generations", type=int, default=None, help="stop after this many (default: never)")
    parser.add_argument("--aggregation", choices=METHODS, default="majority", help="how annotators are combined")
    parser.add_argument("--min_agreement", type=float, default=0.0, help="as in label pull")
    parser.add_argument(
        "--warm_start",
        action="store_true",
        help="start each generation's reward model from the last one's (LoRA and head) instead of a fresh one",
    )
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    args = parser.parse_args(argv)
    if args.every < 1:
        raise UserError(f"--every must be at least 1 (new rankings per retrain); got {args.every}")
    if not (math.isfinite(args.poll_s) and args.poll_s > 0):
        raise UserError(f"--poll_s must be above 0 seconds; got {args.poll_s}")
    if not 0.0 <= args.min_agreement <= 1.0:
        raise UserError(
            f"--min_agreement must be between 0 and 1 (a fraction of annotators); got {args.min_agreement}"
        )
    if args.max_generations is not None and args.max_generations < 1:
        raise UserError(f"--max_generations must be at least 1; got {args.max_generations}")
    recipe = Path(args.reward_recipe)
    if not recipe.is_file():
        raise UserError(f"--reward_recipe {recipe} does not exist")
    from workbench.recipe import load_recipe

    if load_recipe(recipe).get("use_peft") is False:  # a broken recipe is refused now, not at the first retrain
        raise UserError(f"{recipe}: use_peft: false; label watch scores with the reward adapter each generation saves")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file; give a folder (it holds watch.json and each generation)")

    from .connection import connect

    client = connect(home=args.home)
    listen = args.listen
    if listen == "auto":
        listen = "webhook" if webhooks.is_loopback(client.api_url) else "poll"
    elif listen == "webhook" and not webhooks.is_loopback(client.api_url):
        raise UserError(
            f"--listen webhook needs Argilla on this machine (its worker posts to our 127.0.0.1 listener); "
            f"{client.api_url} is not: use --listen poll"
        )
    dataset = api.find_dataset(client, args.dataset, args.workspace)
    if settings.dataset_k(dataset) == 0:
        raise UserError(f"dataset {dataset.name} has no {settings.RANKING!r} question over response fields")
    watch = Watch(
        args.dataset,
        args.workspace,
        recipe,
        output,
        args.every,
        listen,
        args.poll_s,
        args.max_generations,
        args.aggregation,
        args.min_agreement,
        args.warm_start,
    )

    def stop(*_):  # stop between checks (interrupting a training, which the next start resumes), removing the webhook
        watch.stop.set()
        watch.wake.set()
        if watch.child is not None and watch.child.poll() is None:
            watch.child.send_signal(signal.SIGINT)

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    with hold_run_dir(watch.output, "workbench label watch", "--output"):  # one watcher per output folder
        state = watch_loop(watch, client, dataset)
    print(f"watch: stopped after {generations_done(state)} generation(s); state in {watch.output / STATE}")
    return 0
