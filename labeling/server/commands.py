"""`workbench label serve | stop | status`: argument parsing around labeling/server/launcher.py."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .database import DATABASE_URL_ENV, requested_database
from .home import ArgillaHome
from .launcher import serve, status, stop


def _parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"workbench label {name}", description=description)
    parser.add_argument(
        "--home",
        default=None,
        help="the Argilla home (database, Redis data, logs, credentials); "
        "default $WORKBENCH_HOME/argilla or ~/.cache/workbench/argilla",
    )
    return parser


def serve_main(argv: list[str]) -> int:
    parser = _parser("serve", "Start the embedded Argilla server, its rq worker and Redis in the background.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=6900)
    parser.add_argument(
        "--venv",
        default=None,
        help="the argilla-server venv, shared by all homes "
        "(default $WORKBENCH_ARGILLA_VENV or ~/.cache/workbench/venvs/argilla-server-2.8.0)",
    )
    parser.add_argument(
        "--database",
        default=None,
        help="keep the data in this PostgreSQL database, postgresql://USER@HOST[:PORT]/DBNAME, instead of SQLite in "
        f"the home (bound on first serve; no password here: ~/.pgpass, PGPASSWORD or ${DATABASE_URL_ENV})",
    )
    args = parser.parse_args(argv)
    database = requested_database(args.database, dict(os.environ))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: binding {args.host}: anyone who can reach this address can reach the Argilla login page")
    venv_dir = Path(args.venv).expanduser() if args.venv else None
    serve(ArgillaHome.at(args.home), host=args.host, port=args.port, venv_dir=venv_dir, database=database)
    return 0


def stop_main(argv: list[str]) -> int:
    args = _parser("stop", "Stop the embedded Argilla server, its worker and Redis.").parse_args(argv)
    stop(ArgillaHome.at(args.home))
    return 0


def status_main(argv: list[str]) -> int:
    parser = _parser("status", "Show each process of the embedded Argilla and its URL; exit 1 when it is not serving.")
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    args = parser.parse_args(argv)
    report = status(ArgillaHome.at(args.home))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"home: {report['home']}")
        print(f"  database {report['database']}")
        for name in ("redis", "worker", "server"):
            pid = report[name]
            print(f"  {name:<7} {'running (pid ' + str(pid) + ')' if pid else 'not running'}")
        if report["responding"]:
            print(f"Argilla is serving at {report['url']}")
        else:
            print("Argilla is not serving: start it with `workbench label serve`")
    return 0 if report["responding"] else 1
