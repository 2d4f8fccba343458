"""`workbench label status --dataset NAME`: how far the labeling of a dataset has got, overall and per annotator.

Without `--dataset`, `workbench label status` reports on the embedded server itself (labeling/server/commands.py).
A record is completed once `min_submitted` annotators have submitted it; drafts and discards do not count.
"""

from __future__ import annotations

import argparse
import json

from . import api

COUNTS = ("submitted", "draft", "discarded")


def dataset_progress(client, dataset) -> dict:
    """{dataset, workspace, min_submitted, total, completed, pending, annotators: {name: {submitted, draft, ...}}}."""
    overall = api.get_json(client, f"/api/v1/datasets/{dataset.id}/progress")
    users = api.get_json(client, f"/api/v1/datasets/{dataset.id}/users/progress")["users"]
    annotators = {}
    for user in users:
        counts = {name: user["completed"][name] + user["pending"][name] for name in COUNTS}
        annotators[user["username"]] = counts
    return {
        "dataset": dataset.name,
        "workspace": dataset.workspace.name,
        "min_submitted": dataset.settings.distribution.min_submitted,
        "total": overall["total"],
        "completed": overall["completed"],
        "pending": overall["pending"],
        "annotators": annotators,
    }


def format_progress(report: dict) -> str:
    total = report["total"]
    share = f"{100 * report['completed'] / total:.0f}%" if total else "-"
    lines = [
        f"{report['workspace']}/{report['dataset']}: {report['completed']}/{total} records completed ({share}), "
        f"{report['pending']} pending; {report['min_submitted']} submission(s) needed per record"
    ]
    if report["annotators"]:
        width = max(12, *(len(name) for name in report["annotators"]))
        lines.append(f"  {'annotator':<{width}} {'submitted':>9} {'draft':>6} {'discarded':>9}")
        for name, counts in sorted(report["annotators"].items()):
            lines.append(f"  {name:<{width}} {counts['submitted']:>9} {counts['draft']:>6} {counts['discarded']:>9}")
    else:
        lines.append("  no annotator has answered yet")
    return "\n".join(lines)


def status_main(argv: list[str]) -> int:
    """`label status --dataset NAME` reports labeling progress; plain `label status` reports on the server."""
    if not any(arg == "--dataset" or arg.startswith("--dataset=") for arg in argv):
        from .server.commands import status_main as server_status

        return server_status(argv)
    parser = argparse.ArgumentParser(prog="workbench label status", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="Argilla dataset name")
    parser.add_argument("--workspace", default=None, help="its workspace (when the name is not unique)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    args = parser.parse_args(argv)

    from .connection import connect

    client = connect(home=args.home)
    report = dataset_progress(client, api.find_dataset(client, args.dataset, args.workspace))
    print(json.dumps(report, indent=2) if args.json else format_progress(report))
    return 0
