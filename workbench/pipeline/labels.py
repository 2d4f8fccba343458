"""The pipeline's Argilla side, run in-process (no torch): start the server, annotator logins, wait for rankings.

Argilla is the embedded server (started when it is not running) unless ARGILLA_API_URL and ARGILLA_API_KEY point at
another one. Human annotators get random passwords in `<run_dir>/labels/annotators.json` (0600); the terminal shows
their usernames and that file, never a password.
"""

from __future__ import annotations

import json
import os
import secrets
import time

from workbench.errors import UserError
from workbench.fileio import write_json_atomic
from workbench.pipeline.pipeline_recipe import round_stage, split_round
from workbench.pipeline.plan import Planner, Stage, user_name
from workbench.pipeline.runner import STOP

POLL_SECONDS = 5.0


def ensure_server(planner: Planner, log) -> str:
    """The URL of a running Argilla: the one in ARGILLA_API_URL, or the embedded one, started if need be."""
    from labeling.connection import check_endpoint, resolve_endpoint

    if os.environ.get("ARGILLA_API_URL") or os.environ.get("ARGILLA_API_KEY"):
        endpoint = resolve_endpoint()
        check_endpoint(endpoint)
        log(f"using the Argilla at {endpoint.api_url} (from ARGILLA_API_URL)")
        return endpoint.api_url
    from labeling.server.home import ArgillaHome
    from labeling.server.launcher import serve

    try:
        return serve(ArgillaHome.at(planner.cfg.argilla_home), port=planner.cfg.argilla_port, log=log)
    except UserError as error:
        raise UserError(f"{error} (in the pipeline recipe: argilla_port, argilla_home)") from error


def _dataset(planner: Planner, stage: Stage):
    from labeling import api
    from labeling.connection import connect

    client = connect(home=planner.cfg.argilla_home)
    return client, api.find_dataset(client, stage.config["dataset"], planner.cfg.argilla_workspace)


def record_push(planner: Planner, stage: Stage, log) -> None:
    from labeling.progress import dataset_progress

    client, dataset = _dataset(planner, stage)
    report = dataset_progress(client, dataset)
    write_json_atomic(
        stage.outputs[0],
        {**stage.config, "dataset_id": str(dataset.id), "url": client.api_url, "records": report["total"]},
    )
    log(f"{report['total']} records in {report['workspace']}/{report['dataset']} at {client.api_url}")


def record_labels(planner: Planner, stage: Stage, log) -> None:
    from labeling.progress import dataset_progress, format_progress

    client, dataset = _dataset(planner, stage)
    report = dataset_progress(client, dataset)
    write_json_atomic(stage.outputs[0], {**stage.config, "progress": report})
    log(format_progress(report))


def ensure_annotators(client, planner: Planner, workspace: str, log) -> list[str]:
    """Annotator users `<run>-annotator-N`, with new random passwords kept 0600 in the run folder."""
    from labeling.server.home import write_private_json
    from labeling.users import _quietly, add_user

    path = planner.path("labels", "annotators.json")
    known = {}
    if path.exists():
        known = {row["username"]: row["password"] for row in json.loads(path.read_text())["annotators"]}
    names = [f"{user_name(planner.run.name)}-annotator-{i}" for i in range(1, planner.cfg.annotators + 1)]
    for name in names:
        if name not in known and _quietly(client.users, name) is not None:
            log(f"note: user {name} already exists on this Argilla; its password is the one set when it was made")
            known[name] = None
        password = known.get(name) or secrets.token_urlsafe(12)
        add_user(client, name, password, "annotator", [workspace])
        known.setdefault(name, password)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"username": name, "password": known[name]} for name in names]
    write_private_json(path, {"url": client.api_url, "workspace": workspace, "annotators": rows})
    return names


def wait_for_labels(client, dataset, needed: int, poll: float = POLL_SECONDS, console=None) -> dict:
    """Block, with a progress bar, until `needed` records are completed; returns the last progress report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from labeling.progress import dataset_progress

    columns = (TextColumn("records ranked"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("labels", total=needed)
        while True:
            report = dataset_progress(client, dataset)
            bar.update(task, completed=min(report["completed"], needed))
            if report["completed"] >= needed:
                return report
            STOP.check()
            time.sleep(poll)


def human_labels(planner: Planner, stage: Stage, log, console=None) -> None:
    from labeling.progress import dataset_progress

    client, dataset = _dataset(planner, stage)
    workspace = planner.cfg.argilla_workspace
    names = ensure_annotators(client, planner, workspace, log)
    total = dataset_progress(client, dataset)["total"]
    _, round_ = split_round(stage.name)
    earlier, done = 0, 0  # earlier rounds' records, and how many of them were complete when their wait ended
    if round_ > 1:
        earlier = json.loads(planner.path(round_stage("labels", round_ - 1), "push.json").read_text())["records"]
        labels = json.loads(planner.path(round_stage("labels", round_ - 1), "labels.json").read_text())
        done = labels["progress"]["completed"]
    new = total - earlier  # labels_needed counts this round's records
    needed = done + min(planner.cfg.labels_needed or new, new)
    log(
        f"\nRank the candidates in the Argilla UI: {client.api_url}  (dataset {workspace}/{dataset.name})\n"
        f"  annotator logins: {', '.join(names)}\n"
        f"  their passwords: {planner.path('labels', 'annotators.json')} (mode 0600; hand each labeler theirs)\n"
        f"  waiting until {needed} of {total} records have {planner.rankings_per_record()} ranking(s) each; "
        "Ctrl-C stops, running the pipeline again resumes the wait"
    )
    wait_for_labels(client, dataset, needed, console=console)
