"""An annotator ranks in the real Argilla UI (Debian's Chromium), then `label pull` yields exactly those pairs.

One record is ranked in an order unlike the options' order (2 > 3 > 1), the other with a tie (1 = 3 > 2), using the
UI's keyboard ranking (focus a card, press its rank). Needs `pip install playwright` and `apt-get install chromium`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from labeling import api
from tests.labeling.conftest import signed_in_page
from workbench.cli import main as main_cli

pytestmark = [pytest.mark.argilla, pytest.mark.browser]

QUESTIONS = {
    "Which planet is called the red planet?": (
        ["Venus.", "Mars is the red planet.", "It is Mars."],
        {2: 1, 3: 2, 1: 3},
    ),
    "Suggest a name for a grey cat.": (["Smokey.", "Bob", "Ash."], {1: 1, 3: 1, 2: 2}),
}


def shown(page, texts: dict[str, str]) -> str:
    """The key of the one text in `texts` that the page shows (the record in focus view)."""
    for _attempt in range(100):
        found = [key for key, text in texts.items() if page.get_by_text(text, exact=True).count()]
        if len(found) == 1:
            return found[0]
        page.wait_for_timeout(200)
    raise AssertionError(f"expected one record on the page, found {found}")


def test_ui_rankings_become_exactly_these_pairs(argilla_server, tmp_path, monkeypatch):
    from workbench.cli import main

    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    suffix = uuid.uuid4().hex[:6]
    workspace, name, username, password = f"rank-{suffix}", f"rank-ui-{suffix}", f"ranker-{suffix}", "ranker-pass1"
    candidates = tmp_path / "candidates.jsonl"
    candidates.write_text(
        "".join(
            json.dumps({"prompt_id": f"p{i}", "prompt": [{"role": "user", "content": q}], "completions": texts}) + "\n"
            for i, (q, (texts, _)) in enumerate(QUESTIONS.items())
        )
    )
    assert main(["label", "push", "--candidates", str(candidates), "--dataset", name, "--workspace", workspace]) == 0
    argilla_server.create_user(username, password, workspace=workspace)

    with signed_in_page(argilla_server.api_url, tmp_path, username, password) as page:
        page.get_by_text(name).first.wait_for(timeout=60_000)
        page.get_by_text(name).first.click()
        done = set()
        for _ in QUESTIONS:
            page.locator("#response_1").first.wait_for(timeout=60_000)
            shown = None
            for _attempt in range(100):
                shown = next((q for q in QUESTIONS if q not in done and page.get_by_text(q).count()), None)
                if shown:
                    break
                page.wait_for_timeout(200)
            assert shown, "the next pending record did not show up"
            submit = page.locator("button.button--submit")
            page.wait_for_timeout(1000)  # the form settles after the record shows
            for option, rank in QUESTIONS[shown][1].items():
                placed = page.locator(f".draggable__slot:nth-child({rank}) #response_{option}")
                for _attempt in range(3):
                    page.locator(f"#response_{option}").first.focus()
                    page.keyboard.press(str(rank))
                    try:
                        placed.wait_for(timeout=3_000)
                        break
                    except Exception:  # a key pressed during an animation is lost: press it again
                        continue
                page.wait_for_timeout(300)
            page.screenshot(path=str(tmp_path / f"ranked-{len(done)}.png"))
            submit.click()
            page.get_by_text(shown).first.wait_for(state="detached", timeout=60_000)
            done.add(shown)

    out = tmp_path / "prefs"
    assert main(["label", "pull", "--dataset", name, "--workspace", workspace, "--output", str(out)]) == 0
    got = {
        (r["chosen"][0]["content"], r["rejected"][0]["content"], r["margin"], tuple(r["annotators"]))
        for r in map(json.loads, (out / "preferences.jsonl").open())
    }
    (venus, mars, it_is_mars), _ = QUESTIONS["Which planet is called the red planet?"]
    (smokey, bob, ash), _ = QUESTIONS["Suggest a name for a grey cat."]
    ranker = (username,)
    assert got == {
        (mars, it_is_mars, 1.0, ranker),
        (mars, venus, 2.0, ranker),
        (it_is_mars, venus, 1.0, ranker),
        (smokey, bob, 1.0, ranker),
        (ash, bob, 1.0, ranker),  # Smokey = Ash: a tie, no pair
    }


def test_a_labeler_sorts_the_queue_by_the_reward_model_s_uncertainty(argilla_server, tmp_path, monkeypatch):
    """Records pushed with reward-model scores carry `uncertainty` metadata that the real UI sorts the queue by:
    picked in the Sort menu (ascending: the record the reward model is surest about first), and descending (the
    most uncertain first, where a ranking teaches the reward model most)."""
    from workbench.cli import main

    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    suffix = uuid.uuid4().hex[:6]
    workspace, name, username, password = f"act-{suffix}", f"act-ui-{suffix}", f"sorter-{suffix}", "sorter-pass1"
    # uncertainty (bits): "Say one." 0.27 (scores 3 apart), "Say three." 0.96, "Say two." 1.0 (a tie). Unsorted,
    # an annotator's queue is a per-user shuffle; a sort the UI ignored would show the same record both ways
    rows = {"q3": ("Say three.", [0.0, 0.5]), "q1": ("Say one.", [0.0, 3.0]), "q2": ("Say two.", [1.0, 1.0])}
    candidates, scores = tmp_path / "candidates.jsonl", tmp_path / "scores.jsonl"
    candidates.write_text(
        "".join(
            json.dumps({"prompt_id": p, "prompt": [{"role": "user", "content": q}], "completions": ["Yes.", "No."]})
            + "\n"
            for p, (q, _) in rows.items()
        )
    )
    scores.write_text(
        "".join(json.dumps({"prompt_id": p, "scores": s, "agent": "rm"}) + "\n" for p, (_, s) in rows.items())
    )
    push = ["label", "push", "--candidates", str(candidates), "--dataset", name, "--workspace", workspace]
    assert main([*push, "--suggestions", str(scores)]) == 0
    argilla_server.create_user(username, password, workspace=workspace)

    with signed_in_page(argilla_server.api_url, tmp_path, username, password) as page:
        page.get_by_text(name).first.wait_for(timeout=60_000)
        page.get_by_text(name).first.click()
        page.locator("#response_1").first.wait_for(timeout=60_000)
        page.get_by_role("button", name="Sort", exact=True).first.click()
        page.get_by_role("button", name="Reward model uncertainty (bits)", exact=True).first.click()
        page.wait_for_url("**sort=metadata.uncertainty.asc**", timeout=30_000)
        assert shown(page, {q: q for q, _ in rows.values()}) == "Say one."
        page.goto(page.url.replace("metadata.uncertainty.asc", "metadata.uncertainty.desc"))
        page.locator("#response_1").first.wait_for(timeout=60_000)
        assert shown(page, {q: q for q, _ in rows.values()}) == "Say two."


def test_a_labeler_sees_the_suggestion_that_label_watch_refreshed(argilla_server, tmp_path, monkeypatch):
    """Records pushed with an old reward model's ranking; 4 rankings come in; `label watch --every 4` trains a new
    reward model and refreshes the pending records. In the real UI the pending record shows the old agent's ranking
    before, and after a reload the new reward model's name and ranking (cards placed in its order)."""
    from labeling.aggregate import dense_ranks
    from labeling.simulate import simulate
    from tests.labeling.test_watch import RECIPE, ROOT

    monkeypatch.setenv("ARGILLA_API_URL", argilla_server.api_url)
    monkeypatch.setenv("ARGILLA_API_KEY", argilla_server.api_key)
    suffix = uuid.uuid4().hex[:6]
    workspace, name, username, password = f"w-{suffix}", f"watch-ui-{suffix}", f"viewer-{suffix}", "viewer-pass1"
    topics = ["tea", "rain", "maps", "bees", "salt", "moss", "ink", "owls"]
    questions = {f"p{i}": f"Tell me one fact about {topic}." for i, topic in enumerate(topics)}
    candidates, scores = tmp_path / "candidates.jsonl", tmp_path / "scores.jsonl"
    completions = ["Here is a clear fact, with a reason why it holds.", "idk", "A short note."]
    candidates.write_text(
        "".join(
            json.dumps({"prompt_id": p, "prompt": [{"role": "user", "content": q}], "completions": completions}) + "\n"
            for p, q in questions.items()
        )
    )
    scores.write_text(
        "".join(json.dumps({"prompt_id": p, "scores": [0.0, 2.0, 1.0], "agent": "old/rm"}) + "\n" for p in questions)
    )
    push = ["label", "push", "--candidates", str(candidates), "--dataset", name, "--workspace", workspace]
    assert main_cli([*push, "--suggestions", str(scores)]) == 0
    argilla_server.create_user(username, password, workspace=workspace)
    client = argilla_server.client()
    dataset = api.find_dataset(client, name, workspace)
    assert simulate(client, dataset, f"sim-{suffix}", limit=4) == 4
    recipe, output = tmp_path / "reward.yaml", tmp_path / "watch"
    recipe.write_text(RECIPE)

    def agent(page) -> str:
        return page.locator(".draggable__slot .tooltip__text").first.text_content().strip()

    with signed_in_page(argilla_server.api_url, tmp_path, username, password) as page:
        page.get_by_text(name).first.wait_for(timeout=60_000)
        page.get_by_text(name).first.click()
        page.locator("#response_1").first.wait_for(timeout=60_000)
        before = shown(page, questions)
        assert agent(page) == "old/rm"
        page.locator(".draggable__slot:nth-child(1) #response_2").first.wait_for(timeout=10_000)  # old: 2 > 3 > 1

        watch = [sys.executable, "-m", "workbench.cli", "label", "watch", "--dataset", name, "--workspace", workspace]
        watch += ["--reward_recipe", str(recipe), "--output", str(output), "--every", "4", "--max_generations", "1"]
        result = subprocess.run(
            [*watch, "--listen", "poll", "--poll_s", "1"], capture_output=True, text=True, cwd=ROOT, timeout=600
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

        page.reload()
        page.locator("#response_1").first.wait_for(timeout=60_000)
        record = shown(page, questions)
        assert record == before  # still pending: the simulated annotator ranked 4 others
        assert agent(page) == "watch/reward-g1"
        by_record = {row["prompt_id"]: row["scores"] for row in map(json.loads, (output / "scores-g1.jsonl").open())}
        records = {r["metadata"]["prompt_id"]: str(r["id"]) for r in api.iter_records(client, dataset.id)}
        ranks = dense_ranks(by_record[records[record]], higher_is_better=True)
        for option, rank in enumerate(ranks, start=1):
            page.locator(f".draggable__slot:nth-child({rank}) #response_{option}").first.wait_for(timeout=10_000)
        page.screenshot(path=str(tmp_path / "refreshed.png"))
