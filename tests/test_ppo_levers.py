"""The PPO levers beyond TRL 1.12, on a tiny real 4-bit single base: critic warm-up, per-group learning rates and
gradient clipping, learning-rate schedules, score scaling, critic-free estimators (RLOO, GRPO with the KL as a loss
term). Exact resume with the levers on is in test_ppo_stage."""

from __future__ import annotations

import math

import pytest
import torch
from model_args import margs, quant

from workbench.errors import UserError
from workbench.modeling import adapters, loading
from workbench.modeling.single_base import POLICY, VALUE, load_single_base, response_logprobs
from workbench.rl.ppo_config import PPOConfig
from workbench.rl.trainer import PPOTrainer

PROMPTS = [[{"role": "user", "content": text}] for text in ("Hi there.", "Name a colour.", "Count to 3.", "Why?")]


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_path, tmp_path_factory):
    from test_single_base import make_adapters

    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("lever-adapters"))


def trainer_for(tiny_model_path, tiny_adapters, **overrides) -> PPOTrainer:
    from accelerate import Accelerator

    sft, reward = tiny_adapters
    settings = dict(total_steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, max_new_tokens=4)
    settings |= dict(temperature=1.0, learning_rate=1e-2, seed=3)
    config = PPOConfig(sft_adapter=str(sft), reward_adapter=str(reward), **(settings | overrides))
    model = load_single_base(
        margs(tiny_model_path, quant(load_in_4bit=True, dtype="float32")),
        sft_adapter=sft,
        reward_adapter=reward,
        value=config.critic,
        value_model=config.value_model,
    )
    tokenizer = loading.load_tokenizer(str(tiny_model_path), padding_side="left")
    return PPOTrainer(model, tokenizer, PROMPTS, config, Accelerator(cpu=True))


def snapshot(tensors: dict) -> dict:
    return {name: tensor.detach().clone() for name, tensor in tensors.items()}


def moved(before: dict, tensors: dict) -> bool:
    return any(not torch.equal(before[name], tensor) for name, tensor in tensors.items())


def test_critic_warmup_moves_only_the_value_then_both(tiny_model_path, tiny_adapters):
    trainer = trainer_for(tiny_model_path, tiny_adapters, critic_warmup_steps=1)
    policy, value = snapshot(trainer.policy_tensors), snapshot(trainer.value_tensors)
    first = trainer.step()
    assert first["policy/frozen"] == 1.0 and "policy/loss" not in first
    assert not moved(policy, trainer.policy_tensors), "the policy moved during critic warm-up"
    assert moved(value, trainer.value_tensors)
    second = trainer.step()
    assert second["policy/frozen"] == 0.0 and "policy/loss" in second
    assert moved(policy, trainer.policy_tensors)


def test_value_learning_rate_and_a_cosine_schedule_with_warmup_per_optimizer_step(tiny_model_path, tiny_adapters):
    trainer = trainer_for(
        tiny_model_path, tiny_adapters, value_learning_rate=3e-2, lr_scheduler_type="cosine", warmup_steps=2
    )
    assert [group["lr"] for group in trainer.optimizer.param_groups] == [0.0, 0.0]  # warm-up starts at 0
    rates = []
    for _ in range(2):
        trainer.step()
        rates.append(trainer.optimizer.param_groups[0]["lr"])
    # 2 PPO steps x 2 epochs x 2 minibatches = 8 optimizer steps; after step k of them the policy's rate is
    # 1e-2 * (k / 2) during warm-up, then 1e-2 * (1 + cos(pi * (k - 2) / 6)) / 2
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * (k - 2) / 6)) for k in (4, 8)]
    assert rates == pytest.approx(expected)
    assert trainer.optimizer.param_groups[1]["lr"] == pytest.approx(3 * rates[-1])  # the value's, 3x, same shape
    logged = [row["learning_rate"] for row in trainer.history]  # mean of the rates the 4 updates of each step used
    assert logged[0] == pytest.approx(1e-2 * (0 + 0.5 + 1 + 0.5 * (1 + math.cos(math.pi / 6))) / 4)


def test_separate_gradient_clipping_bounds_policy_and_value_each(tiny_model_path, tiny_adapters):
    joint = trainer_for(tiny_model_path, tiny_adapters, max_grad_norm=1.0)
    split = trainer_for(tiny_model_path, tiny_adapters, max_grad_norm=1.0, value_max_grad_norm=0.25)
    for trainer in (joint, split):
        for tensors, size in ((trainer.policy_tensors, 100.0), (trainer.value_tensors, 1.0)):
            for tensor in tensors.values():
                tensor.grad = torch.full_like(tensor, size)

    def norm(tensors):
        return torch.linalg.vector_norm(torch.stack([t.grad.norm() for t in tensors.values()])).item()

    joint_norms = joint._clip_gradients()
    assert norm(joint.tensors) == pytest.approx(1.0, rel=1e-4)  # one global norm: the value's share nearly vanishes
    assert norm(joint.value_tensors) < 0.25 and set(joint_norms) == {"grad_norm"}
    split_norms = split._clip_gradients()
    assert norm(split.policy_tensors) == pytest.approx(1.0, rel=1e-4)
    assert norm(split.value_tensors) == pytest.approx(0.25, rel=1e-4)
    assert split_norms["value/grad_norm"] > 0.25 and split_norms["grad_norm"] > 1.0  # the norms before clipping


def test_score_scaling_logs_running_moments_of_every_score_seen(tiny_model_path, tiny_adapters):
    trainer = trainer_for(tiny_model_path, tiny_adapters, use_score_scaling=True, use_score_norm=True, score_clip=1.0)
    first, second = trainer.step(), trainer.step()
    assert trainer.score_moments.count == 8
    assert second["reward/running_mean"] == pytest.approx((first["reward/mean"] + second["reward/mean"]) / 2)
    assert first["reward/running_std"] == pytest.approx(first["reward/std"])  # the first batch: its own spread
    # normalised and clipped, the penalised scores (no EOS penalty here) lie in [-1, 1]
    assert -1.0 <= first["reward/penalised_mean"] <= 1.0


def test_an_empty_response_scores_minus_the_penalty_whatever_the_reward_model_says(tiny_model_path, tiny_adapters):
    trainer = trainer_for(tiny_model_path, tiny_adapters, empty_response_penalty=2.0, missing_eos_penalty=1.0)
    trainer.stop_ids = list(range(len(trainer.tokenizer)))  # every token ends the turn: each response is one stop
    metrics = trainer.step()
    assert metrics["response/empty_fraction"] == 1.0 and metrics["response/ended_fraction"] == 1.0
    assert metrics["reward/penalised_mean"] == -2.0  # replaced, not subtracted: the raw scores do not leak through
    assert metrics["reward/mean"] != -2.0


def test_the_empty_response_loss_lowers_the_probability_of_ending_at_once(tiny_model_path, tiny_adapters):
    """With every advantage zeroed the clipped PPO loss has no gradient: the policy moves only if the stop term is
    on, and then towards a lower probability of ending a response at its first token."""
    import dataclasses

    from workbench.modeling.tokens import encode_prompts, left_pad, right_pad

    stop_ids = list(range(10, 2000))  # ~4% of the tiny model's nearly uniform first-token mass

    def probabilities_around_a_step(coef: float) -> tuple[float, float, dict]:
        trainer = trainer_for(tiny_model_path, tiny_adapters, empty_response_loss_coef=coef)
        trainer.stop_ids = stop_ids
        update = trainer.update
        trainer.update = lambda batch, *args, **kwargs: update(
            dataclasses.replace(batch, advantages=torch.zeros_like(batch.advantages)), *args, **kwargs
        )
        tokenizer = trainer.tokenizer
        query = left_pad(encode_prompts(tokenizer, PROMPTS, 256), tokenizer.pad_token_id)
        response = right_pad([[tokenizer.eos_token_id]] * len(PROMPTS), tokenizer.pad_token_id)

        def stop_probability() -> float:
            with torch.no_grad(), adapters.use_adapter(trainer.model, POLICY):
                return response_logprobs(trainer.model, *query, *response, 1.0, first_stop_ids=stop_ids)[2].mean()

        before = stop_probability()
        metrics = trainer.step()
        return before, stop_probability(), metrics

    before, after, metrics = probabilities_around_a_step(1.0)
    assert after < before - 1e-4
    assert metrics["policy/first_token_stop_probability"] == pytest.approx(before, abs=1e-3)  # logged as it falls
    before, after, plain = probabilities_around_a_step(0.0)
    assert after == before and "policy/first_token_stop_probability" not in plain


def test_rloo_samples_k_responses_per_prompt_on_a_base_without_a_value_adapter(tiny_model_path, tiny_adapters):
    trainer = trainer_for(
        tiny_model_path, tiny_adapters, advantage_estimator="rloo", rollouts_per_prompt=2, batch_size=2, sample_rows=4
    )
    assert VALUE not in trainer.model.peft_config and trainer.value_tensors == {}
    assert len(trainer.optimizer.param_groups) == 1  # the policy's
    policy = snapshot(trainer.policy_tensors)
    metrics = trainer.step()
    texts = [prompt for _, prompt, _, _ in trainer.samples]  # the rollout's rows, in order
    assert len(texts) == 4 and texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]
    assert metrics["episodes"] == 4 and metrics["reward/group_std"] >= 0.0
    assert "value/loss" not in metrics and "value/explained_variance" not in metrics
    assert "perf/values_seconds" not in metrics and "perf/value_update_seconds" not in metrics  # no value passes
    assert moved(policy, trainer.policy_tensors)


def test_grpo_with_the_kl_as_a_loss_term_keeps_it_out_of_the_reward(tiny_model_path, tiny_adapters):
    trainer = trainer_for(
        tiny_model_path,
        tiny_adapters,
        advantage_estimator="grpo",
        rollouts_per_prompt=2,
        batch_size=2,
        kl_loss=True,
        kl_estimator="k3",
        kl_coef=0.5,
    )
    first, second = trainer.step(), trainer.step()
    assert first["objective/non_score_reward"] == 0.0 and second["objective/non_score_reward"] == 0.0
    assert first["policy/kl_loss"] >= 0.0 and second["objective/kl"] > 1e-6  # the policy left the reference
    assert second["policy/kl_loss"] > 0.0  # k3 of the moved policy, in the loss


def test_lever_settings_that_cannot_work_are_refused_naming_the_key():
    base = dict(sft_adapter="a", reward_adapter="b", total_steps=4)
    cases = [
        (dict(critic_warmup_steps=4), "critic_warmup_steps \\(4\\) must be below total_steps \\(4\\)"),
        (dict(lr_scheduler_type="exponential"), "lr_scheduler_type must be one of"),
        (dict(use_score_norm=True), "use_score_norm: true needs use_score_scaling: true"),
        (dict(score_clip=0.0), "score_clip must be > 0"),
        (dict(value_learning_rate=-1e-4), "value_learning_rate must be > 0"),
        (dict(warmup_steps=-1), "warmup_steps and critic_warmup_steps must be >= 0"),
        (dict(advantage_estimator="ppo"), "advantage_estimator must be one of"),
        (dict(advantage_estimator="rloo"), "rloo compares responses to the same prompt: rollouts_per_prompt must be"),
        (dict(advantage_estimator="grpo", rollouts_per_prompt=3, mini_batch_size=16), "must divide batch_size x"),
        (dict(advantage_estimator="reinforce++", critic_warmup_steps=1), "critic_warmup_steps is for the critic"),
        (dict(advantage_estimator="reinforce++", value_learning_rate=1e-3), "value_learning_rate is for the critic"),
        (dict(rollouts_per_prompt=0), "rollouts_per_prompt must be a positive integer"),
        (dict(empty_response_penalty=-1.0), "empty_response_penalty must be >= 0"),
        (dict(empty_response_loss_coef=-1.0), "empty_response_loss_coef must be >= 0"),
    ]
    for overrides, message in cases:
        with pytest.raises(UserError, match=message):
            PPOConfig(**(base | overrides)).check()


def test_a_critic_on_the_reference_features_trains_only_its_head(tiny_model_path, tiny_adapters):
    """value_model ref_features: the rollout's values are the value head on the reference pass's hidden states (no
    value pass, no value LoRA); a value-only update moves the head and nothing else, and lowers the value loss on
    the same rollout; a PPO step trains policy and head."""
    import dataclasses

    from workbench.modeling import heads
    from workbench.modeling.single_base import REF
    from workbench.rl.rollout import collect

    trainer = trainer_for(tiny_model_path, tiny_adapters, value_model="ref_features", value_learning_rate=1e-1)
    model = trainer.model
    assert VALUE not in model.peft_config and list(trainer.value_tensors) == ["workbench_heads.value.weight"]
    ref = {n: p.detach().clone() for n, p in model.named_parameters() if f".{REF}." in n}
    sampling, stop_ids = trainer.sampling, trainer.stop_ids
    rollout = collect(model, trainer.tokenizer, PROMPTS, sampling, 256, stop_ids, "cpu", 4, value_on_ref_features=True)
    batch = rollout.batch
    assert batch.value_features.shape[:2] == batch.response_ids.shape
    torch.testing.assert_close(batch.values, heads.head_values(model, VALUE, batch.value_features))
    mask = batch.response_mask
    returns = torch.where(mask, 1.0 + torch.arange(mask.shape[1]).float() / 10, 0.0)  # a target the head can fit
    zeros = torch.zeros_like(batch.values)
    batch = dataclasses.replace(batch, rewards=zeros, advantages=zeros, returns=returns)
    policy, value = snapshot(trainer.policy_tensors), snapshot(trainer.value_tensors)
    losses = [trainer.update(batch, train_policy=False)["value/loss"] for _ in range(3)]
    assert losses[2] < losses[0], losses
    assert moved(value, trainer.value_tensors) and not moved(policy, trainer.policy_tensors)
    assert not moved(ref, {n: p for n, p in model.named_parameters() if f".{REF}." in n})
    metrics = trainer.step()
    assert moved(policy, trainer.policy_tensors)
    assert {"value/loss", "value/explained_variance", "perf/values_seconds"} <= set(metrics)
