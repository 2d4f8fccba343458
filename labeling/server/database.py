"""Which SQL database an Argilla home keeps its data in: SQLite in the home (the default) or a team's PostgreSQL.

`workbench label serve --database postgresql://USER@HOST[:PORT]/DBNAME` binds a home to a PostgreSQL database the
first time it is served; the URL is kept in the home's `database.json` (0600) and every later `serve` of that home
uses it, so a home never switches databases under its labelers' feet (another database: another `--home`).

A password never goes on a command line (`ps` and shell history show it): put it in PostgreSQL's own ~/.pgpass, in
PGPASSWORD, or give the whole URL in $WORKBENCH_ARGILLA_DATABASE_URL. Logs and `status` show the URL with the
password masked. The server's venv holds both drivers Argilla uses: asyncpg (the app) and psycopg2 (migrations).
"""

from __future__ import annotations

import json
import urllib.parse

from workbench.errors import UserError

from .home import ArgillaHome, write_private_json

DATABASE_URL_ENV = "WORKBENCH_ARGILLA_DATABASE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg2")


def normalize_postgres_url(url: str, source: str, password_allowed: bool) -> str:
    """`url` as Argilla's app expects it (`postgresql+asyncpg://…`), or a UserError naming `source`."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in POSTGRES_SCHEMES:
        found = f"{parts.scheme}://…" if parts.scheme else repr(url[:40])
        raise UserError(f"{source}: expected a PostgreSQL URL postgresql://USER@HOST[:PORT]/DBNAME, found {found}")
    if parts.password is not None and not password_allowed:
        raise UserError(
            f"{source}: the URL holds a password, which `ps` and shell history would show; drop it from the URL "
            f"and put it in ~/.pgpass or PGPASSWORD, or give the whole URL in ${DATABASE_URL_ENV}"
        )
    query = urllib.parse.parse_qs(parts.query)
    if not parts.hostname and "host" not in query:
        raise UserError(f"{source}: expected a host (postgresql://USER@HOST/DBNAME), found none in {mask_url(url)}")
    if not parts.path.strip("/"):
        raise UserError(f"{source}: expected a database name (postgresql://USER@HOST/DBNAME), found none")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError as error:
        raise UserError(f"{source}: expected a port number, found {mask_url(url)} ({error})") from error
    return urllib.parse.urlunsplit(("postgresql+asyncpg", *parts[1:]))


def mask_url(url: str) -> str:
    """The URL with its password (if any) replaced by ***: safe for logs and status."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, f"{user}:***@{netloc[1]}", *parts[2:]))


def requested_database(cli_value: str | None, environ: dict[str, str]) -> str | None:
    """The PostgreSQL URL asked for by `--database` (no password allowed) or the environment (password allowed)."""
    from_env = environ.get(DATABASE_URL_ENV, "").strip()
    env_url = normalize_postgres_url(from_env, DATABASE_URL_ENV, password_allowed=True) if from_env else None
    if not cli_value:
        return env_url
    url = normalize_postgres_url(cli_value, "--database", password_allowed=False)
    if env_url and _without_password(env_url) != url:
        raise UserError(f"--database {mask_url(url)} and ${DATABASE_URL_ENV} name different databases; give one")
    return env_url or url


def _without_password(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    if len(netloc) == 2:
        netloc[0] = netloc[0].split(":", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, "@".join(netloc), *parts[2:]))


def bind_database(home: ArgillaHome, requested: str | None) -> None:
    """Record the home's database on first serve; refuse a request for another database later."""
    current = stored_database(home)
    if requested is None or requested == current:
        return
    if current is not None and _without_password(requested) == _without_password(current):
        if urllib.parse.urlsplit(requested).password is not None:  # a new password for the same database
            write_private_json(home.database_file, {"url": requested})
        return
    if current is not None:
        raise UserError(
            f"{home.database_file}: this home keeps its data in {mask_url(current)}, not {mask_url(requested)}; "
            "serve the other database from another --home"
        )
    sqlite_file = home.data_dir / "argilla.db"
    if sqlite_file.exists():
        raise UserError(
            f"--database: the home {home.root} already keeps its data in SQLite ({sqlite_file}); "
            "serve PostgreSQL from a new --home"
        )
    home.create_dirs()
    write_private_json(home.database_file, {"url": requested})


def stored_database(home: ArgillaHome) -> str | None:
    """The home's PostgreSQL URL, or None when it uses SQLite."""
    try:
        stored = json.loads(home.database_file.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise UserError(f"{home.database_file}: expected a JSON object with a `url`, unreadable ({error})") from error
    if not isinstance(stored, dict) or not isinstance(stored.get("url"), str):
        raise UserError(f"{home.database_file}: expected a JSON object with a string `url`, found {type(stored)}")
    return normalize_postgres_url(stored["url"], str(home.database_file), password_allowed=True)


def argilla_database_url(home: ArgillaHome) -> str:
    """ARGILLA_DATABASE_URL for the home's server processes."""
    return stored_database(home) or f"sqlite+aiosqlite:///{home.data_dir / 'argilla.db'}?check_same_thread=False"


def describe_database(home: ArgillaHome) -> str:
    """The home's database for people to read: a masked URL, or the SQLite file."""
    url = stored_database(home)
    return mask_url(url) if url else f"sqlite ({home.data_dir / 'argilla.db'})"
