"""`workbench pipeline` end to end on tiny-llama against a real embedded Argilla: a failing stage stops the run and a
re-run resumes there, a kill -9 in any stage loses and duplicates nothing, complete stages are skipped, an interrupted
stage resumes, human labelers get logins and the pipeline waits for their rankings, two rounds label the last policy's
answers, methods added to a finished run join its eval, no secret leaks into files or command lines, and every number
in report.md is the one in the stage outputs. The plan alone (no model, no server): tests/test_pipeline_plan.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import ENV, STAGES, kill_9_during, pipeline, plan_for, state_of, tiny_recipe

from workbench.pipeline.run_report import fmt, lookup


# ── end to end against the embedded Argilla ──────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def argilla_home(tmp_path_factory, tiny_model_path):
    from labeling.server.home import ArgillaHome
    from labeling.server.launcher import free_local_port, stop

    home = tmp_path_factory.mktemp("pipeline-argilla")
    yield home, free_local_port()
    stop(ArgillaHome.at(home), log=lambda message: None)


class CommandLines:
    """Every process command line on the machine (what `ps` shows), sampled every 0.25 s while a block runs (a stage
    or `label` process lives for seconds)."""

    def __init__(self):
        self.seen: set[str] = set()
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                            self.seen.add(file.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:  # the process ended meanwhile
                        pass
            self._stop.wait(0.25)

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def command_lines() -> CommandLines:
    return CommandLines()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, argilla_home, command_lines):
    """A run killed with `kill -9` during each stage from generate to reward and run again each time; its PPO stage
    fails (its prompt file is missing: found only when the stage runs, unlike a bad size, which the pipeline refuses
    before any stage), then is fixed, killed during PPO, and resumed. `command_lines` sees every run."""
    home, port = argilla_home
    folder = tmp_path_factory.mktemp("pipeline")
    run_dir = folder / "run"
    missing = {"prompts": [{"path": str(folder / "missing-prompts.jsonl")}]}
    broken = tiny_recipe(folder / "broken.yaml", run_dir, home, port, **{"overrides.ppo": missing})
    recipe = tiny_recipe(folder / "fixed.yaml", run_dir, home, port)
    with command_lines:
        for stage in ("generate", "push", "label", "pull", "reward"):  # sft's own kill -9 test: test_sft_stage.py
            kill_9_during(broken, stage, run_dir)
        failed = pipeline(broken)
        kill_9_during(recipe, "ppo", run_dir)
        resumed = pipeline(recipe)
    return run_dir, recipe, failed, resumed


@pytest.mark.argilla
def test_failing_stage_stops_with_its_log_and_keeps_earlier_outputs(finished_run):
    run_dir, _, failed, _ = finished_run
    output = failed.stdout + failed.stderr
    assert failed.returncode == 1, output
    assert "stage 'ppo' failed" in output and str(run_dir / "logs" / "ppo.log") in output
    assert "missing-prompts.jsonl does not exist" in output  # the log's last lines say why
    assert "Traceback" not in failed.stdout
    assert state_of(run_dir)["stages"]["ppo"]["attempts"] == 3  # the failed attempt, the killed one, the resumed one


@pytest.mark.argilla
def test_rerun_resumes_at_the_failed_stage(finished_run):
    run_dir, _, failed, resumed = finished_run
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for name in ("sft", "generate", "push", "label", "pull", "reward"):
        assert f"{name}: complete, skipped" in resumed.stdout
    assert "ppo: running" in resumed.stdout and "eval: running" in resumed.stdout
    state = state_of(run_dir)
    assert all(state["stages"][name]["status"] == "done" for name in STAGES)
    # one W&B group for every stage, recorded in each stage recipe and in the pull command
    group = state["wandb_group"]
    for name in ("sft", "generate", "reward", "ppo", "eval"):
        assert yaml.safe_load((run_dir / "recipes" / f"{name}.yaml").read_text())["wandb_group"] == group
    assert list((run_dir / "ppo" / "wandb").glob("offline-run-*")) and list((run_dir / "wandb").glob("offline-run-*"))
    # simulated annotators ranked every record; the preference pairs came back and trained the reward model
    labels = json.loads((run_dir / "labels" / "labels.json").read_text())
    assert labels["progress"]["completed"] == labels["progress"]["total"] == 6
    assert sorted(labels["progress"]["annotators"]) == ["sim-run-1", "sim-run-2"]
    reward_manifest = json.loads((run_dir / "reward" / "adapter" / "workbench.json").read_text())
    assert any("preferences" in str(parent.get("path", "")) for parent in reward_manifest["parents"])


@pytest.mark.argilla
def test_no_secret_in_outputs_logs_wandb_files_or_command_lines(finished_run, argilla_home, command_lines):
    """The owner's password, API key and token secret and every annotator's API key: in no file the run wrote (its
    stage outputs, logs, recipes, W&B offline runs), no log of the server, no output of the pipeline, and no process
    command line seen while it ran (stages, `label` subprocesses, the server's processes)."""
    from labeling.connection import connect
    from labeling.server.home import ArgillaHome
    from labeling.users import api_key_of

    run_dir, _, failed, resumed = finished_run
    home = ArgillaHome.at(argilla_home[0])
    credentials = home.read_credentials()
    client = connect(home=str(home.root))
    annotators = [user for user in client.users if user.role == "annotator"]
    assert len(annotators) >= 2  # the run's simulated annotators
    secrets = {name: credentials[name] for name in ("password", "api_key", "auth_secret_key")}
    secrets |= {f"api key of {user.username}": api_key_of(client, user.id) for user in annotators}

    files = [path for path in [*run_dir.rglob("*"), *home.logs_dir.rglob("*")] if path.is_file()]
    assert any("wandb" in path.parts for path in files) and any(path.suffix == ".wandb" for path in files)
    assert len(command_lines.seen) > 20 and any("workbench.cli" in line for line in command_lines.seen)
    for name, secret in secrets.items():
        assert len(secret) >= 16
        for path in files:
            assert secret.encode() not in path.read_bytes(), f"{name} in {path}"
        assert not [line for line in command_lines.seen if secret in line], f"{name} in a command line"
        assert secret not in failed.stdout + failed.stderr + resumed.stdout + resumed.stderr, name


@pytest.mark.argilla
def test_report_numbers_are_the_stage_outputs(finished_run):
    run_dir = finished_run[0]
    report = (run_dir / "report.md").read_text()
    rows = re.findall(r"^\| (.+?) \| (.+?) \| `(.+?)` → `(.+?)` \|$", report, flags=re.MULTILINE)
    labels = {label for label, *_ in rows}
    for needed in (
        "SFT held-out loss, after SFT",
        "Preference pairs",
        "Reward model held-out accuracy",
        "Reward model expected calibration error",
        "PPO mean reward, last steps",
        "PPO KL to SFT, last steps",
        "Eval ppo win rate vs sft, by reward_model",
        "Eval ppo win rate vs sft, by gold_rubric",
        "Eval answer pairs, same prompt, gold scores apart",
    ):
        assert needed in labels, f"{needed!r} missing from the key figures"
    for label, value, source, key in rows:
        assert value == fmt(lookup(json.loads((run_dir / source).read_text()), key)), label
    # The agreement rate has a row whenever there is a pair to judge it on (a tiny run may have none).
    pairs = json.loads((run_dir / "eval" / "metrics.json").read_text())["reward_model_vs_gold"]["pairs"]
    assert ("Eval reward model orders them as the gold rubric" in labels) == (pairs > 0)
    ppo = json.loads((run_dir / "ppo" / "metrics.json").read_text())
    assert f"| PPO steps | {len(ppo['history'])} |" in report
    for plot in ("sft_loss", "reward_model", "ppo_reward_kl", "win_rates"):
        assert (run_dir / "plots" / f"{plot}.png").stat().st_size > 1000
        assert f"(plots/{plot}.png)" in report
    # each plot names where its curve came from: the SFT loss from SFT's own trainer state
    assert re.search(r"Loss curve from `sft/checkpoint-\d+/trainer_state.json`", report)


@pytest.mark.argilla
def test_complete_stages_are_skipped_and_an_interrupted_stage_resumes(finished_run):
    run_dir, recipe, _, _ = finished_run
    adapter = run_dir / "ppo" / "adapter" / "workbench.json"
    before = adapter.stat().st_mtime_ns
    again = pipeline(recipe, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(f"{name}: complete, skipped" in again.stdout for name in STAGES[:-1])
    assert adapter.stat().st_mtime_ns == before

    # Started with SIGINT ignored, as a background job of a non-interactive shell (CI's, often) starts it: the stage
    # must still stop at once. Before the pipeline reset SIGINT in its stages, the eval ran on through the SIGINT and
    # wrote metrics.json while the pipeline recorded it as interrupted (whenever it finished within the 30 s the
    # pipeline waits before SIGTERM).
    command = [sys.executable, "-m", "workbench.cli", "pipeline", "--config", str(recipe), "--force", "eval"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    deadline = time.monotonic() + 300
    while state_of(run_dir)["stages"]["eval"]["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    output = process.communicate(timeout=120)[0]
    assert time.monotonic() - started < 25, "the stage should stop on the SIGINT, not after the pipeline's patience"
    assert process.returncode == 130, output
    assert "interrupted during stage eval" in output
    assert state_of(run_dir)["stages"]["eval"]["status"] == "interrupted"
    assert not (run_dir / "eval" / "metrics.json").exists()

    kill_9_during(recipe, "eval", run_dir)  # the resumed eval killed in turn: the next run resumes it again
    assert not (run_dir / "eval" / "metrics.json").exists()
    resumed = pipeline(recipe, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "eval: running (resuming after an unfinished run)" in resumed.stdout
    assert "ppo: complete, skipped" in resumed.stdout
    assert (run_dir / "eval" / "metrics.json").exists()


@pytest.mark.argilla
def test_kill_9_in_every_stage_duplicates_and_loses_nothing(finished_run, argilla_home, tmp_path):
    """After a kill -9 in each stage (finished_run): every prompt pushed once, every annotator's ranking of every
    record there once, and the pulled pairs exactly what a fresh pull of that dataset gives."""
    from labeling import api
    from labeling.connection import connect
    from workbench.pipeline.plan import Planner
    from workbench.pipeline.runner import load_state
    from workbench.stages.pipeline import TRACKING_KEYS, parse

    run_dir, recipe, _, _ = finished_run
    # each stage was killed while recorded as running (kill_9_during); a stage that had written all its outputs
    # just before the kill is found complete and recorded as done by the next run, the others ran again
    assert all(record["status"] == "done" for record in state_of(run_dir)["stages"].values())
    pushed = json.loads((run_dir / "labels" / "push.json").read_text())
    client = connect(home=str(argilla_home[0]))
    records = list(api.iter_records(client, api.find_dataset(client, pushed["dataset"], pushed["workspace"]).id))
    prompts = [json.loads(line)["prompt_id"] for line in (run_dir / "generate" / "candidates.jsonl").open()]
    assert len(prompts) == len(set(prompts)) == 6 == pushed["records"]
    assert sorted(record["metadata"]["prompt_id"] for record in records) == sorted(prompts)
    usernames = {str(user.id): user.username for user in client.users}
    for record in records:
        submitted = [usernames[str(r["user_id"])] for r in record["responses"] if r["status"] == "submitted"]
        assert sorted(submitted) == ["sim-run-1", "sim-run-2"], record["metadata"]["prompt_id"]

    # the pipeline's own pull command, into another folder
    cfg, tracking_cfg, given = parse(["--config", str(recipe)])
    planner = Planner(cfg, tracking_cfg, given & TRACKING_KEYS, load_state(run_dir, None), recipe)
    command = list(planner.stage("pull").commands[0])
    command[command.index("--output") + 1] = str(tmp_path / "pull")
    done = subprocess.run([sys.executable, "-m", "workbench.cli", *command], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    pulled = (run_dir / "preferences" / "preferences.jsonl").read_text()
    assert pulled == (tmp_path / "pull" / "preferences.jsonl").read_text() and pulled.count("\n") > 0


@pytest.mark.argilla
def test_human_labelers_get_logins_and_the_pipeline_waits_for_their_rankings(finished_run, argilla_home, tmp_path):
    from labeling import api
    from labeling.connection import connect
    from labeling.push import push
    from labeling.simulate import simulate
    from workbench.pipeline import labels
    from workbench.pipeline.plan import Planner
    from workbench.pipeline.runner import load_state
    from workbench.stages.pipeline import TRACKING_KEYS, parse

    run_dir, _, _, _ = finished_run
    home, port = argilla_home
    recipe = tiny_recipe(tmp_path / "human.yaml", tmp_path / "human-run", home, port, labelers="human")
    cfg, tracking_cfg, given = parse(["--config", str(recipe)])
    planner = Planner(cfg, tracking_cfg, given & TRACKING_KEYS, load_state(Path(cfg.run_dir), None), recipe)
    stage = planner.stage("label")
    client = connect(home=str(home))
    rows = [json.loads(line) for line in (run_dir / "generate" / "candidates.jsonl").read_text().splitlines()]
    push(client, rows, stage.config["dataset"], cfg.argilla_workspace, min_submitted=planner.rankings_per_record())

    printed: list[str] = []
    waiting = threading.Thread(target=labels.human_labels, args=(planner, stage, printed.append))
    waiting.start()
    time.sleep(3)
    assert waiting.is_alive(), "the pipeline must wait for the rankings"
    logins = json.loads((tmp_path / "human-run" / "labels" / "annotators.json").read_text())
    assert stat.S_IMODE((tmp_path / "human-run" / "labels" / "annotators.json").stat().st_mode) == 0o600
    names = [row["username"] for row in logins["annotators"]]
    assert names == ["human-run-annotator-1", "human-run-annotator-2"]
    text = "\n".join(printed)
    assert client.api_url in text and all(name in text for name in names) and "annotators.json" in text
    assert not any(row["password"] in text for row in logins["annotators"])

    # a labeler signs in (the UI's login call) with a printed username and the password from the file
    import httpx

    login = {"username": names[0], "password": logins["annotators"][0]["password"]}
    assert httpx.post(f"{client.api_url}/api/v1/token", data=login, timeout=30).status_code == 201

    dataset = api.find_dataset(client, stage.config["dataset"], cfg.argilla_workspace)
    simulate(client, dataset, "sim-human-stand-in", noise=0.0)
    waiting.join(timeout=60)
    assert not waiting.is_alive()


@pytest.mark.argilla
def test_two_rounds_label_the_last_policy_s_answers_where_the_reward_model_is_least_sure(
    finished_run, argilla_home, tmp_path
):
    """`rounds: 2`, `label_prompts: 4` of 6 chosen by `selection: uncertainty`: round 1 scores its candidates with
    `selection_reward_adapter` (finished_run's), round 2 with round 1's reward model. Round 2's records are round 1's
    policy's answers to the next prompts, in the same dataset; pull counts are exact across rounds; round 2's policy
    continues round 1's, and its reward model round 1's (reward_warm_start); the eval and the report give both
    rounds."""
    from labeling import api
    from labeling.connection import connect
    from workbench.cli import main as workbench_main

    run_dir, _, _, _ = finished_run
    home, port = argilla_home
    active = tmp_path / "active"
    shutil.copytree(run_dir / "sft", active / "sft", ignore=shutil.ignore_patterns("wandb"))  # found, recorded done
    changes = {"rounds": 2, "methods": ["reinforce++"], "label_prompts": 4, "selection": "uncertainty"}
    changes.update(selection_reward_adapter=str(run_dir / "reward" / "adapter"), reward_warm_start=True)
    # No held-out split: which 4 prompts uncertainty picks moves with float noise, and 2 noisy annotators can leave
    # one prompt with unanimous pairs, which a split by whole prompts would refuse.
    changes["overrides.reward"] = {"eval_split_size": 0}
    recipe = tiny_recipe(tmp_path / "active.yaml", active, home, port, **changes)
    result = pipeline(recipe, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr

    client = connect(home=str(home))
    push = json.loads((active / "labels" / "push.json").read_text())
    dataset = api.find_dataset(client, push["dataset"], push["workspace"])
    records = list(api.iter_records(client, dataset.id))
    assert json.loads((active / "labels-r2" / "push.json").read_text())["records"] == len(records) == 8
    for round_, labels, generate in ((1, "labels", "generate"), (2, "labels-r2", "generate-r2")):
        scored = [json.loads(line) for line in (active / labels / "scores.jsonl").read_text().splitlines()]
        chosen = {row["prompt_id"] for row in sorted(scored, key=lambda row: -row["uncertainty"])[:4]}
        mine = [record for record in records if record["metadata"]["round"] == round_]
        assert {record["metadata"]["prompt_id"] for record in mine} == chosen
        candidates = {
            row["prompt_id"]: row for row in map(json.loads, (active / generate / "candidates.jsonl").open())
        }
        for record in mine:
            row = candidates[record["metadata"]["prompt_id"]]
            assert [record["fields"][f"response_{i + 1}"] for i in range(3)] == row["completions"]
    round_two = json.loads((active / "generate-r2" / "manifest.json").read_text())
    assert round_two["policy"]["adapter"] == str(active / "reinforce++" / "adapter")
    first_prompts = {json.loads(line)["prompt_id"] for line in (active / "generate" / "candidates.jsonl").open()}
    assert not first_prompts & set(candidates)  # the next 6 training prompts

    counts = [
        json.loads((active / f / "manifest.json").read_text())["counts"] for f in ("preferences", "preferences-r2")
    ]
    assert [c["records_ranked"] for c in counts] == [4, 8] and [c["submitted"] for c in counts] == [8, 16]
    again_one = tmp_path / "round-1-pulled-again"  # after round 2's push, round 1's pull still sees round 1 only
    pull_args = ["label", "pull", "--dataset", push["dataset"], "--workspace", push["workspace"], "--max_round", "1"]
    assert (
        workbench_main([*pull_args, "--output", str(again_one), "--home", str(home), "--wandb_mode", "disabled"]) == 0
    )
    assert json.loads((again_one / "manifest.json").read_text())["counts"] == counts[0]
    parents = json.loads((active / "reinforce++-r2" / "adapter" / "workbench.json").read_text())["parents"]
    assert [p["path"] for p in parents if p["role"] == "policy"] == [
        str((active / "reinforce++" / "adapter").resolve())
    ]
    assert [p["path"] for p in parents if p["role"] == "reward"] == [str((active / "reward-r2" / "adapter").resolve())]
    warm = json.loads((active / "reward-r2" / "adapter" / "workbench.json").read_text())["parents"]
    assert [p["path"] for p in warm if p.get("role") == "init"] == [str((active / "reward" / "adapter").resolve())]
    metrics = json.loads((active / "eval" / "metrics.json").read_text())
    assert {"reinforce++", "reinforce++-r2"} <= set(metrics["win_rates"])
    assert set(metrics["reward_models_vs_gold"]) == {"reward", "reward-r2"}
    assert metrics["reward_models_vs_gold"]["reward-r2"] == metrics["reward_model_vs_gold"]
    report = (active / "report.md").read_text()
    assert "| Round 2: Argilla records ranked | 8 |" in report and "REINFORCE++, round 2" in report
    again = pipeline(recipe, timeout=300)
    assert again.returncode == 0 and again.stdout.count("complete, skipped") == len(plan_for(recipe).stages) - 1


def test_methods_added_to_a_finished_run_train_on_its_labels_and_join_the_eval(finished_run):
    """Last in this file: it adds stages to finished_run. RLOO, RAFT and DPO on the same labels, no earlier stage
    again."""
    run_dir, recipe, _, _ = finished_run
    overrides = ["--dpo_max_steps", "2"]
    added = pipeline(recipe, "--methods", "ppo", "rloo", "raft", "dpo", *overrides, timeout=600)
    assert added.returncode == 0, added.stdout + added.stderr
    for name in ("sft", "generate", "push", "label", "pull", "reward", "ppo"):
        assert f"{name}: complete, skipped" in added.stdout
    assert all(f"{name}: running" in added.stdout for name in ("rloo", "raft", "dpo", "eval"))
    raft = json.loads((run_dir / "raft" / "adapter" / "workbench.json").read_text())
    assert [p["path"] for p in raft["parents"]] == [
        str((run_dir / name / "adapter").resolve()) for name in ("sft", "reward")
    ]
    assert len((run_dir / "raft" / "samples.jsonl").read_text().splitlines()) == 4
    assert yaml.safe_load((run_dir / "recipes" / "rloo.yaml").read_text())["advantage_estimator"] == "rloo"
    assert (run_dir / "rloo" / "adapter" / "workbench.json").exists()
    assert not (run_dir / "rloo" / "value_adapter").exists()  # critic-free
    dpo = json.loads((run_dir / "dpo" / "adapter" / "workbench.json").read_text())
    assert dpo["stage"] == "dpo" and dpo["parents"][0]["path"] == str((run_dir / "sft" / "adapter").resolve())
    assert dpo["parents"][1]["path"] == str(run_dir / "preferences" / "preferences.jsonl")  # the labelers' pairs
    assert set(json.loads((run_dir / "eval" / "metrics.json").read_text())["win_rates"]) == {
        "base",
        "ppo",
        "rloo",
        "raft",
        "dpo",
    }  # each against sft
    report = (run_dir / "report.md").read_text()
    rows = re.findall(r"^\| (.+?) \| (.+?) \| `(.+?)` → `(.+?)` \|$", report, flags=re.MULTILINE)
    labels = {label for label, *_ in rows}
    assert {"RLOO KL to SFT, last steps", "DPO held-out preference accuracy (implicit reward)"} <= labels
    assert {"RAFT mean reward, kept answers", "RAFT mean reward, all answers"} <= labels
    assert "Eval dpo win rate vs sft, by gold_rubric" in labels
    for label, value, source, key in rows:
        assert value == fmt(lookup(json.loads((run_dir / source).read_text()), key)), label
    assert "| rloo | done |" in report and "(plots/rloo_reward_kl.png)" in report
    state = state_of(run_dir)["stages"]  # each stage's peak resident memory, from wait4's rusage
    assert all(state[name]["peak_rss_mb"] > 100 for name in ("rloo", "raft", "dpo"))
