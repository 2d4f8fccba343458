"""Benchmark of the embedded Argilla server's `workbench-sql` search backend. Prints JSON.

For each dataset size: bulk logging throughput through the SDK (records/s), then p50/p95 latency of
  - the UI's annotation queue query (POST /me/datasets/{id}/records/search, pending for the annotator),
  - the SDK's filtered search (POST /datasets/{id}/records/search, metadata range + response status),
  - progress, the annotator's metrics, metadata metrics, and a vector similarity search,
and two baselines in the same run: the plain list endpoint (no search engine involved), and the queue and SDK
queries again with the backend's indexes dropped (restored afterwards), given as ratios.

    workbench label serve --home /tmp/bench-argilla
    python bench/argilla_search.py --home /tmp/bench-argilla > bench/results/argilla_search-cpu.json

Needs a running server whose SQLite file this process can open (for the unindexed baseline). Records are new
datasets in a workspace of their own; nothing else in the server is touched.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import time
import uuid
from pathlib import Path

import argilla as rg
import httpx

REPEATS = 25
ANNOTATED_FRACTION = 0.1
VECTOR_DIMS = 16


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, help="embedded server home (credentials.json, data/argilla.db)")
    parser.add_argument("--api-url", default=os.environ.get("ARGILLA_API_URL"))
    parser.add_argument("--api-key", default=os.environ.get("ARGILLA_API_KEY"))
    parser.add_argument("--database", type=Path, help="the server's SQLite file (default: HOME/data/argilla.db)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--log-sample", type=int, default=2000, help="records logged through the SDK for throughput")
    args = parser.parse_args()
    if args.home:
        credentials = json.loads((args.home / "credentials.json").read_text())
        args.api_key = args.api_key or credentials["api_key"]
        state = args.home / "server.json"
        if not args.api_url and state.exists():
            server = json.loads(state.read_text())
            args.api_url = server.get("url") or f"http://{server['host']}:{server['port']}"
        args.database = args.database or args.home / "data" / "argilla.db"
    if not args.database:
        parser.error("give --home or --database: the benchmark seeds and un-indexes the server's SQLite file")
    if not (args.api_url and args.api_key):
        parser.error("give --home, or --api-url and --api-key (or ARGILLA_API_URL / ARGILLA_API_KEY)")
    return args


def percentiles(samples: list[float]) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p95_ms": round(p95 * 1000, 2), "n": len(ordered)}


def timed(call, repeats: int) -> dict:
    call()  # warm-up: caches, the first expression-index build
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.http = httpx.Client(base_url=args.api_url, timeout=600)
        self.client = rg.Argilla(api_url=args.api_url, api_key=args.api_key, timeout=600)
        self.workspace = f"bench-{uuid.uuid4().hex[:6]}"
        self.client.workspaces.add(rg.Workspace(name=self.workspace))
        username = f"bench-annotator-{uuid.uuid4().hex[:6]}"
        user = self.post(
            args.api_key, "/api/v1/users", {"username": username, "password": "bench-pass-1", "first_name": username}
        )
        workspace_id = str(self.client.workspaces(self.workspace).id)
        self.post(args.api_key, f"/api/v1/workspaces/{workspace_id}/users", {"user_id": user["id"]})
        self.annotator_key = user["api_key"]
        self.annotator_id = user["id"]

    def post(self, key: str, path: str, body: dict, **params) -> dict:
        response = self.http.post(path, json=body, params=params, headers={"X-Argilla-Api-Key": key})
        if response.status_code >= 300:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def get(self, key: str, path: str, **params) -> dict:
        response = self.http.get(path, params=params, headers={"X-Argilla-Api-Key": key})
        response.raise_for_status()
        return response.json()

    def new_dataset(self, tag: str) -> rg.Dataset:
        settings = rg.Settings(
            fields=[rg.TextField(name="text")],
            questions=[
                rg.LabelQuestion(name="label", labels=["good", "bad"]),
                rg.RatingQuestion(name="rating", values=[1, 2, 3, 4, 5]),
            ],
            metadata=[rg.TermsMetadataProperty(name="source"), rg.IntegerMetadataProperty(name="length")],
            vectors=[rg.VectorField(name="emb", dimensions=VECTOR_DIMS)],
        )
        name = f"bench-{tag}-{uuid.uuid4().hex[:4]}"
        dataset = rg.Dataset(name=name, workspace=self.workspace, settings=settings, client=self.client)
        dataset.create()
        return dataset

    def logging_throughput(self, count: int) -> dict:
        """Records/s through the SDK's `records.log` (the server's bulk upsert), and responses/s through the
        annotator's bulk endpoint; both run the backend's write hooks."""
        dataset = self.new_dataset("log")
        rng = random.Random(0)
        records = [rg.Record(**fields) for fields in (synthetic_record(rng, i) for i in range(count))]
        start = time.perf_counter()
        dataset.records.log(records, batch_size=500)
        log_seconds = time.perf_counter() - start
        record_ids = self.all_record_ids(str(dataset.id), count)
        start = time.perf_counter()
        for chunk in range(0, len(record_ids), 100):
            items = [
                {"record_id": rid, "status": "submitted", "values": {"label": {"value": "good"}}}
                for rid in record_ids[chunk : chunk + 100]
            ]
            self.post(self.annotator_key, "/api/v1/me/responses/bulk", {"items": items})
        respond_seconds = time.perf_counter() - start
        return {
            "records": count,
            "sdk_log_records_per_s": round(count / log_seconds, 1),
            "bulk_responses_per_s": round(count / respond_seconds, 1),
        }

    def run_size(self, size: int) -> dict:
        dataset = self.new_dataset(str(size))
        dataset_id = str(dataset.id)
        start = time.perf_counter()
        annotated = seed_with_sql(self.args.database, self, dataset_id, size)
        seed_seconds = time.perf_counter() - start

        queue_body = {
            "query": {},
            "filters": {
                "and": [
                    {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
                    {"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]},
                ]
            },
        }
        sdk_body = {
            "filters": {
                "and": [
                    {
                        "type": "range",
                        "scope": {"entity": "metadata", "metadata_property": "length"},
                        "ge": 500,
                        "le": 900,
                    },
                    {"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": ["pending"]},
                ]
            }
        }
        include = {"include": ["responses", "suggestions"]}

        def queue():
            data = self.post(
                self.annotator_key,
                f"/api/v1/me/datasets/{dataset_id}/records/search",
                queue_body,
                offset=0,
                limit=10,
                **include,
            )
            assert data["total"] == size - annotated, data["total"]

        # The per-user order must page without gaps or repeats (at this size it is the index-friendly rotation).
        pages = [
            self.post(
                self.annotator_key, f"/api/v1/me/datasets/{dataset_id}/records/search", queue_body, offset=o, limit=10
            )
            for o in (0, 10, 20)
        ]
        paged = [item["record"]["id"] for page in pages for item in page["items"]]
        assert len(paged) == len(set(paged)) == 30, "queue pages overlap"

        def sdk_search():
            self.post(
                self.args.api_key,
                f"/api/v1/datasets/{dataset_id}/records/search",
                sdk_body,
                offset=0,
                limit=100,
                **include,
            )

        def list_records():
            self.get(self.args.api_key, f"/api/v1/datasets/{dataset_id}/records", offset=0, limit=100, **include)

        similar_body = {"query": {"vector": {"name": "emb", "value": [0.5] * VECTOR_DIMS}}}
        metadata_ids = {
            p["name"]: p["id"]
            for p in self.get(self.args.api_key, f"/api/v1/me/datasets/{dataset_id}/metadata-properties")["items"]
        }
        repeats = self.args.repeats
        result = {
            "records": size,
            "annotated_by_user": annotated,
            "seeded_with_sql_seconds": round(seed_seconds, 1),
            "ui_queue_query": timed(queue, repeats),
            "sdk_filtered_search": timed(sdk_search, repeats),
            "baseline_list_endpoint": timed(list_records, repeats),
            "dataset_progress": timed(
                lambda: self.get(self.args.api_key, f"/api/v1/datasets/{dataset_id}/progress"), repeats
            ),
            "user_metrics": timed(
                lambda: self.get(self.annotator_key, f"/api/v1/me/datasets/{dataset_id}/metrics"), repeats
            ),
            "terms_metadata_metrics": timed(
                lambda: self.get(self.args.api_key, f"/api/v1/metadata-properties/{metadata_ids['source']}/metrics"),
                repeats,
            ),
            "integer_metadata_metrics": timed(
                lambda: self.get(self.args.api_key, f"/api/v1/metadata-properties/{metadata_ids['length']}/metrics"),
                repeats,
            ),
        }
        start = time.perf_counter()
        self.post(self.args.api_key, f"/api/v1/datasets/{dataset_id}/records/search", similar_body, limit=50)
        result["similarity_first_query_s"] = round(time.perf_counter() - start, 2)
        result["similarity_search_top50"] = timed(
            lambda: self.post(
                self.args.api_key, f"/api/v1/datasets/{dataset_id}/records/search", similar_body, limit=50
            ),
            repeats,
        )
        with without_backend_indexes(self.args.database):
            result["unindexed_ui_queue_query"] = timed(queue, max(5, repeats // 5))
            result["unindexed_sdk_filtered_search"] = timed(sdk_search, max(5, repeats // 5))
        for name in ("ui_queue_query", "sdk_filtered_search"):
            result[f"speedup_vs_unindexed_{name}"] = round(
                result[f"unindexed_{name}"]["p50_ms"] / result[name]["p50_ms"], 2
            )
        result["queue_vs_list_endpoint_p50"] = round(
            result["ui_queue_query"]["p50_ms"] / result["baseline_list_endpoint"]["p50_ms"], 2
        )
        return result

    def all_record_ids(self, dataset_id: str, size: int) -> list[str]:
        ids = []
        while len(ids) < size:
            page = self.get(self.args.api_key, f"/api/v1/datasets/{dataset_id}/records", offset=len(ids), limit=1000)
            ids += [item["id"] for item in page["items"]]
            if not page["items"]:
                break
        return ids


WORDS = ["cats", "dogs", "birds", "fish"]
SOURCES = ["web", "book", "chat", "code"]


def synthetic_record(rng: random.Random, i: int) -> dict:
    return {
        "id": f"r{i}",
        "fields": {"text": f"prompt {i}: " + " ".join(rng.choice(WORDS) for _ in range(12))},
        "metadata": {"source": rng.choice(SOURCES), "length": rng.randint(1, 2000)},
        "vectors": {"emb": [round(rng.uniform(-1, 1), 4) for _ in range(VECTOR_DIMS)]},
        "suggestions": [
            rg.Suggestion(
                question_name="label", value=rng.choice(["good", "bad"]), score=round(rng.random(), 3), agent="rm"
            )
        ],
    }


def seed_with_sql(database: Path, bench: Bench, dataset_id: str, size: int) -> int:
    """Write `size` records (with a suggestion and a vector each) and one annotator's submitted responses on a
    tenth of them straight into the server's SQLite tables, as Argilla's bulk upsert would have written them. The
    server's own bulk path runs at ~100 records/s on this machine (measured separately by `logging_throughput`),
    which would make a 100k dataset take a quarter of an hour to load; the queries measured do not care how the
    rows arrived. Returns how many records the annotator answered."""
    key = bench.args.api_key
    questions = {q["name"]: q["id"] for q in bench.get(key, f"/api/v1/datasets/{dataset_id}/questions")["items"]}
    vector_settings_id = bench.get(key, f"/api/v1/datasets/{dataset_id}/vectors-settings")["items"][0]["id"]
    hexid = lambda value: uuid.UUID(str(value)).hex  # noqa: E731 - SQLAlchemy stores UUIDs as 32 hex chars in SQLite
    base = datetime.datetime.utcnow()
    rng = random.Random(size)
    records, suggestions, vectors, responses = [], [], [], []
    annotated = int(size * ANNOTATED_FRACTION)
    for i in range(size):
        data = synthetic_record(rng, i)
        record_id = uuid.uuid4().hex
        stamp = (base + datetime.timedelta(microseconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
        status = "completed" if i < annotated else "pending"
        records.append(
            (
                record_id,
                json.dumps(data["fields"]),
                f"r{i}",
                hexid(dataset_id),
                stamp,
                stamp,
                json.dumps(data["metadata"]),
                status,
            )
        )
        suggestion = data["suggestions"][0]
        suggestions.append(
            (
                uuid.uuid4().hex,
                json.dumps(suggestion.value),
                json.dumps(suggestion.score),
                "rm",
                None,
                record_id,
                hexid(questions["label"]),
                stamp,
                stamp,
            )
        )
        vectors.append(
            (json.dumps(data["vectors"]["emb"]), record_id, hexid(vector_settings_id), uuid.uuid4().hex, stamp, stamp)
        )
        if i < annotated:
            values = json.dumps({"label": {"value": "good"}, "rating": {"value": 4}})
            responses.append(
                (uuid.uuid4().hex, values, "submitted", record_id, hexid(bench.annotator_id), stamp, stamp)
            )
    connection = sqlite3.connect(database, timeout=60)
    with connection:
        connection.executemany(
            _insert("records", "id, fields, external_id, dataset_id, inserted_at, updated_at, metadata, status"),
            records,
        )
        connection.executemany(
            _insert("suggestions", "id, value, score, agent, type, record_id, question_id, inserted_at, updated_at"),
            suggestions,
        )
        connection.executemany(
            _insert("vectors", "value, record_id, vector_settings_id, id, inserted_at, updated_at"),
            vectors,
        )
        connection.executemany(
            _insert("responses", 'id, "values", status, record_id, user_id, inserted_at, updated_at'),
            responses,
        )
    connection.close()
    return annotated


def _insert(table: str, columns: str) -> str:
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * (columns.count(',') + 1))})"


class without_backend_indexes:
    """Drop the backend's own indexes (ix_wbsql_*) for a baseline, and put them back exactly as they were."""

    def __init__(self, database: Path):
        self.database = database

    def __enter__(self):
        self.connection = sqlite3.connect(self.database, timeout=60)
        self.saved = self.connection.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name LIKE 'ix_wbsql_%'"
        ).fetchall()
        for name, _ in self.saved:
            self.connection.execute(f'DROP INDEX "{name}"')
        self.connection.commit()

    def __exit__(self, *exc):
        for _, sql in self.saved:
            self.connection.execute(sql)
        self.connection.commit()
        self.connection.close()


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpu": None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "database": "SQLite (embedded server)",
        # Other work on a shared machine shows up here; latencies taken under load are noisier.
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> None:
    args = parse_args()
    bench = Bench(args)
    results = {"benchmark": "argilla_search", "backend": "workbench-sql", "machine": machine(), "sizes": []}
    results["logging"] = bench.logging_throughput(args.log_sample)
    print(json.dumps(results["logging"]), file=sys.stderr)
    for size in args.sizes:
        results["sizes"].append(bench.run_size(size))
        print(json.dumps(results["sizes"][-1]), file=sys.stderr)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
