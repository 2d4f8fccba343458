"""`workbench pipeline` end to end on tiny-llama against a real embedded Argilla: a failing stage stops the run and a
re-run resumes there, a kill -9 in any stage loses and duplicates nothing, complete stages are skipped, an interrupted
stage resumes, one pipeline per run_dir, human labelers get logins and the pipeline waits for their rankings, no
secret leaks into files or command lines, and every number in report.md is the one in the stage outputs."""

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

from workbench.errors import UserError
from workbench.pipeline.pipeline_recipe import stages_of
from workbench.pipeline.run_report import fmt, lookup
from workbench.stages.pipeline import forced_stages

STAGES = stages_of(["ppo"])  # the stages of a run with the default methods

OVERRIDES = {
    "sft": {
        "per_device_train_batch_size": 2,
        "max_length": 64,
        "logging_steps": 1,
        "dtype": "float32",
        "eval_datasets": [{"path": "bundled:instructions", "where": {"split": "test"}, "max_samples": 4}],
    },
    "generate": {"max_new_tokens": 8, "min_new_tokens": 4, "batch_size": 8},
    "reward": {"per_device_train_batch_size": 4, "max_length": 96, "logging_steps": 1, "dtype": "float32"},
    # one critic warm-up step: the default recipe's 2 would leave none of the 2 PPO steps to the policy
    "ppo": {"batch_size": 4, "mini_batch_size": 2, "max_new_tokens": 6, "ppo_epochs": 1, "dtype": "float32"}
    | {"critic_warmup_steps": 1},
    "dpo": {"per_device_train_batch_size": 2, "max_length": 96, "logging_steps": 1, "dtype": "float32"}
    | {"eval_split_size": 0.3},
    "raft": {"max_prompts": 4, "num_samples": 2, "max_new_tokens": 6, "sampling_batch_size": 8, "max_steps": 2}
    | {"per_device_train_batch_size": 2, "max_length": 96, "logging_steps": 1, "dtype": "float32"},
    "eval": {"max_new_tokens": 8, "batch_size": 4},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}


def tiny_recipe(path: Path, run_dir: Path, argilla_home: Path, port: int, **changes) -> Path:
    recipe = {
        "run_dir": str(run_dir),
        "model_name_or_path": "tiny-llama",
        "sft_max_steps": 4,
        "num_prompts": 6,
        "num_candidates": 3,
        "annotators": 2,
        "annotator_noise": 0.3,
        "reward_max_steps": 4,
        "ppo_steps": 2,
        "eval_prompts": 4,
        "argilla_home": str(argilla_home),
        "argilla_port": port,
        "wandb_mode": "offline",
        "overrides": json.loads(json.dumps(OVERRIDES)),
    }
    for key, value in changes.items():
        if key.startswith("overrides."):
            recipe["overrides"][key.split(".")[1]].update(value)
        else:
            recipe[key] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


def pipeline(recipe: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench.cli", "pipeline", "--config", str(recipe), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=timeout)


def plan_for(recipe: Path, *argv: str):
    """The pipeline's Planner for `recipe` (and command-line flags), as `workbench pipeline` would build it."""
    from workbench.pipeline.plan import Planner
    from workbench.pipeline.runner import load_state
    from workbench.stages.pipeline import TRACKING_KEYS, parse

    cfg, tracking_cfg, given = parse(["--config", str(recipe), *argv])
    return Planner(cfg, tracking_cfg, given & TRACKING_KEYS, load_state(Path(cfg.run_dir), None), recipe)


def state_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "pipeline.json").read_text())


def processes_of(run_dir: Path) -> list[str]:
    """Command lines of live processes working on `run_dir` (a stage names its recipe or output under it)."""
    found = []
    for entry in os.scandir("/proc"):
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                line = file.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if entry.name.isdigit() and str(run_dir) in line and int(entry.name) != os.getpid():
            found.append(line)
    return found


def kill_9_during(recipe: Path, stage: str, run_dir: Path) -> None:
    """Start the pipeline and `kill -9` it once `stage` is at work (its log shows the stage's command and output
    after it); the stage's own process dies with it. Leaves the stage recorded as running, not done."""
    log = run_dir / "logs" / f"{stage}.log"
    offset = log.stat().st_size if log.exists() else 0
    command = [sys.executable, "-m", "workbench.cli", "pipeline", "--config", str(recipe)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.monotonic() + 600
    while True:
        assert process.poll() is None, f"the pipeline ended before {stage} got to work"
        assert time.monotonic() < deadline, f"{stage} never got to work"
        new = log.read_bytes()[offset:].decode(errors="replace") if log.exists() else ""  # offset counts bytes
        if "$ workbench" in new and len(new.split("$ workbench", 1)[1].strip().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state_of(run_dir)["stages"][stage]["status"] == "running"
    deadline = time.monotonic() + 15
    while processes_of(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not processes_of(run_dir), "a stage outlived its killed pipeline"


# ── fast checks: no model, no server ────────────────────────────────────────────────────────────────────────────────
def test_force_means_that_stage_and_every_later_one():
    from workbench.stages.pipeline import _force_all, forced_stages

    assert _force_all(["--force"]) == ["--force", "all"]
    assert _force_all(["--force", "--config", "r.yaml"]) == ["--force", "all", "--config", "r.yaml"]
    assert _force_all(["--force", "ppo"]) == ["--force", "ppo"]
    assert forced_stages(["ppo"], STAGES) == {"ppo", "eval", "report"}
    assert forced_stages(["all"], STAGES) == set(STAGES)
    assert forced_stages([], STAGES) == set()
    with pytest.raises(UserError, match="--force rewrad: no such stage"):
        forced_stages(["rewrad"], STAGES)
    methods = stages_of(["dpo", "rloo"])  # METHODS' order, whatever the recipe's
    assert methods[6:] == ("rloo", "dpo", "eval", "report")
    assert forced_stages(["dpo"], methods) == {"dpo", "eval", "report"}
    with pytest.raises(UserError, match="--force ppo: no such stage; stages: .*rloo, dpo"):
        forced_stages(["ppo"], methods)


def test_methods_each_get_a_stage_on_the_same_labels_and_a_row_in_the_eval(tmp_path):
    from workbench.stages.pipeline import validate

    changes = {"methods": ["ppo", "rloo", "grpo", "dpo"], "dpo_max_steps": 3}
    plan = plan_for(tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **changes))
    assert plan.stages == stages_of(["ppo", "rloo", "grpo", "dpo"])
    ppo, rloo, grpo = (plan.stage(name).recipe for name in ("ppo", "rloo", "grpo"))
    # the critic-free methods: the ppo recipe and overrides.ppo, their estimator, k responses to batch_size / k
    # prompts (4 sequences a step, as PPO's), and none of the critic's keys (overrides.ppo's warm-up step is reset)
    assert (ppo["batch_size"], ppo["critic_warmup_steps"], ppo.get("advantage_estimator", "gae")) == (4, 1, "gae")
    assert (rloo["advantage_estimator"], rloo["rollouts_per_prompt"], rloo["batch_size"]) == ("rloo", 2, 2)
    assert (grpo["advantage_estimator"], grpo["rollouts_per_prompt"], grpo["batch_size"], grpo["kl_loss"]) == (
        "grpo",
        4,
        1,
        True,
    )
    assert rloo["critic_warmup_steps"] == 0 and rloo["max_new_tokens"] == ppo["max_new_tokens"] == 6
    assert rloo["sft_adapter"] == ppo["sft_adapter"] and rloo["output_dir"] == str(tmp_path / "run" / "rloo")
    assert plan.stage("rloo").commands[0][0] == "ppo"
    assert plan.header("rloo").startswith(f"# workbench ppo --config {tmp_path / 'run' / 'recipes' / 'rloo.yaml'}")
    dpo = plan.stage("dpo").recipe
    assert dpo["datasets"] == [{"path": str(tmp_path / "run" / "preferences" / "preferences.jsonl")}]
    assert dpo["sft_adapter"] == ppo["sft_adapter"] and dpo["max_steps"] == 3
    policies = [policy["name"] for policy in plan.stage("eval").recipe["policies"]]
    assert policies == ["base", "sft", "ppo", "rloo", "grpo", "dpo"]
    validate(plan)  # every method's recipe parses with its stage's parser


def test_raft_trains_on_the_runs_adapters_and_continues_its_last_round_policy(tmp_path):
    """methods: [raft] is `workbench raft` on the run's SFT and reward adapters (its own recipe's settings under the
    run's overrides, not ppo_steps); with rounds its round-2 stage starts from its round-1 policy and samples are
    judged by round 2's reward model."""
    from workbench.stages.pipeline import validate

    run, raft_recipe = tmp_path / "run", Path(__file__).resolve().parents[1] / "recipes" / "smollm2-135m" / "raft.yaml"
    changes = {"methods": ["raft", "reinforce++"], "rounds": 2, "raft_recipe": str(raft_recipe)}
    plan = plan_for(tiny_recipe(tmp_path / "p.yaml", run, tmp_path / "argilla", 6999, **changes))
    assert plan.stages == (
        *("sft", "generate", "push", "label", "pull", "reward", "reinforce++", "raft"),
        *("generate-r2", "push-r2", "label-r2", "pull-r2", "reward-r2", "reinforce++-r2", "raft-r2"),
        *("eval", "report"),
    )
    first, second = plan.stage("raft").recipe, plan.stage("raft-r2").recipe
    assert (first["sft_adapter"], first["reward_adapter"]) == (
        str(run / "sft" / "adapter"),
        str(run / "reward" / "adapter"),
    )
    assert "policy_adapter" not in first and "total_steps" not in first
    own, tiny = yaml.safe_load(raft_recipe.read_text()), OVERRIDES["raft"]
    assert (first["temperature"], first["learning_rate"]) == (own["temperature"], own["learning_rate"])
    assert (first["num_samples"], first["max_prompts"]) == (tiny["num_samples"], tiny["max_prompts"])
    assert first["output_dir"] == str(run / "raft")
    assert second["policy_adapter"] == str(run / "raft" / "adapter")
    assert (second["sft_adapter"], second["reward_adapter"]) == (
        first["sft_adapter"],
        str(run / "reward-r2" / "adapter"),
    )
    assert plan.stage("raft").commands[0][:2] == ["raft", "--config"]
    assert plan.header("raft").startswith(f"# workbench raft --config {run / 'recipes' / 'raft.yaml'}")
    names = [policy["name"] for policy in plan.stage("eval").recipe["policies"]]
    assert names == ["base", "sft", "reinforce++", "raft", "reinforce++-r2", "raft-r2"]
    validate(plan)  # every stage's recipe parses with its stage's parser


def test_the_quickstart_trains_ppo_with_its_critic_on_the_reference_features(tmp_path):
    """recipes/quickstart.yaml's method (bench/alignment.py ppo on seeds 5-10, then seed 11 out of sample): the ppo
    recipe with its critic a head on the reference pass's hidden states, 16 steps of 16 rollouts (the 256 rollouts
    of 32 steps of 8: seeds 17-21 chose those, seeds 28-29 the larger batch), both empty-answer
    guards on, the plain reward score (the pessimistic one lost at seeds 18 and 22), its reward model trained with the
    length term (seeds 17-19) and one off-topic pair per prompt (seeds 18-24); a critic-free method on the same recipe
    resets every critic key, the critic's choice too."""
    from workbench.stages.pipeline import validate

    quickstart = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    plan = plan_for(quickstart, "--run_dir", str(tmp_path))
    assert plan.stages == stages_of(["ppo"])
    rl = plan.stage("ppo").recipe
    assert (rl.get("advantage_estimator", "gae"), rl["value_model"], rl["batch_size"], rl["total_steps"]) == (
        "gae",
        "ref_features",
        16,
        16,
    )
    assert (rl["empty_response_penalty"], rl["empty_response_loss_coef"]) == (3.0, 10.0)
    reward = plan.stage("reward").recipe
    assert reward["max_steps"] == 40
    assert reward["length_term"] is True and reward["off_topic_pairs"] is True
    assert rl["reward_uncertainty_coef"] == 0.0 and reward["uncertainty_prior_precision"] == 0.0
    assert plan.stage("ppo").commands[0][0] == "ppo"
    assert [policy["name"] for policy in plan.stage("eval").recipe["policies"]] == ["sft", "ppo"]
    validate(plan)
    critic_free = plan_for(quickstart, "--run_dir", str(tmp_path / "rpp"), "--methods", "reinforce++")
    rl = critic_free.stage("reinforce++").recipe
    assert (rl["advantage_estimator"], rl.get("rollouts_per_prompt", 1), rl["batch_size"]) == ("reinforce++", 1, 16)
    assert rl["total_steps"] == 16
    assert rl["critic_warmup_steps"] == 0 and rl["value_learning_rate"] is None and rl["value_max_grad_norm"] is None
    assert rl["value_model"] == "adapter"  # the ppo recipe's critic choice is reset with the other critic keys
    validate(critic_free)


def test_the_long_recipe_is_the_quickstart_with_a_second_round(tmp_path):
    """recipes/long.yaml runs the quickstart's loop at the same seed with its SFT, candidates, labels, reward model
    and RL settings, and a second round (round 2 generates from round 1's PPO policy, reward-r2 learns from both
    rounds' labels, ppo-r2 continues round 1's policy); the eval compares SFT with both rounds' policies."""
    from workbench.stages.pipeline import validate

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    long = plan_for(recipes / "long.yaml", "--run_dir", str(tmp_path / "long"))
    quick = plan_for(recipes / "quickstart.yaml", "--run_dir", str(tmp_path / "quick"))
    assert long.stages == stages_of(["ppo"], rounds=2)

    def recipe(plan, stage: str) -> dict:  # the stage's recipe, its run's own folders and W&B names left out
        run, items = str(plan.cfg.run_dir), plan.stage(stage).recipe.items()
        return {key: value for key, value in items if run not in str(value) and not key.startswith("wandb_")}

    for stage in ("sft", "generate", "reward", "ppo", "eval"):
        assert recipe(long, stage) == recipe(quick, stage), stage
    assert recipe(long, "ppo-r2") == recipe(long, "ppo") and recipe(long, "reward-r2") == recipe(long, "reward")
    assert long.stage("generate-r2").recipe["adapter"] == str(tmp_path / "long" / "ppo" / "adapter")
    assert long.stage("ppo-r2").recipe["policy_adapter"] == str(tmp_path / "long" / "ppo" / "adapter")
    assert long.stage("reward-r2").recipe["datasets"] == [
        {"path": str(tmp_path / "long" / "preferences-r2" / "preferences.jsonl")}
    ]
    assert [policy["name"] for policy in long.stage("eval").recipe["policies"]] == ["sft", "ppo", "ppo-r2"]
    validate(long)


def test_methods_must_be_known_and_each_given_once(tmp_path):
    expected = "methods: expected some of ppo, rloo, grpo, reinforce++, raft, dpo, each once; found "
    for methods, found in ((["ppo", "ppo"], "a repeated one"), ([], "an empty list"), (["dpo2"], "unknown 'dpo2'")):
        recipe = tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, methods=methods)
        with pytest.raises(UserError, match=re.escape(expected + found)):
            plan_for(recipe)


def test_bad_override_key_fails_before_any_stage_runs(tmp_path):
    from workbench.stages import pipeline as stage

    recipe = tiny_recipe(
        tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **{"overrides.reward": {"learning_rat": 1}}
    )
    with pytest.raises(UserError) as error:
        stage.main(["--config", str(recipe)])
    message = str(error.value)
    assert "stage reward" in message and "'learning_rat'" in message and "learning_rate" in message
    assert "recipes/reward.yaml:" in message and f"overrides.reward in {recipe}" in message
    assert not (tmp_path / "run" / "sft").exists()


def test_a_ppo_recipe_that_cannot_work_fails_before_any_stage_runs(tmp_path):
    """ppo_steps 2 with the default recipe's 2 critic warm-up steps: the policy would never train."""
    from workbench.stages import pipeline as stage

    recipe = tiny_recipe(
        tmp_path / "p.yaml",
        tmp_path / "run",
        tmp_path / "argilla",
        6999,
        **{"overrides.ppo": {"critic_warmup_steps": 2}},
    )
    with pytest.raises(UserError) as error:
        stage.main(["--config", str(recipe)])
    assert "stage ppo: critic_warmup_steps (2) must be below total_steps (2)" in str(error.value)
    assert not (tmp_path / "run" / "sft").exists()


def test_wired_keys_and_unknown_stages_are_refused(tmp_path):
    from workbench.stages import pipeline as stage

    for keys, expected in (
        ({"overrides": {"ppo": {"sft_adapter": "elsewhere"}}}, "overrides.ppo.sft_adapter: the pipeline sets this"),
        ({"overrides": {"rl": {"x": 1}}}, "overrides.rl: no such stage"),
        ({"min_agreement": 2}, "min_agreement must be between 0 and 1; got 2"),
    ):
        recipe = tmp_path / "p.yaml"
        recipe.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), **keys}))
        with pytest.raises(UserError, match=re.escape(expected)):
            stage.main(["--config", str(recipe)])


def test_one_seed_reaches_every_stage_and_the_simulated_annotators(tmp_path):
    """`seed:` (or `--seed`) becomes every stage recipe's seed and each annotator's noise seed; overrides still win."""

    def planner(*argv, **changes):
        recipe = tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **changes)
        return plan_for(recipe, *argv)

    seeded = planner("--seed", "7", **{"overrides.ppo": {"seed": 3}})
    assert {
        name: seeded.stage(name).recipe["seed"] for name in ("sft", "generate", "reward", "eval")
    } == dict.fromkeys(("sft", "generate", "reward", "eval"), 7)
    assert seeded.stage("ppo").recipe["seed"] == 3
    label = seeded.stage("label")
    assert [command[command.index("--seed") + 1] for command in label.commands] == ["7001", "7002"]
    default = planner()
    assert default.stage("sft").recipe["seed"] == 0 and default.stage("sft").sha() != seeded.stage("sft").sha()


def test_selection_reaches_the_push_and_bad_settings_fail_before_any_stage(tmp_path):
    """`label_prompts` and `selection` become `label push --select/--strategy/--seed`; a reward adapter for
    uncertainty scores the candidates first. A run without them keeps the push stage's configuration hash."""
    from workbench.modeling.adapters import AdapterManifest

    adapter = tmp_path / "rm" / "adapter"  # a reward adapter's folder as `workbench reward` leaves it
    AdapterManifest("reward", {"name_or_path": "tiny-llama"}, "lora", task_type="SEQ_CLS").write(adapter)
    (adapter / "adapter_config.json").write_text("{}")

    def planner(*argv, **changes):
        recipe = tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **changes)
        return plan_for(recipe, *argv)

    plain = planner().stage("push")
    assert len(plain.commands) == 1 and "--select" not in plain.commands[0]
    assert set(plain.config) == {"dataset", "workspace", "min_submitted"}
    active = planner("--seed", "5", label_prompts=4, selection="uncertainty", selection_reward_adapter=str(adapter))
    score, push = active.stage("push").commands
    assert score[:2] == ["reward", "score"] and score[score.index("--adapter") + 1] == str(adapter)
    assert push[push.index("--suggestions") + 1] == score[score.index("--output") + 1]
    assert [push[push.index(flag) + 1] for flag in ("--select", "--strategy", "--seed")] == ["4", "uncertainty", "5"]
    assert active.stage("push").sha() != plain.sha()
    refused = {
        "selection must be one of random, uncertainty, diversity; got 'best'": dict(label_prompts=2, selection="best"),
        "selection diversity chooses label_prompts": dict(selection="diversity"),
        "selection uncertainty needs selection_reward_adapter": dict(label_prompts=2, selection="uncertainty"),
        "selection_reward_adapter /nowhere: expected workbench.json, found no such folder": dict(
            selection_reward_adapter="/nowhere"
        ),
        "label_prompts 7 is more than the num_prompts 6": dict(label_prompts=7),
        "overrides.generate.max_prompts: with rounds": {"rounds": 2, "overrides.generate": {"max_prompts": 3}},
    }
    for message, changes in refused.items():
        with pytest.raises(UserError, match=re.escape(message)):
            planner(**changes)


def test_rounds_repeat_the_labeling_stages_from_the_last_policy(tmp_path):
    """`rounds: 2` adds generate-r2 ... reinforce++-r2 before the one eval. Round 2's candidates come from round 1's
    policy for the next num_prompts prompts and go to the same dataset as round 2, scored by round 1's reward model
    (uncertainty selection, suggestions); round 2's reward model learns from every round's labels; its policy
    continues round 1's, with SFT as the reference; the eval compares both rounds and measures both reward models."""
    run = tmp_path / "run"

    def planner(**changes):
        return plan_for(tiny_recipe(tmp_path / "p.yaml", run, tmp_path / "argilla", 6999, **changes))

    plan = planner(rounds=2, methods=["reinforce++"], label_prompts=4, selection="uncertainty")
    assert plan.stages == (
        *("sft", "generate", "push", "label", "pull", "reward", "reinforce++"),
        *("generate-r2", "push-r2", "label-r2", "pull-r2", "reward-r2", "reinforce++-r2"),
        *("eval", "report"),
    )
    generate = plan.stage("generate-r2").recipe
    assert (generate["adapter"], generate["skip_prompts"], generate["max_prompts"]) == (
        str(run / "reinforce++" / "adapter"),
        6,
        6,
    )
    (first,) = plan.stage("push").commands  # no reward model yet: round 1's uncertainty starts at random
    assert first[first.index("--strategy") + 1] == "random" and "--round" not in first
    score, push = plan.stage("push-r2").commands
    assert score[score.index("--adapter") + 1] == str(run / "reward" / "adapter")
    assert [push[push.index(flag) + 1] for flag in ("--round", "--strategy", "--candidates")] == [
        "2",
        "uncertainty",
        str(run / "generate-r2" / "candidates.jsonl"),
    ]
    assert push[push.index("--dataset") + 1] == first[first.index("--dataset") + 1]  # one queue across rounds
    assert plan.stage("label-r2").outputs == [run / "labels-r2" / "labels.json"]
    assert plan.stage("pull-r2").folder == run / "preferences-r2"
    reward = plan.stage("reward-r2").recipe
    assert reward["datasets"] == [{"path": str(run / "preferences-r2" / "preferences.jsonl")}]
    policy = plan.stage("reinforce++-r2").recipe
    assert policy["advantage_estimator"] == "reinforce++" and policy["output_dir"] == str(run / "reinforce++-r2")
    assert (policy["sft_adapter"], policy["reward_adapter"], policy["policy_adapter"]) == (
        str(run / "sft" / "adapter"),
        str(run / "reward-r2" / "adapter"),
        str(run / "reinforce++" / "adapter"),
    )
    evaluation = plan.stage("eval").recipe
    assert [p["name"] for p in evaluation["policies"]] == ["base", "sft", "reinforce++", "reinforce++-r2"]
    assert evaluation["reward_adapter"] == str(run / "reward-r2" / "adapter")
    assert evaluation["agreement_reward_adapters"] == [{"name": "reward", "adapter": str(run / "reward" / "adapter")}]
    assert forced_stages(["push-r2"], plan.stages) == {"push-r2", *plan.stages[9:]}
    assert "agreement_reward_adapters" not in planner().stage("eval").recipe  # one round: the eval as before
    assert "init_adapter" not in reward  # a fresh reward model each round unless reward_warm_start
    warm = planner(rounds=2, methods=["reinforce++"], reward_warm_start=True)
    assert "init_adapter" not in warm.stage("reward").recipe
    assert warm.stage("reward-r2").recipe["init_adapter"] == str(run / "reward" / "adapter")
    sft_first = planner(
        rounds=2, methods=["reinforce++"], reward_warm_start=True, **{"overrides.reward": {"init_from_sft": True}}
    )
    assert (
        sft_first.stage("reward").recipe["init_from_sft"] and not sft_first.stage("reward-r2").recipe["init_from_sft"]
    )
    assert warm.stage("reward-r2").sha() != planner(rounds=2, methods=["reinforce++"]).stage("reward-r2").sha()
    refused = {
        "overrides.reward.init_adapter: reward_warm_start sets it": {
            "reward_warm_start": True,
            "overrides.reward": {"init_adapter": str(run / "other")},
        },
        "rounds must be at least 1; got 0": dict(rounds=0),
        "dpo cannot continue across rounds": dict(rounds=2, methods=["ppo", "dpo"]),
        "rounds 2 needs num_prompts": dict(rounds=2, num_prompts=None),
    }
    for message, changes in refused.items():
        with pytest.raises(UserError, match=re.escape(message)):
            planner(**changes)


def test_eval_base_false_leaves_the_bare_base_out_of_the_eval(tmp_path):
    def eval_policies(**changes):
        plan = plan_for(tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **changes))
        return [policy["name"] for policy in plan.stage("eval").recipe["policies"]]

    assert eval_policies() == ["base", "sft", "ppo"]
    assert eval_policies(eval_base=False) == ["sft", "ppo"]


def test_load_in_4bit_reaches_every_stage_that_loads_a_base_by_its_recipe_and_overrides_still_win(tmp_path):
    def four_bit(**changes):
        recipe = tiny_recipe(tmp_path / "p.yaml", tmp_path / "run", tmp_path / "argilla", 6999, **changes)
        recipe_text = yaml.safe_load(recipe.read_text())
        recipe_text.update({f"{n}_recipe": f"recipes/smollm2-135m/{n}.yaml" for n in ("sft", "generate", "ppo")})
        recipe.write_text(yaml.safe_dump(recipe_text))
        plan = plan_for(recipe)
        return {name: plan.stage(name).recipe.get("load_in_4bit") for name in ("sft", "generate", "reward", "ppo")}

    # the stage recipes' own setting (the reward recipe is not given: its default)
    assert four_bit() == {"sft": True, "generate": True, "reward": None, "ppo": True}
    assert four_bit(load_in_4bit=False) == dict.fromkeys(("sft", "generate", "reward", "ppo"), False)
    assert four_bit(load_in_4bit=False, **{"overrides.ppo": {"load_in_4bit": True}})["ppo"] is True


def test_one_pipeline_per_run_dir(tmp_path):
    from workbench.pipeline.runner import hold_run_dir

    with hold_run_dir(tmp_path / "run"):
        assert (tmp_path / "run" / ".pipeline.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            UserError, match=f"another `workbench pipeline` is running on this run_dir \\(pid {os.getpid()}\\)"
        ):
            with hold_run_dir(tmp_path / "run"):
                pass
    with hold_run_dir(tmp_path / "run"):  # released when the first one ended
        pass


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
