"""A webhook listener on loopback for `label watch`: Argilla 2.8 (its rq worker) POSTs response events to it.

Our own code: the SDK's `webhook_listener` needs FastAPI and an app server in the caller, where a stdlib HTTP server in
a thread does. Deliveries are signed per Standard Webhooks (HMAC-SHA256 of `id.timestamp.body` with the webhook's
secret, `v1,<base64>`); an unsigned, badly signed or stale (over 5 minutes) one is answered 401 and ignored. A delivery
only wakes the watcher early: what it counts is read from the server's records, so a lost delivery (the listener was
down, the worker gave up after its retries) delays a retrain until the next poll and never loses a ranking.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from . import api

RESPONSE_EVENTS = ["response.created", "response.updated", "response.deleted"]
TOLERANCE_S = 300
MAX_BODY = 1 << 20  # an event about one response is a few kB
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(api_url: str) -> bool:
    """Whether the Argilla at `api_url` runs on this machine (only then can its worker reach our listener)."""
    from urllib.parse import urlparse

    return (urlparse(api_url).hostname or "") in {host.strip("[]") for host in LOOPBACK}


def signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    """The Standard Webhooks `v1` signature of a delivery (the secret is base64, optionally `whsec_`-prefixed)."""
    key = base64.b64decode(secret.removeprefix("whsec_") + "==")
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return f"v1,{base64.b64encode(digest).decode()}"


def verify(secret: str, headers: dict[str, str], body: bytes, now: float | None = None) -> bool:
    """True when the delivery carries a valid, fresh signature."""
    headers = {key.lower(): value for key, value in headers.items()}
    msg_id, timestamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not (msg_id and timestamp and signatures):
        return False
    try:
        if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE_S:
            return False
    except ValueError:
        return False
    expected = signature(secret, msg_id, timestamp, body).encode()
    return any(hmac.compare_digest(expected, given.encode("utf-8", "replace")) for given in signatures.split())


class Listener:
    """An HTTP server on 127.0.0.1 (a free port) that sets `wake` on every verified event about `dataset_id`."""

    def __init__(self, dataset_id: str, wake: threading.Event, port: int = 0):
        self.dataset_id = dataset_id
        self.secret: str | None = None  # known once the webhook is registered
        self.wake = wake
        self.received = 0
        listener = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10  # a client that stops sending is dropped, not waited on

            def answer(self, status: int) -> None:
                self.send_response(status)
                self.end_headers()

            def do_POST(self):  # noqa: N802 - http.server's naming
                try:
                    length = int(self.headers.get("content-length") or 0)
                except ValueError:
                    length = -1
                if not 0 <= length <= MAX_BODY:
                    return self.answer(400)
                body = self.rfile.read(length)
                if listener.secret is None or not verify(listener.secret, dict(self.headers), body):
                    return self.answer(401)
                self.answer(204)
                try:
                    event = json.loads(body)
                    dataset = event["data"]["record"]["dataset"]["id"]
                except (ValueError, KeyError, TypeError):
                    return
                if str(dataset) == listener.dataset_id:
                    listener.received += 1
                    listener.wake.set()

            def log_message(self, *args):  # quiet: the watcher prints its own progress
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/argilla-events"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register(client, listener: Listener, description: str) -> str:
    """Create the server-side webhook that delivers response events to `listener`; returns its id. Not retried: a
    retry after a lost answer would leave a second webhook (the server allows 10 in all); `remove_ours` at the next
    start removes any that a crash left."""
    from workbench.errors import UserError

    response = client.http_client.post(
        "/api/v1/webhooks", json={"url": listener.url, "events": RESPONSE_EVENTS, "description": description}
    )
    if response.status_code == 422:
        raise UserError(f"Argilla refused the watcher's webhook: {response.text}")
    response.raise_for_status()
    created = response.json()
    listener.secret = created["secret"]
    return str(created["id"])


def remove_ours(client, description: str) -> int:
    """Delete every webhook with this description (a watcher's on this dataset and output folder, left by a crash);
    returns how many."""
    hooks = api.get_json(client, "/api/v1/webhooks", what="listing webhooks")["items"]
    ours = [str(hook["id"]) for hook in hooks if hook.get("description") == description]
    for webhook_id in ours:
        api.with_retry(lambda webhook_id=webhook_id: unregister(client, webhook_id), "removing an old webhook")
    return len(ours)


def unregister(client, webhook_id: str) -> None:
    """Delete a webhook this watcher (or a killed earlier one) registered; one already gone is fine."""
    response = client.http_client.delete(f"/api/v1/webhooks/{webhook_id}")
    if response.status_code not in (200, 404):
        response.raise_for_status()
