"""`workbench pipeline`'s plan, with no model and no server: what `--force` re-runs, each method's stage and recipe,
rounds, the seed, active selection and load_in_4bit reaching every stage, one pipeline per run_dir, and bad recipes
refused before any stage runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import OVERRIDES, STAGES, plan_for, tiny_recipe

from workbench.errors import UserError
from workbench.pipeline.pipeline_recipe import stages_of
from workbench.stages.pipeline import forced_stages


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
    of 32 steps of 8: seeds 17-21 chose those, seeds 28-29 the larger batch), the policy's learning rate 4e-4 (six
    re-drawn PPO runs: the failing draws had not climbed their reward model), both empty-answer guards on, the plain
    reward score (the pessimistic one lost at seeds 18 and 22), its reward model trained with the length term (seeds
    17-19) and one off-topic pair per prompt (seeds 18-24), on the base's first 15 layers with its head fitted first
    (five runs' labels); a critic-free method on the same recipe resets every
    critic key, the critic's choice too."""
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
    assert (rl["learning_rate"], rl["value_learning_rate"]) == (4.0e-4, 8.0e-4)
    reward = plan.stage("reward").recipe
    assert reward["max_steps"] == 40
    assert reward["length_term"] is True and reward["off_topic_pairs"] is True
    assert (reward["reward_layer"], reward["linear_head_fit"]) == (15, True)  # five runs' labels retrained
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
        "selection must be one of random, uncertainty, diversity, spread; got 'best'": dict(
            label_prompts=2, selection="best"
        ),
        "selection diversity chooses label_prompts": dict(selection="diversity"),
        "selection uncertainty needs selection_reward_adapter": dict(label_prompts=2, selection="uncertainty"),
        "selection spread needs selection_reward_adapter": dict(label_prompts=2, selection="spread"),
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
