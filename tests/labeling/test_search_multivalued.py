"""Lists where Elasticsearch indexes multi-valued fields: terms metadata with several values, multi-label answers
and suggestions (with one score per label). Elasticsearch matches a document when any value matches, and its
terms aggregation counts a document once per distinct value; expected values are derived by hand below.

Records: m0 tags [web, book], topics suggestion [x, y] scores [0.9, 0.2]; m1 tags web; m2 tags [chat];
m3 no tags, topics suggestion [z] score [0.5]. The owner answers topics [x, z] on m0 and [y] on m2.
"""

from __future__ import annotations

import uuid

import argilla as rg
import httpx
import pytest

pytestmark = pytest.mark.argilla


@pytest.fixture(scope="module")
def multivalued(backend_server):
    client = rg.Argilla(api_url=backend_server.api_url, api_key=backend_server.api_key)
    workspace = client.workspaces.add(rg.Workspace(name=f"mv-{uuid.uuid4().hex[:8]}"))
    settings = rg.Settings(
        fields=[rg.TextField(name="text")],
        questions=[rg.MultiLabelQuestion(name="topics", labels=["x", "y", "z"])],
        metadata=[rg.TermsMetadataProperty(name="tags")],
    )
    dataset = rg.Dataset(name=f"mv-{uuid.uuid4().hex[:6]}", workspace=workspace.name, settings=settings, client=client)
    dataset.create()
    suggestion = {
        0: rg.Suggestion(question_name="topics", value=["x", "y"], score=[0.9, 0.2], agent="m"),
        3: rg.Suggestion(question_name="topics", value=["z"], score=[0.5], agent="m"),
    }
    tags = {0: ["web", "book"], 1: "web", 2: ["chat"]}
    dataset.records.log(
        [
            rg.Record(
                id=f"m{i}",
                fields={"text": f"item {i}"},
                metadata={"tags": tags[i]} if i in tags else {},
                suggestions=[suggestion[i]] if i in suggestion else [],
            )
            for i in range(4)
        ]
    )
    headers = {"X-Argilla-Api-Key": backend_server.api_key}
    listed = httpx.get(f"{backend_server.api_url}/api/v1/datasets/{dataset.id}/records", headers=headers).json()
    ids = {item["external_id"]: item["id"] for item in listed["items"]}
    for external, topics in [("m0", ["x", "z"]), ("m2", ["y"])]:
        answer = {"status": "submitted", "values": {"topics": {"value": topics}}}
        created = httpx.post(
            f"{backend_server.api_url}/api/v1/records/{ids[external]}/responses", headers=headers, json=answer
        )
        assert created.status_code == 201, created.text

    def search(*filters: dict) -> list[str]:
        by_id = {v: k for k, v in ids.items()}
        response = httpx.post(
            f"{backend_server.api_url}/api/v1/datasets/{dataset.id}/records/search",
            headers=headers,
            json={"filters": {"and": list(filters)}},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["total"] == len(body["items"])
        return sorted(by_id[item["record"]["id"]] for item in body["items"])

    tags_property = httpx.get(
        f"{backend_server.api_url}/api/v1/me/datasets/{dataset.id}/metadata-properties", headers=headers
    ).json()["items"][0]
    metrics = httpx.get(
        f"{backend_server.api_url}/api/v1/metadata-properties/{tags_property['id']}/metrics", headers=headers
    ).json()
    return search, metrics


def tags_in(*values: str) -> dict:
    return {"type": "terms", "scope": {"entity": "metadata", "metadata_property": "tags"}, "values": list(values)}


def test_terms_metadata_matches_any_element_of_a_list(multivalued):
    search, _ = multivalued
    assert search(tags_in("web")) == ["m0", "m1"]
    assert search(tags_in("book")) == ["m0"]
    assert search(tags_in("chat", "book")) == ["m0", "m2"]
    assert search(tags_in("nope")) == []


def test_terms_metrics_count_each_element(multivalued):
    _, metrics = multivalued
    assert metrics["total"] == 4
    assert sorted((v["term"], v["count"]) for v in metrics["values"]) == [("book", 1), ("chat", 1), ("web", 2)]


def test_multi_label_responses_and_suggestions(multivalued):
    search, _ = multivalued
    topics_response = {"type": "terms", "scope": {"entity": "response", "question": "topics"}, "values": ["z"]}
    assert search(topics_response) == ["m0"]
    suggested = {"type": "terms", "scope": {"entity": "suggestion", "question": "topics", "property": "value"}}
    assert search(suggested | {"values": ["y"]}) == ["m0"]
    assert search(suggested | {"values": ["x", "z"]}) == ["m0", "m3"]
    score = {"type": "range", "scope": {"entity": "suggestion", "question": "topics", "property": "score"}}
    assert search(score | {"ge": 0.8}) == ["m0"]  # any of m0's scores [0.9, 0.2]
    assert search(score | {"ge": 0.3, "le": 0.6}) == ["m3"]
