"""`workbench label <subcommand>`: one table from subcommand to the function that runs it.

Each entry names a module and a function taking the remaining argv and returning an exit status; modules are
imported only when their subcommand runs. To add a subcommand (push, pull, simulate ...), add a row.
"""

from __future__ import annotations

import importlib

SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": (
        "labeling.server.commands",
        "serve_main",
        "Start the embedded Argilla server (UI + API) on this machine.",
    ),
    "stop": ("labeling.server.commands", "stop_main", "Stop the embedded Argilla server, its worker and Redis."),
    "status": (
        "labeling.progress",
        "status_main",
        "Show whether the embedded Argilla is running; with --dataset, labeling progress per annotator.",
    ),
    "users": ("labeling.users", "main", "Labeling team: add users to workspaces, list them (any Argilla)."),
    "push": ("labeling.push", "main", "Push generated candidates into an Argilla ranking dataset."),
    "pull": ("labeling.pull", "main", "Pull submitted rankings as preference pairs, with agreement."),
    "simulate": ("labeling.simulate", "main", "A simulated annotator ranks pending records by the gold rubric."),
    "watch": (
        "labeling.watch",
        "main",
        "Retrain the reward model every M new rankings and refresh the pending records' suggestions.",
    ),
}


def usage() -> str:
    width = max(len(name) for name in SUBCOMMANDS)
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in SUBCOMMANDS.items())
    return f"usage: workbench label <subcommand> [options]\n\nsubcommands:\n{rows}\n"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"workbench label: unknown subcommand {name!r}\n\n{usage()}")
        return 2
    module_name, function_name, _ = SUBCOMMANDS[name]
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)
