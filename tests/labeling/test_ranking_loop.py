"""The ranking loop against the real embedded Argilla: push (twice, resumed), annotate, status, pull, simulate.

Annotators are real Argilla users answering through the REST API with their own keys, as the UI does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from labeling import api
from labeling.selection import candidate_diversity
from workbench.cli import main as workbench
from workbench.errors import UserError

pytestmark = pytest.mark.argilla

ROWS = [
    (
        "q1",
        "How do I keep basil alive indoors?",
        ["Give basil sun.", "Basil needs six hours of sun and damp soil.", "no"],
    ),
    ("q2", "Name a fast animal.", ["The cheetah is very fast.", "A snail.", "Cheetahs run at 100 km/h."]),
    ("q3", "Say hello politely.", ["Hello, nice to meet you!", "hello", "Go away."]),
]


def write_candidates(path: Path, rows=ROWS) -> Path:
    with open(path, "w") as handle:
        for prompt_id, question, completions in rows:
            row = {"prompt_id": prompt_id, "prompt": [{"role": "user", "content": question}]}
            row |= {"completions": completions, "policy": {"adapter": None, "base_model": "hand-written"}}
            handle.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def argilla_env(argilla_server, monkeypatch):
    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    return argilla_server


def label(*args) -> int:
    return workbench(["label", *map(str, args)])


def records_of(client, name: str) -> dict[str, dict]:
    """prompt_id -> record (REST form, with responses)."""
    dataset = api.find_dataset(client, name)
    return {r["metadata"]["prompt_id"]: r for r in api.iter_records(client, dataset.id)}


def respond(server, api_key: str, record_id: str, ranks: dict[str, int] | None, status: str = "submitted"):
    import httpx

    values = {}
    if ranks is not None:
        values["ranking"] = {"value": [{"value": f"response_{i}", "rank": r} for i, r in ranks.items()]}
    response = httpx.post(
        f"{server.api_url}/api/v1/records/{record_id}/responses",
        headers={"X-Argilla-Api-Key": api_key},
        json={"values": values, "status": status},
    )
    response.raise_for_status()


def test_push_twice_and_resume_keep_records_and_responses(argilla_env, tmp_path):
    name, suffix = f"loop-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    full = write_candidates(tmp_path / "all.jsonl")
    partial = write_candidates(tmp_path / "partial.jsonl", ROWS[:2])  # a push interrupted after two records
    assert label("push", "--candidates", partial, "--dataset", name, "--min_submitted", 2) == 0
    client = argilla_env.client()
    _, key = argilla_env.create_user(f"ann-{suffix}", "annotator-pass", workspace="workbench")
    respond(argilla_env, key, records_of(client, name)["q1"]["id"], {1: 2, 2: 1, 3: 3})

    assert label("push", "--candidates", full, "--dataset", name) == 0  # resumes: adds q3 only
    assert label("push", "--candidates", full, "--dataset", name) == 0  # adds nothing
    records = records_of(client, name)
    assert sorted(records) == ["q1", "q2", "q3"]
    assert len({r["external_id"] for r in records.values()}) == 3
    [kept] = records["q1"]["responses"]
    ranks = {item["value"]: item["rank"] for item in kept["values"]["ranking"]["value"]}
    assert kept["status"] == "submitted" and ranks == {"response_1": 2, "response_2": 1, "response_3": 3}
    assert records["q1"]["fields"]["prompt"] == [{"role": "user", "content": ROWS[0][1]}]
    diversity = round(candidate_diversity(ROWS[0][2]), 6)  # labeling/selection.py; no scores, so no uncertainty
    metadata = {"policy": "base:hand-written", "round": 1, "prompt_id": "q1", "diversity": diversity}
    assert records["q1"]["metadata"] == metadata
    dataset = api.find_dataset(client, name)
    assert dataset.settings.distribution.min_submitted == 2
    assert {q.name for q in dataset.settings.questions} == {"ranking", "comment"}
    assert "same rank" in dataset.settings.guidelines

    # Other completions under the same ids are refused, and nothing changes.
    changed = [(ROWS[0][0], ROWS[0][1], ["A.", "B.", "C."]), *ROWS[1:]]
    assert label("push", "--candidates", write_candidates(tmp_path / "changed.jsonl", changed), "--dataset", name) == 2
    assert records_of(client, name)["q1"]["fields"]["response_1"] == ROWS[0][2][0]
    # A new round is new records.
    assert label("push", "--candidates", full, "--dataset", name, "--round", 2) == 0
    assert len(list(api.iter_records(client, dataset.id, include_responses=False))) == 6


def test_two_annotators_pull_with_documented_numbers(argilla_env, tmp_path, capsys):
    """The hand-computed example of test_aggregate.py, through the server; drafts and discards are ignored."""
    name, suffix = f"agree-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    assert label("push", "--candidates", write_candidates(tmp_path / "c.jsonl"), "--dataset", name) == 0
    client = argilla_env.client()
    keys = {
        who: argilla_env.create_user(f"{who}-{suffix}", "annotator-pass", workspace="workbench")[1]
        for who in ("x", "y", "z")
    }
    records = records_of(client, name)
    respond(argilla_env, keys["x"], records["q1"]["id"], {1: 1, 2: 2, 3: 3})
    respond(argilla_env, keys["y"], records["q1"]["id"], {1: 2, 2: 1, 3: 3})
    respond(argilla_env, keys["x"], records["q2"]["id"], {1: 1, 2: 1, 3: 2})
    respond(argilla_env, keys["y"], records["q2"]["id"], {1: 1, 2: 2, 3: 3})
    respond(argilla_env, keys["z"], records["q1"]["id"], {1: 3, 2: 2, 3: 1}, status="draft")
    respond(argilla_env, keys["z"], records["q2"]["id"], None, status="discarded")

    assert label("status", "--dataset", name) == 0
    status = capsys.readouterr().out
    assert "2/3 records completed" in status and f"x-{suffix}" in status and f"z-{suffix}" in status

    out = tmp_path / "prefs"
    assert label("pull", "--dataset", name, "--output", out) == 0
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    got = {
        (r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"]): (r["margin"], r["agreement"])
        for r in rows
    }
    q1, q2 = ROWS[0][2], ROWS[1][2]
    assert got == {
        ("q1", q1[0], q1[2]): (1.5, 1.0),
        ("q1", q1[1], q1[2]): (1.5, 1.0),
        ("q2", q2[0], q2[1]): (0.5, 0.5),
        ("q2", q2[0], q2[2]): (1.5, 1.0),
        ("q2", q2[1], q2[2]): (1.0, 1.0),
    }
    assert all(r["annotators"] == [f"x-{suffix}", f"y-{suffix}"] for r in rows)
    assert rows[0]["prompt"] == [{"role": "user", "content": ROWS[0][1]}]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {
        "records": 3,
        "records_ranked": 2,
        "submitted": 4,
        "drafts_ignored": 1,
        "discarded_ignored": 1,
        "pairs": 5,
        "pairs_below_agreement": 0,
        "pairs_identical_texts": 0,
    }
    assert manifest["agreement"]["krippendorff_alpha_ordinal"] == pytest.approx(1829 / 3204)
    assert manifest["agreement"]["mean_kendalls_w"] == pytest.approx((0.75 + 13 / 14) / 2)
    assert manifest["argilla"]["dataset"] == name and manifest["rounds"] == [1]
    assert list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    per_prompt = {p["prompt_id"]: p["kendalls_w"] for p in map(json.loads, (out / "agreement.jsonl").open())}
    assert per_prompt == pytest.approx({"q1": 0.75, "q2": 13 / 14})

    # Pulling again never clobbers what was pulled; --overwrite replaces it whole; Borda changes the q2 margins.
    before = (out / "preferences.jsonl").read_text()
    assert label("pull", "--dataset", name, "--output", out) == 2
    assert (out / "preferences.jsonl").read_text() == before
    assert label("pull", "--dataset", name, "--output", out, "--overwrite", "--aggregation", "borda") == 0
    borda = {
        (r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"]): r["margin"]
        for r in map(json.loads, (out / "preferences.jsonl").open())
    }
    assert borda[("q2", q2[0], q2[2])] == 1.75 and borda[("q2", q2[1], q2[2])] == 1.25

    # --min_agreement 1 leaves out the one pair the two annotators split on, and the manifest counts it.
    assert label("pull", "--dataset", name, "--output", out, "--overwrite", "--min_agreement", "1") == 0
    kept = [
        (r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"])
        for r in map(json.loads, (out / "preferences.jsonl").open())
    ]
    assert sorted(kept) == sorted(pair for pair in got if pair != ("q2", q2[0], q2[1]))
    assert json.loads((out / "manifest.json").read_text())["counts"]["pairs_below_agreement"] == 1


def test_simulated_annotator_ranks_by_rubric(argilla_env, tmp_path):
    from labeling import rubric

    name = f"sim-{uuid.uuid4().hex[:6]}"
    assert label("push", "--candidates", write_candidates(tmp_path / "c.jsonl"), "--dataset", name) == 0
    assert label("simulate", "--dataset", name, "--annotator", "robo") == 0
    assert label("simulate", "--dataset", name, "--annotator", "robo") == 0  # nothing left for it: no duplicates
    records = records_of(argilla_env.client(), name)
    for prompt_id, question, completions in ROWS:
        [response] = records[prompt_id]["responses"]
        assert response["status"] == "submitted"
        assert response["values"]["comment"]["value"].startswith(f"simulated by {rubric.RUBRIC_VERSION}")
        best = response["values"]["ranking"]["value"][0]["value"]
        scores = [rubric.score([{"role": "user", "content": question}], c) for c in completions]
        assert best == f"response_{scores.index(max(scores)) + 1}"
    out = tmp_path / "prefs"
    assert label("pull", "--dataset", name, "--output", out) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["annotators"] == [{"username": "sim-robo", "submitted": 3, "simulated": True}]


def test_bad_input_is_refused_before_anything_is_sent(argilla_env, tmp_path, monkeypatch):
    from labeling.candidates import load_candidates

    good = {"prompt_id": "a", "prompt": [{"role": "user", "content": "Hi"}], "completions": ["One.", "Two."]}
    cases = {
        "missing column(s) ['completions']": [{"prompt_id": "a", "prompt": good["prompt"]}],
        "but earlier rows have K=2": [good, {**good, "prompt_id": "b", "completions": ["x", "y", "z"]}],
        "empty completion(s) at index [1]": [{**good, "completions": ["One.", "  "]}],
        "duplicate prompt_id 'a' (first on line 1)": [good, good],
    }
    for expected, rows in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            load_candidates(path)
        assert label("push", "--candidates", path, "--dataset", "never-created") == 2
    assert api.find_dataset(argilla_env.client(), "never-created", required=False) is None

    good_file = tmp_path / "good.jsonl"
    good_file.write_text(json.dumps(good) + "\n")
    monkeypatch.setenv("ARGILLA_API_KEY", "argilla.apikey.not-a-real-key-000000")
    with pytest.raises(UserError, match="rejected the API key"):
        from labeling.connection import connect

        connect()
    monkeypatch.setenv("ARGILLA_API_URL", "http://127.0.0.1:9")
    assert label("push", "--candidates", good_file, "--dataset", "x") == 2
    assert label("pull", "--dataset", "x", "--output", tmp_path / "none") == 2
    assert not (tmp_path / "none").exists()


def test_labeling_commands_never_import_torch(argilla_env, tmp_path):
    name = f"notorch-{uuid.uuid4().hex[:6]}"
    candidates = str(write_candidates(tmp_path / "c.jsonl"))
    script = (
        "import sys; from labeling.cli import main; "
        f"assert main(['push', '--candidates', {candidates!r}, '--dataset', {name!r}]) == 0; "
        f"assert main(['simulate', '--dataset', {name!r}, '--annotator', 'nt']) == 0; "
        f"assert main(['pull', '--dataset', {name!r}, '--output', {str(tmp_path / 'p')!r}]) == 0; "
        "assert 'torch' not in sys.modules, 'labeling imported torch'"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_generate_push_simulate_pull_trains_a_reward_model(argilla_env, tiny_model_path, tmp_path):
    """End to end on tiny-llama: candidates → Argilla → simulated ranking → pairs that TRL's RewardTrainer reads."""
    import datasets
    from trl import RewardConfig, RewardTrainer

    from workbench.modeling import loading
    from workbench.modeling.arguments import ModelArguments

    name = f"e2e-{uuid.uuid4().hex[:6]}"
    candidates = tmp_path / "candidates"
    assert (
        workbench(
            [
                "generate",
                "--model_name_or_path",
                "tiny-llama",
                "--max_prompts",
                "2",
                "--num_completions",
                "3",
                "--max_new_tokens",
                "6",
                "--min_new_tokens",
                "3",
                "--load_in_4bit",
                "false",
                "--dtype",
                "float32",
                "--output_dir",
                str(candidates),
                "--wandb_mode",
                "disabled",
            ]
        )
        == 0
    )
    assert label("push", "--candidates", candidates, "--dataset", name) == 0
    assert label("simulate", "--dataset", name, "--annotator", "e2e", "--noise", "0.5", "--seed", "3") == 0
    out = tmp_path / "prefs"
    assert label("pull", "--dataset", name, "--output", out, "--wandb_mode", "disabled") == 0
    train = datasets.load_dataset("json", data_files=str(out / "preferences.jsonl"))["train"]
    assert len(train) >= 1 and {"prompt", "chosen", "rejected", "margin"} <= set(train.column_names)

    tokenizer = loading.load_tokenizer("tiny-llama")
    model_args = ModelArguments(model_name_or_path="tiny-llama", load_in_4bit=False, dtype="float32", device_map="cpu")
    model = loading.load_model(model_args, head="scalar", pad_token_id=tokenizer.pad_token_id)
    args = RewardConfig(
        output_dir=str(tmp_path / "rm"),
        max_steps=1,
        per_device_train_batch_size=2,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer)
    assert {"chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    assert trainer.train().global_step == 1


def test_push_select_sends_the_most_uncertain_prompts_first_and_the_queue_sorts_by_uncertainty(argilla_env, tmp_path):
    """Active selection on the real server: `--select 1 --strategy uncertainty` pushes the prompt the reward model is
    least sure about, and a larger N adds the next ones (a repeated push adds nothing); records carry `uncertainty`
    and `diversity` as metadata and the reward model's ranking as a suggestion; an annotator's queue sorted by
    uncertainty is most uncertain first."""
    import httpx

    from labeling.selection import ranking_uncertainty
    from labeling.settings import first_place_probabilities

    name, suffix = f"active-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex[:6]
    pool = write_candidates(tmp_path / "pool.jsonl")
    # q2's candidates tie (1 bit), q1's first two are close, q3's are far apart; reward scores are unbounded
    scores = {"q1": [-3.0, -2.5, 3.0], "q2": [1.0, 1.0, 1.0], "q3": [0.0, 4.0, 8.0]}
    scored = tmp_path / "scored.jsonl"
    scored.write_text(
        "".join(json.dumps({"prompt_id": p, "scores": s, "agent": "rm/reward"}) + "\n" for p, s in scores.items())
    )
    push = ["push", "--candidates", pool, "--dataset", name, "--suggestions", scored, "--strategy", "uncertainty"]
    client = argilla_env.client()
    assert label(*push, "--select", 1) == 0
    assert sorted(records_of(client, name)) == ["q2"]

    # a dataset from before the selection metadata existed gets the properties on its next push
    dataset = api.find_dataset(client, name)
    headers = {"X-Argilla-Api-Key": argilla_env.api_key}
    url = argilla_env.api_url
    properties = httpx.get(f"{url}/api/v1/me/datasets/{dataset.id}/metadata-properties", headers=headers).json()
    (uncertainty,) = [prop for prop in properties["items"] if prop["name"] == "uncertainty"]
    httpx.delete(f"{url}/api/v1/metadata-properties/{uncertainty['id']}", headers=headers).raise_for_status()
    assert label(*push, "--select", 1) == 0  # the round holds 1 already: nothing is added
    assert sorted(records_of(client, name)) == ["q2"]
    assert label(*push, "--select", 2) == 0
    assert sorted(records_of(client, name)) == ["q1", "q2"]
    assert label(*push, "--select", 5) == 0  # only q3 is left
    records = records_of(client, name)
    assert sorted(records) == ["q1", "q2", "q3"]
    completions = {prompt_id: texts for prompt_id, _, texts in ROWS}
    for prompt_id, record in records.items():
        assert record["metadata"]["uncertainty"] == round(ranking_uncertainty([scores[prompt_id]]), 6)
        assert record["metadata"]["diversity"] == round(candidate_diversity(completions[prompt_id]), 6)
        suggestions = httpx.get(f"{argilla_env.api_url}/api/v1/records/{record['id']}/suggestions", headers=headers)
        (suggestion,) = suggestions.json()["items"]
        best = sorted(first_place_probabilities(scores[prompt_id]), reverse=True)
        assert suggestion["agent"] == "rm/reward" and suggestion["score"] == pytest.approx(best, abs=1e-6)

    _, key = argilla_env.create_user(f"ann-{suffix}", "annotator-pass", workspace="workbench")
    me = {"X-Argilla-Api-Key": key}
    visible = httpx.get(f"{argilla_env.api_url}/api/v1/me/datasets/{dataset.id}/metadata-properties", headers=me)
    types = {prop["name"]: prop["settings"]["type"] for prop in visible.json()["items"]}
    assert types["uncertainty"] == types["diversity"] == "float"
    pending = [{"type": "terms", "scope": {"entity": "record", "property": "status"}, "values": ["pending"]}]
    by_uncertainty = [{"scope": {"entity": "metadata", "metadata_property": "uncertainty"}, "order": "desc"}]
    queue = httpx.post(
        f"{argilla_env.api_url}/api/v1/me/datasets/{dataset.id}/records/search",
        headers=me,
        json={"query": {}, "filters": {"and": pending}, "sort": by_uncertainty},
    )
    assert queue.status_code == 200, queue.text
    assert [item["record"]["metadata"]["prompt_id"] for item in queue.json()["items"]] == ["q2", "q1", "q3"]
