"""The few Argilla REST calls the ranking loop makes itself, with retry and backoff.

The SDK reads a ranking back in option order and drops its ranks (argilla-io/argilla#5712), so records and their
responses are read from `GET /api/v1/datasets/{id}/records?include=responses`, page by page. Everything else (creating
datasets, logging records) goes through the SDK.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator

from workbench.errors import UserError

PAGE_SIZE = 1000  # the server's maximum for this endpoint
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)


def is_transient(error: Exception) -> bool:
    """Network errors, timeouts and 5xx/429 answers are worth retrying; 4xx answers are not."""
    import httpx

    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500 or error.response.status_code == 429
    if isinstance(error, httpx.HTTPError):
        return True
    status = getattr(error, "status_code", None)  # the SDK's ArgillaAPIError family
    if isinstance(status, int):
        return status >= 500 or status == 429
    cause = error.__cause__ or error.__context__
    return isinstance(cause, Exception) and cause is not error and is_transient(cause)


def with_retry(action: Callable[[], object], what: str, delays=RETRY_DELAYS_S, log=print):
    """Run `action`, retrying transient failures with exponential backoff; then fail with what was being done."""
    for attempt, delay in enumerate([*delays, None]):
        try:
            return action()
        except Exception as error:
            if delay is None or not is_transient(error):
                if isinstance(error, UserError):
                    raise
                raise UserError(f"{what} failed after {attempt + 1} attempt(s): {error}") from error
            log(f"{what}: {type(error).__name__}: {error}; retrying in {delay:.0f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def get_json(client, path: str, params: dict | None = None, what: str | None = None):
    def call():
        response = client.http_client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    return with_retry(call, what or f"GET {path}")


def find_dataset(client, name: str, workspace: str | None = None, required: bool = True):
    """The SDK dataset named `name` (in `workspace` when given); a UserError listing what exists when absent."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if workspace:
            found = client.datasets(name=name, workspace=workspace) if client.workspaces(workspace) else None
        else:
            # The SDK looks in the first workspace only when none is named; look in every workspace the user sees.
            matches = [d for d in client.datasets if d.name == name]
            if len(matches) > 1:
                spaces = sorted(d.workspace.name for d in matches)
                raise UserError(f"Argilla dataset {name!r} exists in workspaces {spaces}; name one with --workspace")
            found = matches[0] if matches else None
        dataset = found
    if dataset is None and required:
        names = sorted(f"{d.workspace.name}/{d.name}" for d in client.datasets)
        where = f" in workspace {workspace!r}" if workspace else ""
        raise UserError(f"no Argilla dataset named {name!r}{where}; datasets: {', '.join(names) or '(none)'}")
    return dataset


def iter_records(client, dataset_id, include_responses: bool = True, page_size: int = PAGE_SIZE) -> Iterator[dict]:
    """Every record of a dataset as the REST API returns it (with responses and their true ranks), page by page."""
    offset = 0
    while True:
        params = {"offset": offset, "limit": page_size}
        if include_responses:
            params["include"] = ["responses"]
        page = get_json(client, f"/api/v1/datasets/{dataset_id}/records", params, f"reading records at {offset}")
        items = page.get("items", [])
        yield from items
        offset += len(items)
        if not items or offset >= page.get("total", 0):
            return


def usernames(client) -> dict[str, str]:
    """user id -> username, for every user the caller may see."""
    return {str(user["id"]): user["username"] for user in get_json(client, "/api/v1/users")["items"]}
