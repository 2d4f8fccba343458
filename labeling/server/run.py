"""Entry point run by the argilla-server venv's python: `python -m labeling.server.run {prepare,server,worker}`.

It runs in the server's venv, not the workbench's: only the standard library and argilla_server may be imported
here (the launcher puts nothing but the `labeling` package on PYTHONPATH). The search backend module is imported
before anything asks argilla_server for an engine, so that `ARGILLA_SEARCH_ENGINE` names a registered backend in the
server and in the worker alike. Configuration arrives in the environment (see labeling/server/launcher.py).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import multiprocessing
import os
import sys

DEFAULT_SEARCH_MODULE = "labeling.server.sql_search"


def import_search_backend() -> None:
    # A path to a .py file lets a team try another backend without packaging it.
    target = os.environ.get("WORKBENCH_ARGILLA_SEARCH_MODULE") or DEFAULT_SEARCH_MODULE
    if target.endswith(".py"):
        spec = importlib.util.spec_from_file_location("workbench_search_backend", target)
        if spec is None or spec.loader is None:
            raise SystemExit(f"cannot load the search backend file {target}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        importlib.import_module(target)

    from argilla_server.search_engine import SearchEngine
    from argilla_server.settings import settings

    if settings.search_engine not in SearchEngine.registered_classes:
        raise SystemExit(
            f"search engine {settings.search_engine!r} (ARGILLA_SEARCH_ENGINE) is not registered after importing "
            f"{target}; registered: {sorted(SearchEngine.registered_classes)}"
        )


def migrate() -> None:
    import alembic.config
    from argilla_server.database import ALEMBIC_CONFIG_FILE

    alembic.config.main(argv=["-c", ALEMBIC_CONFIG_FILE, "upgrade", "head"])


async def ensure_owner(credentials_path: str) -> None:
    """Make the DB's owner match the credentials file: create it, or repair its password and key."""
    from argilla_server.contexts import accounts
    from argilla_server.database import AsyncSessionLocal
    from argilla_server.models import User, UserRole

    with open(credentials_path) as file:
        credentials = json.load(file)
    username, password, api_key = credentials["username"], credentials["password"], credentials["api_key"]
    async with AsyncSessionLocal() as db:
        user = await accounts.get_user_by_username(db, username)
        if user is None:
            await User.create(
                db,
                first_name=username,
                username=username,
                role=UserRole.owner,
                password_hash=accounts.hash_password(password),
                api_key=api_key,
            )
            print(f"created owner user {username!r}")
            return
        changes = {}
        if user.role != UserRole.owner:
            changes["role"] = UserRole.owner
        if user.api_key != api_key:
            changes["api_key"] = api_key
        if not accounts.verify_password(password, user.password_hash):
            changes["password_hash"] = accounts.hash_password(password)
        if changes:
            await user.update(db, **changes)
            print(f"updated owner user {username!r}: {sorted(changes)}")
        else:
            print(f"owner user {username!r} is up to date")


def serve(host: str, port: int) -> None:
    import uvicorn
    from argilla_server._app import app

    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info")


def work(num_workers: int) -> None:
    # rq's WorkerPool starts workers with multiprocessing; forking keeps the backend registered in the children.
    multiprocessing.set_start_method("fork", force=True)
    from argilla_server.cli.worker import worker
    from argilla_server.jobs.queues import DEFAULT_QUEUE, HIGH_QUEUE

    worker(queues=[HIGH_QUEUE.name, DEFAULT_QUEUE.name], num_workers=num_workers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labeling.server.run")
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="run the DB migrations and make sure the owner user exists")
    prepare.add_argument("--credentials", required=True)
    server = commands.add_parser("server", help="run the HTTP server (uvicorn) in the foreground")
    server.add_argument("--host", required=True)
    server.add_argument("--port", type=int, required=True)
    worker = commands.add_parser("worker", help="run the rq worker pool in the foreground")
    worker.add_argument("--num_workers", type=int, default=1)
    args = parser.parse_args(argv)

    import_search_backend()
    if args.command == "prepare":
        migrate()
        asyncio.run(ensure_owner(args.credentials))
    elif args.command == "server":
        serve(args.host, args.port)
    else:
        work(args.num_workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
