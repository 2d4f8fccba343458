"""Conformance of the `workbench-sql` search backend, through the live embedded server's REST API and the SDK.

One small dataset with hand-chosen data; every expected value below is derived by hand from that data, following
what the Elasticsearch backend (argilla_server/search_engine/commons.py) returns for the same query.

Data (i = 0..11): text "record {i} about cats|dogs" (cats when i is odd), metadata source = web/book/chat by i % 3,
length = 10 * i, quality = i / 10, a 3-d vector, a label suggestion "a" (even i, agent model-x, score 0.9) or
"b" (odd i, agent model-y, score 0.3 + i / 100). Distribution: two submitted responses complete a record.
Responses: alice submits r0 r1 r2 (ratings 5 4 3), drafts r3, discards r4 (label c); bob submits r0 (rating 1) and r5,
drafts r1. So only r0 is completed.
"""

from __future__ import annotations

import uuid

import argilla as rg
import httpx
import pytest

pytestmark = pytest.mark.argilla

N = 12


def _vector(i: int) -> list[float]:
    return [1.0, i / 4.0, (i % 3) - 1.0]


class Labeling:
    """The dataset above, its record ids by index, and REST helpers for the owner and the two annotators."""

    def __init__(self, server):
        self.server = server
        self.workspace = f"ws-{uuid.uuid4().hex[:8]}"
        suffix = uuid.uuid4().hex[:6]
        self.alice_id, self.alice_key = server.create_user(f"alice{suffix}", "alice-pass-1", workspace=self.workspace)
        self.bob_id, self.bob_key = server.create_user(f"bob{suffix}", "bob-pass-12", workspace=self.workspace)
        self.client = rg.Argilla(api_url=server.api_url, api_key=server.api_key)
        settings = rg.Settings(
            fields=[rg.TextField(name="text")],
            questions=[
                rg.LabelQuestion(name="label", labels=["a", "b", "c"]),
                rg.RatingQuestion(name="rating", values=[1, 2, 3, 4, 5], required=False),
                rg.TextQuestion(name="note", required=False),
            ],
            metadata=[
                rg.TermsMetadataProperty(name="source"),
                rg.IntegerMetadataProperty(name="length"),
                rg.FloatMetadataProperty(name="quality"),
            ],
            vectors=[rg.VectorField(name="emb", dimensions=3)],
            distribution=rg.TaskDistribution(min_submitted=2),
        )
        self.dataset = rg.Dataset(
            name=f"conf-{suffix}", workspace=self.workspace, settings=settings, client=self.client
        )
        self.dataset.create()
        self.dataset.records.log(
            [
                rg.Record(
                    id=f"r{i}",
                    fields={"text": f"record {i} about {'cats' if i % 2 else 'dogs'}"},
                    metadata={"source": ["web", "book", "chat"][i % 3], "length": 10 * i, "quality": i / 10},
                    vectors={"emb": _vector(i)},
                    suggestions=[
                        rg.Suggestion(
                            question_name="label",
                            value="a" if i % 2 == 0 else "b",
                            agent="model-x" if i % 2 == 0 else "model-y",
                            score=0.9 if i % 2 == 0 else round(0.3 + i / 100, 2),
                        )
                    ],
                )
                for i in range(N)
            ]
        )
        self.id = str(self.dataset.id)
        self.ids = self._record_ids()
        self.index = {record_id: i for i, record_id in enumerate(self.ids)}
        for i, rating in [(0, 5), (1, 4), (2, 3)]:
            self.respond(self.alice_key, i, "submitted", {"label": "a", "rating": rating})
        self.respond(self.alice_key, 3, "draft", {"label": "b"})
        # The SDK cannot read back a discarded response without values (argilla 2.8 responses.py), so give one.
        self.respond(self.alice_key, 4, "discarded", {"label": "c"})
        self.respond(self.bob_key, 0, "submitted", {"label": "c", "rating": 1})
        self.respond(self.bob_key, 5, "submitted", {"label": "b"})
        self.respond(self.bob_key, 1, "draft", {"label": "c"})

    def _record_ids(self) -> list[str]:
        body = self.get(self.server.api_key, f"/api/v1/datasets/{self.id}/records", limit=N)
        by_external = {item["external_id"]: item["id"] for item in body["items"]}
        return [by_external[f"r{i}"] for i in range(N)]

    def respond(self, key: str, i: int, status: str, values: dict | None) -> str:
        body = {"status": status}
        if values is not None:
            body["values"] = {name: {"value": value} for name, value in values.items()}
        response = httpx.post(
            f"{self.server.api_url}/api/v1/records/{self.ids[i]}/responses",
            headers={"X-Argilla-Api-Key": key},
            json=body,
        )
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def get(self, key: str, path: str, **params) -> dict:
        response = httpx.get(f"{self.server.api_url}{path}", headers={"X-Argilla-Api-Key": key}, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def search(self, body: dict, key: str | None = None, me: bool = False, offset=0, limit=50) -> tuple[list, int]:
        """Record indexes in the order returned, and the total."""
        path = f"/api/v1/{'me/' if me else ''}datasets/{self.id}/records/search"
        response = httpx.post(
            f"{self.server.api_url}{path}",
            headers={"X-Argilla-Api-Key": key or self.server.api_key},
            params={"offset": offset, "limit": limit},
            json=body,
        )
        assert response.status_code == 200, response.text
        data = response.json()
        return [self.index[item["record"]["id"]] for item in data["items"]], data["total"]

    def queue(self, key: str, status: str, **page) -> tuple[list, int]:
        """The query the Argilla UI sends for an annotator's queue (RecordRepository.getRecordsByAdvanceSearch)."""
        filters = [{"type": "terms", "scope": {"entity": "response", "property": "status"}, "values": [status]}]
        if status == "pending":
            filters.append({"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": [status]})
        return self.search({"query": {}, "filters": {"and": filters}}, key=key, me=True, **page)


@pytest.fixture(scope="module")
def labeling(backend_server) -> Labeling:
    return Labeling(backend_server)


def terms(entity: str, values: list, **scope) -> dict:
    return {"type": "terms", "scope": {"entity": entity, **scope}, "values": values}


def range_(entity: str, ge=None, le=None, **scope) -> dict:
    body = {"type": "range", "scope": {"entity": entity, **scope}}
    if ge is not None:
        body["ge"] = ge
    if le is not None:
        body["le"] = le
    return body


def filtered(*filters: dict, sort: list | None = None) -> dict:
    body: dict = {"filters": {"and": list(filters)}} if filters else {}
    if sort:
        body["sort"] = sort
    return body


# -- the annotation queue ------------------------------------------------------------------------------------------


def test_queue_pending_excludes_what_each_user_answered(labeling):
    alice, alice_total = labeling.queue(labeling.alice_key, "pending")
    bob, bob_total = labeling.queue(labeling.bob_key, "pending")
    assert (sorted(alice), alice_total) == (list(range(5, N)), 7)
    assert (sorted(bob), bob_total) == ([2, 3, 4, 6, 7, 8, 9, 10, 11], 9)


@pytest.mark.parametrize(
    ("who", "status", "expected"),
    [("alice", "submitted", [0, 1, 2]), ("alice", "draft", [3]), ("alice", "discarded", [4]), ("bob", "draft", [1])],
)
def test_queue_by_response_status_of_the_user(labeling, who, status, expected):
    found, total = labeling.queue(getattr(labeling, f"{who}_key"), status)
    assert (sorted(found), total) == (expected, len(expected))


def test_queue_order_differs_per_user_but_is_stable(labeling):
    # Elasticsearch orders a user's records by a random score seeded with the user id.
    first, _ = labeling.search(filtered(), key=labeling.alice_key, me=True)
    again, _ = labeling.search(filtered(), key=labeling.alice_key, me=True)
    other, _ = labeling.search(filtered(), key=labeling.bob_key, me=True)
    assert first == again and sorted(first) == sorted(other) == list(range(N))
    assert first != other


def test_queue_pages_are_disjoint_and_complete(labeling):
    pages = [labeling.queue(labeling.bob_key, "pending", offset=offset, limit=4) for offset in (0, 4, 8)]
    assert [total for _, total in pages] == [9, 9, 9]
    seen = [i for page, _ in pages for i in page]
    assert [len(page) for page, _ in pages] == [4, 4, 1]
    assert sorted(seen) == [2, 3, 4, 6, 7, 8, 9, 10, 11]
    assert labeling.queue(labeling.bob_key, "pending", offset=20, limit=4) == ([], 9)


def test_queue_follows_submit_draft_discard_and_delete(backend_server):
    labeling = Labeling(backend_server)
    assert labeling.queue(labeling.alice_key, "pending")[1] == 7
    labeling.respond(labeling.alice_key, 5, "submitted", {"label": "a"})  # bob also submitted r5: completed
    draft_id = labeling.respond(labeling.alice_key, 6, "draft", {"label": "a"})
    assert labeling.queue(labeling.alice_key, "pending")[1] == 5
    assert labeling.queue(labeling.bob_key, "pending")[1] == 9  # bob's own answers did not change
    assert sorted(labeling.queue(labeling.alice_key, "draft")[0]) == [3, 6]
    progress = labeling.get(backend_server.api_key, f"/api/v1/datasets/{labeling.id}/progress")
    assert (progress["total"], progress["completed"], progress["pending"]) == (N, 2, N - 2)
    # Deleting a response puts the record back in the queue.
    deleted = httpx.delete(
        f"{backend_server.api_url}/api/v1/responses/{draft_id}", headers={"X-Argilla-Api-Key": labeling.alice_key}
    )
    assert deleted.status_code == 200, deleted.text
    assert labeling.queue(labeling.alice_key, "pending")[1] == 6


# -- response and record status without a user ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["submitted"], [0, 1, 2, 5]),
        (["draft"], [1, 3]),
        (["discarded"], [4]),
        (["pending"], [6, 7, 8, 9, 10, 11]),  # no response at all
        (["pending", "discarded"], [4, 6, 7, 8, 9, 10, 11]),
    ],
)
def test_response_status_filter_over_all_users(labeling, values, expected):
    found, total = labeling.search(filtered(terms("response", values, property="status")))
    assert (sorted(found), total) == (expected, len(expected))


def test_record_status_filter(labeling):
    assert labeling.search(filtered(terms("record", ["completed"], property="status"))) == ([0], 1)
    assert labeling.search(filtered(terms("record", ["pending"], property="status")))[1] == N - 1


def test_response_question_filters(labeling):
    assert sorted(labeling.search(filtered(range_("response", ge=4, question="rating")))[0]) == [0, 1]
    assert sorted(labeling.search(filtered(terms("response", ["c"], question="label")))[0]) == [0, 1, 4]
    # A text question is not indexed by Elasticsearch: filtering on it matches nothing.
    assert labeling.search(filtered(terms("response", ["x"], question="note"))) == ([], 0)


# -- metadata -------------------------------------------------------------------------------------------------------


def test_metadata_terms_and_ranges(labeling):
    source = {"metadata_property": "source"}
    assert sorted(labeling.search(filtered(terms("metadata", ["web"], **source)))[0]) == [0, 3, 6, 9]
    assert labeling.search(filtered(terms("metadata", ["web", "chat"], **source)))[1] == 8
    assert sorted(labeling.search(filtered(range_("metadata", 30, 70, metadata_property="length")))[0]) == [
        3,
        4,
        5,
        6,
        7,
    ]
    assert labeling.search(filtered(range_("metadata", ge=0.5, metadata_property="quality")))[1] == 7
    assert labeling.search(filtered(range_("metadata", le=0.25, metadata_property="quality")))[1] == 3
    both = filtered(terms("metadata", ["book"], **source), range_("metadata", ge=40, metadata_property="length"))
    assert sorted(labeling.search(both)[0]) == [4, 7, 10]


def test_metadata_metrics(labeling):
    properties = labeling.get(labeling.server.api_key, f"/api/v1/me/datasets/{labeling.id}/metadata-properties")[
        "items"
    ]
    metrics = {
        p["name"]: labeling.get(labeling.server.api_key, f"/api/v1/metadata-properties/{p['id']}/metrics")
        for p in properties
    }
    assert metrics["source"]["total"] == N
    assert sorted((v["term"], v["count"]) for v in metrics["source"]["values"]) == [
        ("book", 4),
        ("chat", 4),
        ("web", 4),
    ]
    assert (metrics["length"]["min"], metrics["length"]["max"]) == (0, 110)
    assert metrics["quality"]["min"] == pytest.approx(0.0) and metrics["quality"]["max"] == pytest.approx(1.1)


# -- suggestions ----------------------------------------------------------------------------------------------------


def test_suggestion_filters(labeling):
    evens, odds = [0, 2, 4, 6, 8, 10], [1, 3, 5, 7, 9, 11]
    value = filtered(terms("suggestion", ["a"], question="label", property="value"))
    agent = filtered(terms("suggestion", ["model-y"], question="label", property="agent"))
    score = filtered(range_("suggestion", ge=0.35, le=0.4, question="label", property="score"))
    assert sorted(labeling.search(value)[0]) == evens
    assert sorted(labeling.search(agent)[0]) == odds
    assert sorted(labeling.search(score)[0]) == [5, 7, 9]  # 0.35, 0.37, 0.39


# -- sorting and pagination -----------------------------------------------------------------------------------------


def test_sort_by_metadata_suggestion_score_and_record_fields(labeling):
    by_length = [{"scope": {"entity": "metadata", "metadata_property": "length"}, "order": "desc"}]
    assert labeling.search(filtered(sort=by_length) | {"filters": None})[0] == list(range(N - 1, -1, -1))
    by_score = [{"scope": {"entity": "suggestion", "question": "label", "property": "score"}, "order": "asc"}]
    found = labeling.search({"sort": by_score})[0]
    assert found[:6] == [1, 3, 5, 7, 9, 11] and sorted(found[6:]) == [0, 2, 4, 6, 8, 10]
    by_insertion = [{"scope": {"entity": "record", "property": "inserted_at"}, "order": "asc"}]
    assert labeling.search({"sort": by_insertion})[0] == list(range(N))


def test_sort_by_response_value_puts_unanswered_last(labeling):
    by_rating = [{"scope": {"entity": "response", "question": "rating"}, "order": "desc"}]
    found = labeling.search({"sort": by_rating})[0]
    # Average rating: r1 4, r2 3, r0 (5 + 1) / 2 = 3 -> r1 first; r0 and r2 tie; the rest have no rating.
    assert found[0] == 1 and sorted(found[1:3]) == [0, 2] and len(found) == N


def test_pagination_totals_and_default_insertion_order(labeling):
    pages = [labeling.search({}, offset=offset, limit=5) for offset in (0, 5, 10)]
    assert [total for _, total in pages] == [N, N, N]
    assert [i for page, _ in pages for i in page] == list(range(N))


# -- text query -----------------------------------------------------------------------------------------------------


def test_text_query_with_and_without_field(labeling):
    assert sorted(labeling.search({"query": {"text": {"q": "cats"}}})[0]) == [1, 3, 5, 7, 9, 11]
    assert labeling.search({"query": {"text": {"q": "record 3", "field": "text"}}})[0] == [3]
    assert labeling.search({"query": {"text": {"q": "dogs -record"}}}) == ([], 0)
    assert labeling.search(
        {"query": {"text": {"q": "CATS"}}, **filtered(terms("metadata", ["web"], metadata_property="source"))}
    )[0] == [3, 9]


# -- progress -------------------------------------------------------------------------------------------------------


def test_dataset_progress_and_user_metrics(labeling):
    progress = labeling.dataset.progress(with_users_distribution=True)
    assert (progress["total"], progress["completed"], progress["pending"]) == (N, 1, N - 1)
    alice = labeling.get(labeling.alice_key, f"/api/v1/me/datasets/{labeling.id}/metrics")
    assert alice["responses"] == {"total": N, "submitted": 3, "discarded": 1, "draft": 1, "pending": N - 5}
    bob = labeling.get(labeling.bob_key, f"/api/v1/me/datasets/{labeling.id}/metrics")
    assert bob["responses"] == {"total": N, "submitted": 2, "discarded": 0, "draft": 1, "pending": N - 3}


# -- the SDK --------------------------------------------------------------------------------------------------------


def _external_ids(records) -> list[str]:
    return sorted((record.id for record in records), key=lambda external: int(external[1:]))


def test_sdk_filters(labeling):
    records = labeling.dataset.records

    def query(*conditions):
        return _external_ids(records(query=rg.Query(filter=rg.Filter(list(conditions)))))

    assert query(("response.status", "==", "submitted")) == ["r0", "r1", "r2", "r5"]
    assert query(("response.status", "==", "pending")) == [f"r{i}" for i in range(6, N)]
    assert query(("status", "==", "completed")) == ["r0"]
    assert query(("metadata.length", ">=", 90)) == ["r9", "r10", "r11"]
    assert query(("metadata.quality", "<=", 0.15)) == ["r0", "r1"]
    assert query(("metadata.source", "in", ["chat"]), ("label.agent", "==", "model-x")) == ["r2", "r8"]
    assert query(("label.score", ">=", 0.5)) == ["r0", "r2", "r4", "r6", "r8", "r10"]
    assert _external_ids(records(query=rg.Query(query="dogs"))) == [f"r{i}" for i in range(0, N, 2)]


def test_similarity_search(labeling):
    # Cosine to r8's vector [1, 2, 1]: r8 itself (excluded when searching by record), then r11 [1, 2.75, 1].
    found, total = labeling.search({"query": {"vector": {"name": "emb", "value": _vector(8)}}}, limit=3)
    assert found[:2] == [8, 11] and total == 3
    by_record = {"query": {"vector": {"name": "emb", "record_id": labeling.ids[8]}}}
    found, _ = labeling.search(by_record, limit=3)
    assert found[0] == 11 and 8 not in found
    least = {"query": {"vector": {"name": "emb", "value": _vector(8), "order": "least_similar"}}}
    assert labeling.search(least, limit=1)[0] == [0]  # [1, 0, -1] is the farthest from [1, 2, 1]
    with_filter = by_record | filtered(terms("metadata", ["web"], metadata_property="source"))
    assert sorted(labeling.search(with_filter, limit=10)[0]) == [0, 3, 6, 9]
    sdk = labeling.dataset.records(query=rg.Query(similar=rg.Similar(name="emb", value=_vector(8))), limit=2)
    assert [record.id for record, _score in sdk][:2] == ["r8", "r11"]


def test_filtered_pages_in_insertion_order_whichever_plan(labeling):
    # 8 of 12 records match: the first pages are dense enough to walk the insertion-order index, the later ones
    # go through the metadata index; both plans must give the same order and total.
    web_or_book = filtered(terms("metadata", ["web", "book"], metadata_property="source"))
    pages = [labeling.search(web_or_book, offset=offset, limit=2) for offset in range(0, 8, 2)]
    assert [total for _, total in pages] == [8, 8, 8, 8]
    assert [i for page, _ in pages for i in page] == [0, 1, 3, 4, 6, 7, 9, 10]
