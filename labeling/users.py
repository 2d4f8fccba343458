"""The labeling team: users with passwords, in workspaces. Works on any Argilla through labeling.connection.

An annotator sees and answers only the datasets of the workspaces it belongs to; the server enforces that.
"""

from __future__ import annotations

import argparse
import getpass
import os
import re
import sys
import warnings

from workbench.errors import UserError

from .connection import connect

ROLES = ("annotator", "admin", "owner")
# Argilla's own rule for usernames (api/schemas/v1/users.py); checked here to fail before any request.
USERNAME_PATTERN = re.compile(r"^(?!-|_)[a-z0-9-_]+$")
PASSWORD_MIN_LENGTH = 8


def _quietly(lookup, name: str):
    # The SDK warns when a lookup finds nothing; here "not found" is the normal path to creating it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return lookup(name)


def ensure_workspace(client, name: str):
    import argilla as rg

    workspace = _quietly(client.workspaces, name)
    if workspace is None:
        workspace = rg.Workspace(name=name, client=client).create()
    return workspace


def add_user(client, username: str, password: str, role: str = "annotator", workspaces: list[str] | None = None):
    """Create the user (or find it, keeping its password) and add it to each workspace; return (user, api_key)."""
    import argilla as rg

    if not USERNAME_PATTERN.match(username):
        raise UserError(f"username {username!r}: use lowercase letters, digits, '-' and '_' (not first)")
    if role not in ROLES:
        raise UserError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    user = _quietly(client.users, username)
    if user is None:
        if len(password) < PASSWORD_MIN_LENGTH:
            raise UserError(f"password for {username!r}: at least {PASSWORD_MIN_LENGTH} characters")
        user = rg.User(username=username, first_name=username, role=role, password=password, client=client).create()
    elif user.role != role:
        raise UserError(f"user {username!r} exists with role {user.role}; not changing it to {role}")
    for name in workspaces or []:
        workspace = ensure_workspace(client, name)
        if username not in {member.username for member in workspace.users}:
            workspace.add_user(user)
    return user, api_key_of(client, user.id)


def api_key_of(client, user_id) -> str:
    # The SDK's User has no api_key; the REST API shows it to owners.
    response = client.http_client.get(f"/api/v1/users/{user_id}")
    response.raise_for_status()
    return response.json()["api_key"]


def _role_name(role) -> str:
    return str(getattr(role, "value", role))


def list_users(client) -> list[dict]:
    memberships: dict[str, list[str]] = {}
    for workspace in client.workspaces:
        for member in workspace.users:
            memberships.setdefault(member.username, []).append(workspace.name)
    return [
        {
            "username": user.username,
            "role": _role_name(user.role),
            "workspaces": memberships.get(user.username, []),
        }
        for user in client.users
    ]


def _new_password(args: argparse.Namespace) -> str | None:
    """The password for `users add`: stdin (--password-stdin), else $WORKBENCH_NEW_USER_PASSWORD, else None."""
    if args.password is not None:
        raise UserError(
            "--password: a password on the command line shows in `ps` and shell history; pipe it to "
            "--password-stdin, set WORKBENCH_NEW_USER_PASSWORD, or answer the prompt"
        )
    if args.password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise UserError("--password-stdin: expected the password on the first line of stdin, found nothing")
        return line
    return os.environ.get("WORKBENCH_NEW_USER_PASSWORD")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="workbench label users", description="Manage the labeling team.")
    parser.add_argument("--home", default=None, help="embedded Argilla home (when ARGILLA_API_URL is not set)")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add a user (or add an existing one to more workspaces)")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="annotator")
    add.add_argument("--workspace", action="append", default=[], help="workspace to join (repeatable; created if new)")
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the user's UI password (8+ characters) from the first line of stdin; default "
        "$WORKBENCH_NEW_USER_PASSWORD, else asked for (never on the command line: `ps` and shell history show it)",
    )
    add.add_argument("--password", default=None, help=argparse.SUPPRESS)  # refused below, with the ways that work
    actions.add_parser("list", help="list users, their roles and workspaces")
    args = parser.parse_args(argv)

    client = connect(home=args.home)
    if args.action == "list":
        for row in list_users(client):
            print(f"{row['username']:<24} {row['role']:<10} {', '.join(row['workspaces']) or '-'}")
        return 0

    password = _new_password(args)
    if password is None and _quietly(client.users, args.username) is None:
        if not os.isatty(0):
            raise UserError(
                f"no password for new user {args.username!r}: pipe it to --password-stdin or set "
                "WORKBENCH_NEW_USER_PASSWORD"
            )
        password = getpass.getpass(f"password for {args.username}: ")
    user, _ = add_user(client, args.username, password or "", args.role, args.workspace)
    print(
        f"user {user.username} ({_role_name(user.role)}) in workspaces: {', '.join(args.workspace) or '(none added)'}"
    )
    return 0
