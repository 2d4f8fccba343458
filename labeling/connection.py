"""How every workbench tool reaches Argilla: `ARGILLA_API_URL`/`ARGILLA_API_KEY`, else the embedded server's home.

The same code then talks to the embedded server on a laptop or to a team's production Argilla (deploy/).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from workbench.errors import UserError

from .server.home import ArgillaHome, mask_secret


@dataclass(frozen=True)
class Endpoint:
    api_url: str
    api_key: str
    source: str  # where the URL and key came from, for error messages


def resolve_endpoint(
    api_url: str | None = None, api_key: str | None = None, home: Path | str | None = None
) -> Endpoint:
    """Explicit arguments win, then the environment, then the embedded home's credentials and last URL."""
    api_url = api_url or os.environ.get("ARGILLA_API_URL")
    api_key = api_key or os.environ.get("ARGILLA_API_KEY")
    if api_url and api_key:
        return Endpoint(api_url.rstrip("/"), api_key, "ARGILLA_API_URL/ARGILLA_API_KEY")
    if api_url or api_key:
        missing = "ARGILLA_API_KEY" if api_url else "ARGILLA_API_URL"
        raise UserError(f"{missing} is not set, while its partner is; set both to use a remote Argilla")
    embedded = ArgillaHome.at(home)
    credentials = embedded.read_credentials()
    state = embedded.read_state()
    if state is None:
        raise UserError(
            f"the embedded Argilla at {embedded.root} has never been served: run `workbench label serve`, "
            "or set ARGILLA_API_URL and ARGILLA_API_KEY"
        )
    return Endpoint(state["url"], credentials["api_key"], f"the embedded server's home {embedded.root}")


def check_endpoint(endpoint: Endpoint, timeout: float = 10.0) -> dict:
    """Ask the server who we are; a clear UserError when it cannot be reached or refuses the key."""
    import httpx

    try:
        response = httpx.get(
            f"{endpoint.api_url}/api/v1/me", headers={"X-Argilla-Api-Key": endpoint.api_key}, timeout=timeout
        )
    except httpx.HTTPError as error:
        raise UserError(
            f"cannot reach Argilla at {endpoint.api_url} (from {endpoint.source}): {error}. "
            "Is it running? (`workbench label status`)"
        ) from error
    if response.status_code == 401:
        raise UserError(
            f"Argilla at {endpoint.api_url} rejected the API key {mask_secret(endpoint.api_key)} "
            f"(from {endpoint.source}): wrong or deleted key"
        )
    if response.status_code != 200:
        raise UserError(f"Argilla at {endpoint.api_url} answered /api/v1/me with HTTP {response.status_code}")
    return response.json()


def connect(api_url: str | None = None, api_key: str | None = None, home: Path | str | None = None, timeout: int = 60):
    """An `argilla.Argilla` client for the configured server, checked to answer and to accept the key."""
    endpoint = resolve_endpoint(api_url, api_key, home)
    check_endpoint(endpoint)
    import argilla as rg

    return rg.Argilla(api_url=endpoint.api_url, api_key=endpoint.api_key, timeout=timeout)
