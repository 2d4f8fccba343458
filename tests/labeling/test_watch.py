"""`workbench label watch` on a real embedded Argilla of its own: retrains every M rankings, refreshes the pending
records' suggestions, wakes on the server's webhooks, and survives kill -9 of itself and restarts of the server
without losing or double-counting a ranking.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from labeling import api, settings
from labeling.selection import selection_metadata
from labeling.server.home import ArgillaHome
from labeling.server.launcher import serve, stop
from labeling.simulate import simulate
from labeling.webhooks import signature, verify

pytestmark = [pytest.mark.argilla]

ROOT = Path(__file__).resolve().parents[2]
RECIPE = """\
# workbench reward --config (each generation's datasets and output_dir are set by label watch)
model_name_or_path: tiny-llama
dtype: float32
bf16: false
max_steps: 4
per_device_train_batch_size: 4
learning_rate: 1.0e-3
max_length: 128
save_steps: 1
logging_steps: 1
gradient_checkpointing: false
dataloader_num_workers: 0
wandb_mode: disabled
output_dir: unused
"""
TOPICS = ["tea", "rain", "maps", "bees", "clocks", "salt", "kites", "moss", "ink", "owls", "bread", "tides"]
TOPICS += ["glass", "wool", "caves", "frogs", "paper", "ice", "wind", "bells"]  # 20 records: 16 get ranked


def candidates(path: Path) -> Path:
    rows = [
        {
            "prompt_id": f"p{i}",
            "prompt": [{"role": "user", "content": f"Tell me one fact about {topic}."}],
            "completions": [
                f"{topic.capitalize()} are interesting, and here is a clear fact about {topic} with a reason.",
                "idk",
                f"A short note on {topic}.",
            ],
        }
        for i, topic in enumerate(TOPICS)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def wait_for(condition, what: str, timeout: float = 420.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def state(output: Path) -> dict:
    try:
        return json.loads((output / "watch.json").read_text())
    except (OSError, ValueError):
        return {"generations": []}


def done(output: Path, n: int) -> bool:
    return sum(g["status"] == "done" for g in state(output)["generations"]) >= n


def test_signature_is_standard_webhooks():
    """The Standard Webhooks test vector (standardwebhooks' own tests): secret, id, timestamp, body -> signature."""
    secret = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body) == expected
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    assert verify(secret, {**headers, "webhook-signature": f"v1,bad {expected}"}, body, now=1614265330)
    assert not verify(secret, {**headers, "webhook-signature": expected}, body + b" ", now=1614265330)
    assert not verify(secret, {**headers, "webhook-signature": expected}, body, now=1614265330 + 301)  # stale


def test_watch_retrains_every_m_rankings_and_survives_kills_and_server_restarts(
    start_argilla, tmp_path, tiny_model_path
):
    server = start_argilla(tmp_path / "argilla")
    home, port = ArgillaHome.at(server.home), int(server.api_url.rsplit(":", 1)[1])
    env = {**os.environ, "ARGILLA_API_URL": server.api_url, "ARGILLA_API_KEY": server.api_key, "OMP_NUM_THREADS": "1"}
    suffix = uuid.uuid4().hex[:6]
    workspace, name = f"watch-{suffix}", f"watch-{suffix}"
    push = [
        sys.executable,
        "-m",
        "workbench.cli",
        "label",
        "push",
        "--candidates",
        str(candidates(tmp_path / "c.jsonl")),
    ]
    subprocess.run([*push, "--dataset", name, "--workspace", workspace], env=env, check=True, cwd=ROOT, timeout=300)
    client = server.client()
    dataset = api.find_dataset(client, name, workspace)
    recipe, output = tmp_path / "reward.yaml", tmp_path / "watch"
    recipe.write_text(RECIPE)

    def rank(n: int, annotator: str) -> None:
        assert simulate(client, dataset, annotator, limit=n) == n

    def start_watcher(poll_s: float) -> subprocess.Popen:
        command = [
            sys.executable,
            "-m",
            "workbench.cli",
            "label",
            "watch",
            "--dataset",
            name,
            "--workspace",
            workspace,
        ]
        command += ["--reward_recipe", str(recipe), "--output", str(output), "--every", "4", "--poll_s", str(poll_s)]
        command += ["--max_generations", "4", "--warm_start"]
        log = (tmp_path / "watcher.log").open("a")
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def server_ids() -> set[str]:
        return {
            str(r["id"])
            for record in api.iter_records(client, dataset.id)
            for r in record.get("responses") or []
            if r["status"] == "submitted"
        }

    watcher = None
    try:
        # generation 1: the first look finds 4 rankings. Polling every 600 s from here: only a webhook wakes it early.
        rank(4, "ann-a")
        watcher = start_watcher(poll_s=600)
        wait_for(lambda: done(output, 1), "generation 1")
        first = state(output)["generations"][0]
        assert len(first["response_ids"]) == 4 and first["pairs"] > 0
        records = list(api.iter_records(client, dataset.id))
        pending = [r for r in records if r["status"] == "pending"]
        assert len(pending) == 16 and first["refreshed"] == 16
        scores = {row["prompt_id"]: row for row in map(json.loads, (output / "scores-g1.jsonl").open())}
        for record in pending:  # the refreshed suggestion is generation 1's ranking, its scores as probabilities
            suggestion = api.get_json(client, f"/api/v1/records/{record['id']}/suggestions")["items"][0]
            row = scores[str(record["id"])]
            assert suggestion["agent"] == "watch/reward-g1"
            assert suggestion["value"] == settings.ranking_suggestion(row["scores"], "", "")["value"]
            candidate = {"completions": [record["fields"][settings.response_name(i)] for i in range(3)]}
            metadata = selection_metadata(candidate, row.get("member_scores") or [row["scores"]])
            assert record["metadata"]["uncertainty"] == metadata["uncertainty"]
            assert record["metadata"]["prompt_id"].startswith("p")  # the push's metadata kept
        for record in records:
            if record["status"] == "completed":  # ranked before generation 1: never given a suggestion
                assert api.get_json(client, f"/api/v1/records/{record['id']}/suggestions")["items"] == []

        # generation 2: woken by the webhook deliveries (the next poll is 10 minutes away)
        started = time.monotonic()
        rank(4, "ann-b")
        wait_for(lambda: done(output, 2), "generation 2 after a webhook", timeout=300)
        assert time.monotonic() - started < 300
        suggestion = api.get_json(client, f"/api/v1/records/{pending[-1]['id']}/suggestions")["items"][0]
        assert suggestion["agent"] == "watch/reward-g2"

        # generation 3: kill -9 in the middle of its training (after its first checkpoint); 2 rankings arrive while
        # it is dead, then the server stops and starts again; a new watcher resumes generation 3's training from that
        # checkpoint, on the same snapshot
        rank(4, "ann-c")
        reward_3 = output / "reward-g3"
        checkpoint = reward_3 / "checkpoint-1" / "trainer_state.json"
        wait_for(checkpoint.exists, "reward-g3's first checkpoint", every=0.05)
        watcher.send_signal(signal.SIGKILL)
        watcher.wait(timeout=30)
        assert not (reward_3 / "adapter" / "workbench.json").exists()  # killed mid-training
        assert state(output)["generations"][2]["status"] == "labeled"
        rank(2, "ann-d")
        assert stop(home, log=lambda line: None)
        serve(home, port=port, log=lambda line: None)
        watcher = start_watcher(poll_s=5)
        wait_for(lambda: done(output, 3), "generation 3 finished after the restart")
        # the server stops under the running watcher for longer than a request's retries (15 s): it says so, waits
        # and carries on once the server is back
        assert stop(home, log=lambda line: None)
        wait_for(lambda: "Argilla unreachable" in (tmp_path / "watcher.log").read_text(), "the watcher to notice", 60)
        assert watcher.poll() is None, (tmp_path / "watcher.log").read_text()[-2000:]
        serve(home, port=port, log=lambda line: None)
        rank(2, "ann-d")
        assert watcher.wait(timeout=420) == 0, (tmp_path / "watcher.log").read_text()[-2000:]

        generations = state(output)["generations"]
        counted = [rid for generation in generations for rid in generation["response_ids"]]
        assert [len(g["response_ids"]) for g in generations] == [4, 4, 4, 4]
        assert [g["rankings"] for g in generations] == [4, 8, 12, 16]
        assert len(counted) == len(set(counted)) == 16 and set(counted) == server_ids()  # none lost, none twice
        log = (tmp_path / "watcher.log").read_text()
        assert "Argilla unreachable" in log and "finishing generation 3" in log
        assert f"--config {output / 'recipes' / 'reward-g3.yaml'} --resume" in (output / "watch.log").read_text()
        for g in range(1, 5):  # --warm_start: each generation after the first continues the last one's model
            recipe_g = yaml.safe_load((output / "recipes" / f"reward-g{g}.yaml").read_text())
            previous = str((output / f"reward-g{g - 1}" / "adapter").resolve())
            assert recipe_g.get("init_adapter") == (previous if g > 1 else None)
            parents = json.loads((output / f"reward-g{g}" / "adapter" / "workbench.json").read_text())["parents"]
            assert [p["path"] for p in parents if p.get("role") == "init"] == ([previous] if g > 1 else [])
        hooks = api.get_json(client, "/api/v1/webhooks")["items"]  # the killed watcher's webhook was removed too
        assert not [hook for hook in hooks if hook["description"].startswith("workbench label watch")]
    finally:
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
        stop(home, log=lambda line: None)
