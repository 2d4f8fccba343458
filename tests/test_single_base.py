"""The single-base PPO is provably the same computation as separately loaded models.

One 4-bit base carries `policy`, `ref`, `reward` and `value`. Its reference log-probs must equal those of the SFT model
loaded on its own (base + SFT adapter), and its reward must equal the reward stage's own model (a sequence-
classification base + the reward adapter), on real 4-bit bitsandbytes layers, to a tight tolerance.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_args import lora, margs, quant

from workbench.errors import UserError
from workbench.modeling import adapters, loading
from workbench.modeling.single_base import (
    POLICY,
    REF,
    REWARD,
    VALUE,
    load_single_base,
    response_logprobs,
    response_values,
    reward_input_ids,
    reward_scores,
    right_pad,
)
from workbench.modeling.tokens import position_ids_from_mask

QUANT = dict(load_in_4bit=True, double_quant=True, dtype="float32")
PROMPTS = [
    [{"role": "user", "content": "How do I boil an egg?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a prime number."}],
    [{"role": "user", "content": "Write a haiku about rain, please, and keep it gentle."}],
]
RESPONSES = ["Put it in boiling water for nine minutes.", "Seven.", "Soft rain on the roof"]


def randomise(model, name: str, seed: int, scale: float = 0.3) -> None:
    """A fresh LoRA is the identity (B = 0): give adapter `name` random weights so that it changes outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if f".{name}." in parameter_name and parameter.is_floating_point():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * scale)


def make_adapters(base_path, out_dir: Path, seed: int = 0) -> tuple[Path, Path]:
    """An SFT adapter (CAUSAL_LM LoRA) and a reward adapter (SEQ_CLS LoRA + `score` head) with random weights, saved
    with manifests as the SFT and reward stages save them (PEFT saves the head through modules_to_save)."""
    precision = quant(dtype="float32")
    tokenizer = loading.load_tokenizer(str(base_path))
    model = loading.load_model(margs(str(base_path), precision, device_map="cpu"))
    model = adapters.attach(model, "default", config=lora(r=4, alpha=8, dropout=0.0))
    randomise(model, "default", seed)
    manifest = adapters.AdapterManifest(stage="sft", base_model=model.workbench_base.to_dict(), peft_method="lora")
    sft_dir = adapters.save(model, "default", out_dir / "sft", manifest)

    model = loading.load_model(
        margs(str(base_path), precision, device_map="cpu"), head="scalar", pad_token_id=tokenizer.pad_token_id
    )
    config = lora(task_type="SEQ_CLS", r=4, alpha=8, dropout=0.0)
    model = adapters.attach(model, "default", config=config)
    randomise(model, "default", seed + 1)
    manifest = adapters.AdapterManifest(
        stage="reward", base_model=model.workbench_base.to_dict(), peft_method="lora", task_type="SEQ_CLS"
    )
    reward_dir = adapters.save(model, "default", out_dir / "reward", manifest)
    return sft_dir, reward_dir


@pytest.fixture(scope="module")
def tiny_adapters(tiny_model_path, tmp_path_factory):
    return make_adapters(tiny_model_path, tmp_path_factory.mktemp("adapters"))


@pytest.fixture(scope="module")
def single_base(tiny_model_path, tiny_adapters):
    sft_dir, reward_dir = tiny_adapters
    model = load_single_base(margs(tiny_model_path, quant(**QUANT)), sft_adapter=sft_dir, reward_adapter=reward_dir)
    model.eval()
    return model


@pytest.fixture(scope="module")
def tokenizer(tiny_model_path):
    return loading.load_tokenizer(str(tiny_model_path))


def queries_and_responses(tokenizer):
    """Left-padded chat prompts and right-padded responses of different lengths, as a rollout makes them."""
    from workbench.modeling.tokens import encode_prompts, left_pad

    query_ids, query_mask = left_pad(encode_prompts(tokenizer, PROMPTS, 256), tokenizer.pad_token_id)
    encoded = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in RESPONSES]
    response_ids, response_mask = right_pad(encoded, tokenizer.pad_token_id)
    return query_ids, query_mask, response_ids, response_mask


def test_one_base_carries_four_adapters_without_copies(single_base, tiny_model_path):
    assert set(single_base.peft_config) == {POLICY, REF, REWARD, VALUE}
    alone = loading.load_model(margs(str(tiny_model_path), quant(**QUANT), device_map="cpu"))
    # The same number of real 4-bit layers as one plain base: the four roles share them.
    assert loading.count_bnb_layers(single_base) == loading.count_bnb_layers(alone)
    assert loading.count_bnb_layers(alone)["Linear4bit"] > 0
    assert (
        adapters.trainable_parameters(single_base, REF) == 0
        and adapters.trainable_parameters(single_base, REWARD) == 0
    )
    assert single_base.workbench_heads[VALUE].weight.requires_grad
    assert not single_base.workbench_heads[REWARD].weight.requires_grad


def test_the_first_token_stop_probability_is_the_softmax_mass_of_the_stop_ids(single_base, tokenizer):
    query_ids, query_mask, response_ids, response_mask = queries_and_responses(tokenizer)
    inputs = (query_ids, query_mask, response_ids, response_mask)
    with torch.no_grad(), adapters.use_adapter(single_base, REF):
        logprobs, _ = response_logprobs(single_base, *inputs, temperature=0.7)
        first = int(response_ids[0, 0])  # row 0's own first token as the only "stop" id: its sampled probability
        _, _, stop = response_logprobs(single_base, *inputs, temperature=0.7, first_stop_ids=[first])
        _, _, every = response_logprobs(
            single_base, *inputs, temperature=0.7, first_stop_ids=range(single_base.config.vocab_size)
        )
    assert stop[0].item() == pytest.approx(logprobs[0, 0].exp().item(), rel=1e-5)
    assert every.tolist() == pytest.approx([1.0] * len(every), abs=1e-5)


def test_ref_logprobs_equal_the_separately_loaded_sft_model(single_base, tiny_adapters, tokenizer):
    sft_dir, _ = tiny_adapters
    inputs = queries_and_responses(tokenizer)
    with torch.no_grad():
        with adapters.use_adapter(single_base, REF):
            ref, _ = response_logprobs(single_base, *inputs, temperature=0.7)
        sft_model, _ = adapters.load_with_adapter(sft_dir, margs(None, quant(**QUANT)))[::2]
        loading.keep_4bit_weights_unpacked(sft_model)  # the single base's kernel, not bitsandbytes' AVX512 inference
        sft_model.eval()
        sft, _ = response_logprobs(sft_model, *inputs, temperature=0.7)
        with sft_model.disable_adapter():
            base_only, _ = response_logprobs(sft_model, *inputs, temperature=0.7)
    mask = inputs[3]
    assert torch.allclose(ref[mask], sft[mask], atol=1e-5, rtol=0), (ref[mask] - sft[mask]).abs().max()
    # The adapter matters (the comparison could fail): without it the log-probs are far off.
    assert (base_only[mask] - sft[mask]).abs().max() > 1e-2

    # Training the policy leaves the reference where it was.
    saved = {n: p.detach().clone() for n, p in single_base.named_parameters() if f".{POLICY}." in n}
    randomise(single_base, POLICY, seed=99)
    try:
        with torch.no_grad():
            policy, _ = response_logprobs(single_base, *inputs, temperature=0.7)
            with adapters.use_adapter(single_base, REF):
                ref_after, _ = response_logprobs(single_base, *inputs, temperature=0.7)
        assert (policy[mask] - sft[mask]).abs().max() > 1e-2
        assert torch.equal(ref_after, ref)
    finally:
        with torch.no_grad():
            for name, parameter in single_base.named_parameters():
                if name in saved:
                    parameter.copy_(saved[name])


def test_reward_equals_the_reward_stage_model(single_base, tiny_adapters, tokenizer, tiny_model_path):
    from workbench.modeling.tokens import reward_input_ids as encode

    _, reward_dir = tiny_adapters
    # The texts are tokenized as the reward stage tokenizes them (TRL's RewardTrainer: chat template of prompt+reply).
    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    assert sequences == [encode(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)]
    with torch.no_grad():
        single = reward_scores(single_base, tokenizer, PROMPTS, RESPONSES, "cpu")
        stage_model = loading.load_model(
            margs(str(tiny_model_path), quant(**QUANT), device_map="cpu"),
            head="scalar",
            pad_token_id=tokenizer.pad_token_id,
        )
        stage_model = adapters.attach(stage_model, "default", path=reward_dir, trainable=False)
        loading.keep_4bit_weights_unpacked(stage_model)  # the kernel the reward stage trained with
        stage_model.eval()
        ids, mask = right_pad(sequences, tokenizer.pad_token_id)
        expected = stage_model(input_ids=ids, attention_mask=mask.long()).logits.squeeze(-1).float()
        with stage_model.disable_adapter():
            without_lora = stage_model(input_ids=ids, attention_mask=mask.long()).logits.squeeze(-1).float()
    assert torch.allclose(single, expected, atol=1e-5, rtol=0), (single, expected)
    assert (without_lora - expected).abs().max() > 1e-3  # the LoRA weights matter, so the match means something
    assert single.std() > 0  # and the scores are not all the same


def test_common_prefix_length_leaves_each_row_a_token_of_its_own():
    from workbench.modeling.shared_prefix import common_prefix_length

    assert common_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token stays the row's own
    assert common_prefix_length([[1, 2, 3, 4], [1, 2]]) == 1
    assert common_prefix_length([[7], [7, 8]]) == 0
    assert common_prefix_length([[9, 1], [8, 1]]) == 0


def test_answers_to_one_prompt_share_its_tokens_and_score_as_whole_rows(single_base, tokenizer):
    """`reward_scores` runs the tokens the answers to one prompt share once (workbench/modeling/shared_prefix.py):
    rows of three prompts in mixed order (three answers, two, one; one answer given twice), on the 4-bit base, score
    as `heads.scalar_scores` on the whole right-padded rows does."""
    from workbench.modeling import heads
    from workbench.modeling.shared_prefix import shared_prefix_scores

    a, b, c = PROMPTS
    answers = {0: "Boil it.", 1: "Seven, or eleven.", 2: "Boil it for nine minutes, then cool it in cold water."}
    prompts = [a, b, a, c, b, a, a]
    responses = [answers[0], answers[1], answers[2], "Rain taps softly.", "Two.", "Ask someone else.", answers[0]]
    sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(prompts, responses)]
    with torch.no_grad():
        shared = reward_scores(single_base, tokenizer, prompts, responses, "cpu")
        ids, mask = right_pad(sequences, tokenizer.pad_token_id)
        whole = heads.scalar_scores(single_base, REWARD, ids, mask.long()).float()
        assert shared_prefix_scores(single_base, REWARD, sequences, [str(p) for p in prompts], 0) is not None
        one_each = [str(i) for i in range(len(prompts))]
        assert shared_prefix_scores(single_base, REWARD, sequences, one_each, 0) is None  # nothing to share
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=0)
    assert shared[0] == pytest.approx(shared[6].item(), abs=1e-6) and whole.std() > 0.01
    assert single_base.active_adapter == POLICY  # restored


def test_value_starts_as_the_reward_model(single_base, tokenizer):
    """The value adapter and head are initialised from the reward adapter: same numbers at every token."""
    from workbench.modeling import heads

    ids, mask = right_pad([reward_input_ids(tokenizer, p, r) for p, r in zip(PROMPTS, RESPONSES)], 0)
    with torch.no_grad():
        reward = heads.token_values(single_base, REWARD, ids, mask.long())
        value = heads.token_values(single_base, VALUE, ids, mask.long())
        inputs = queries_and_responses(tokenizer)
        values = response_values(single_base, *inputs)
    assert torch.equal(reward[mask], value[mask])
    assert values.shape == inputs[2].shape and torch.isfinite(values).all()


def test_a_checkpointed_value_update_trains_the_value_adapter_and_only_it(tiny_model_path, tiny_adapters, tokenizer):
    """Under gradient checkpointing backward recomputes every layer under the adapter active at that moment. The value
    forward and its backward inside `use_adapter(model, VALUE)` (as workbench/rl/trainer.py runs them) give the value
    LoRA the same gradients as without checkpointing, and the policy none. A value forward with gradient while
    another adapter is active is refused: leaving `final_hidden_states` restores that adapter, so its backward would
    recompute the layers with it, give the policy's LoRA the value loss and the value's LoRA nothing."""
    sft_dir, reward_dir = tiny_adapters
    inputs = queries_and_responses(tokenizer)
    grads = {}
    for checkpointing in (False, True):
        model = load_single_base(
            margs(tiny_model_path, quant(**QUANT)),
            sft_adapter=sft_dir,
            reward_adapter=reward_dir,
            gradient_checkpointing=checkpointing,
        )
        model.train()  # checkpointing acts in train mode only; the LoRA and the tiny base have no dropout
        with adapters.use_adapter(model, VALUE):
            response_values(model, *inputs).sum().backward()
        grads[checkpointing] = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads[True].keys() == grads[False].keys()
    assert any(".value." in n for n in grads[True]) and not any(f".{POLICY}." in n for n in grads[True])
    for name, grad in grads[False].items():
        assert grad.abs().max() > 0, name
        torch.testing.assert_close(grads[True][name], grad, atol=1e-5, rtol=1e-4)
    with pytest.raises(RuntimeError, match=r"inside adapters.use_adapter\(model, 'value'\) \(active now: 'policy'\)"):
        response_values(model, *inputs)  # `policy` is active, gradient on, the model checkpointing
    with torch.no_grad():  # scoring without gradient has no backward to go wrong (the rollout's values)
        assert torch.isfinite(response_values(model, *inputs)).all()
        # checkpointed layers in train mode keep no KV cache: reward scores run whole rows, not a shared prefix
        from workbench.modeling.shared_prefix import shared_prefix_scores

        sequences = [reward_input_ids(tokenizer, p, r) for p, r in zip(PROMPTS * 2, RESPONSES * 2)]
        assert shared_prefix_scores(model, REWARD, sequences, [str(p) for p in PROMPTS * 2], 0) is None
        model.eval()
        assert shared_prefix_scores(model, REWARD, sequences, [str(p) for p in PROMPTS * 2], 0) is not None


def test_a_later_round_starts_the_policy_from_its_last_adapter_and_keeps_sft_as_the_reference(
    tiny_model_path, tiny_adapters, single_base, tokenizer, tmp_path
):
    """`policy_adapter` (a later labeling round's start): the trained `policy` answers as that adapter does, `ref`
    as the SFT adapter does, so the KL is still to SFT."""
    sft_dir, reward_dir = tiny_adapters
    last_dir, _ = make_adapters(tiny_model_path, tmp_path, seed=7)  # another policy adapter on the same base
    args = margs(tiny_model_path, quant(**QUANT))
    model = load_single_base(args, sft_adapter=sft_dir, reward_adapter=reward_dir, policy_adapter=last_dir)
    model.eval()
    last_model, _ = adapters.load_with_adapter(last_dir, margs(None, quant(**QUANT)))[::2]
    loading.keep_4bit_weights_unpacked(last_model)  # the single base's kernel, not bitsandbytes' AVX512 inference one
    last_model.eval()
    inputs = queries_and_responses(tokenizer)
    with torch.no_grad():
        policy, _ = response_logprobs(model, *inputs, temperature=0.7)
        with adapters.use_adapter(model, REF):
            ref, _ = response_logprobs(model, *inputs, temperature=0.7)
        with adapters.use_adapter(single_base, REF):
            sft, _ = response_logprobs(single_base, *inputs, temperature=0.7)
        last, _ = response_logprobs(last_model, *inputs, temperature=0.7)
    mask = inputs[3]
    assert torch.allclose(policy[mask], last[mask], atol=1e-5, rtol=0), (policy[mask] - last[mask]).abs().max()
    assert torch.allclose(ref[mask], sft[mask], atol=1e-5, rtol=0), (ref[mask] - sft[mask]).abs().max()
    assert (policy[mask] - ref[mask]).abs().max() > 1e-2  # the two adapters really differ
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert any(f".{POLICY}." in name for name in trainable) and not any(f".{REF}." in name for name in trainable)


def test_the_reference_pass_gives_its_log_probs_and_the_features_the_value_head_reads(
    tiny_model_path, tiny_adapters, tokenizer
):
    """PPO's `value_model: ref_features`: no value LoRA, a trained head (a copy of the reward head) on the `ref`
    adapter's final hidden states before each response token, the ones `response_logprobs` turns into log-probs."""
    from workbench.modeling import heads
    from workbench.modeling.single_base import response_logprobs_and_features

    sft_dir, reward_dir = tiny_adapters
    model = load_single_base(
        margs(tiny_model_path, quant(**QUANT)),
        sft_adapter=sft_dir,
        reward_adapter=reward_dir,
        value_model="ref_features",
    )
    model.eval()
    assert set(model.peft_config) == {POLICY, REF, REWARD}
    head = model.workbench_heads[VALUE].weight
    assert head.requires_grad and torch.equal(head, model.workbench_heads[REWARD].weight)
    assert head.data_ptr() != model.workbench_heads[REWARD].weight.data_ptr()  # a copy: training it leaves the reward
    query_ids, query_mask, response_ids, response_mask = inputs = queries_and_responses(tokenizer)
    with torch.no_grad(), adapters.use_adapter(model, REF):
        logprobs, features = response_logprobs_and_features(model, *inputs, temperature=0.7)
        expected, _ = response_logprobs(model, *inputs, temperature=0.7)
        ids = torch.cat([query_ids, response_ids], dim=1)
        mask = torch.cat([query_mask, response_mask], dim=1).long()
        hidden = heads.final_hidden_states(model, REF, ids, mask)[:, query_ids.shape[1] - 1 : -1]
    real = response_mask.bool()
    torch.testing.assert_close(logprobs[real], expected[real], atol=1e-6, rtol=0)
    assert features.shape == (*response_ids.shape, hidden.shape[-1])
    torch.testing.assert_close(features[real], hidden[real], atol=1e-5, rtol=0)
    values = heads.head_values(model, VALUE, features)
    assert values.dtype == torch.float32 and values.shape == response_ids.shape
    torch.testing.assert_close(values, features @ head[0].detach(), atol=1e-5, rtol=0)
    # a model whose forward transforms the logits (Gemma 2's soft-capping) has no plain head to share: refused
    model.get_base_model().config.final_logit_softcapping = 30.0
    with pytest.raises(UserError, match="value_model: ref_features needs a model whose logits are its output head"):
        response_logprobs_and_features(model, *inputs, temperature=0.7)


def test_a_critic_copied_from_a_reward_head_on_a_middle_layer_reads_that_layer_of_the_reference_pass(
    tiny_model_path, tiny_adapters, tokenizer, tmp_path
):
    """A reward model trained on the base's first decoder layer (`reward_layer: 1` of tiny-llama's 2): PPO's
    ref_features critic starts as a copy of its head, so it reads the reference pass's layer 1 through the final
    norm (the reward model's own features), while the log-probs still come from the last layer."""
    from workbench.modeling.single_base import response_logprobs_and_features

    sft_dir, _ = tiny_adapters
    precision = quant(dtype="float32")
    model = loading.load_model(
        margs(str(tiny_model_path), precision, device_map="cpu"),
        head="scalar",
        pad_token_id=tokenizer.pad_token_id,
        num_hidden_layers=1,
    )
    model = adapters.attach(model, "default", config=lora(task_type="SEQ_CLS", r=4, alpha=8, dropout=0.0))
    randomise(model, "default", 5)
    manifest = adapters.AdapterManifest(
        stage="reward",
        base_model=model.workbench_base.to_dict(),
        peft_method="lora",
        task_type="SEQ_CLS",
        extra={"head": {"module": "score", "layer": 1}},
    )
    reward_dir = adapters.save(model, "default", tmp_path / "reward", manifest)
    model = load_single_base(
        margs(tiny_model_path, quant(**QUANT)),
        sft_adapter=sft_dir,
        reward_adapter=reward_dir,
        value_model="ref_features",
    ).eval()
    assert model.workbench_heads[REWARD].reads_layer == 1 and model.workbench_heads[VALUE].reads_layer == 1
    query_ids, query_mask, response_ids, response_mask = inputs = queries_and_responses(tokenizer)
    decoder = model.get_base_model().get_decoder()
    with torch.no_grad(), adapters.use_adapter(model, REF):
        logprobs, features = response_logprobs_and_features(model, *inputs, temperature=0.7)
        expected, _ = response_logprobs(model, *inputs, temperature=0.7)
        ids = torch.cat([query_ids, response_ids], dim=1)
        mask = torch.cat([query_mask, response_mask], dim=1).long()
        decoder.config.num_hidden_layers = 1  # the decoder cut after layer 1, as the reward stage trained it
        try:
            cut = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
        finally:
            decoder.config.num_hidden_layers = 2
        last = decoder(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask))
    real = response_mask.bool()
    window = slice(query_ids.shape[1] - 1, -1)
    torch.testing.assert_close(logprobs[real], expected[real], atol=1e-6, rtol=0)
    torch.testing.assert_close(features[real], cut.last_hidden_state[:, window][real], atol=1e-5, rtol=0)
    assert (features[real] - last.last_hidden_state[:, window][real]).abs().max() > 1e-3
