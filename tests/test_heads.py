"""One base, many heads: a reward adapter on the causal-LM base scores exactly as the reward stage's own model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from model_args import margs, quant

from workbench.errors import UserError
from workbench.modeling import adapters, heads, loading
from workbench.modeling.arguments import from_manifest
from workbench.modeling.reward_model import load_reward_model, score_sequences
from workbench.modeling.tokens import reward_input_ids, right_pad

BUNDLED_PREFERENCES = Path(__file__).resolve().parents[1] / "workbench" / "data" / "bundled" / "preferences.jsonl"
FP32 = quant(dtype="float32")
NF4 = quant(load_in_4bit=True, double_quant=True, dtype="float32")
TEXTS = [  # different lengths: the batch is right-padded
    ([{"role": "user", "content": "How do I polish leather shoes?"}], "Clean them, polish them, then buff them."),
    ([{"role": "user", "content": "Hi"}], "Hello."),
    ([{"role": "user", "content": "Plan a picnic for six people, with games."}], "Figure it out yourself"),
]


def train_reward_adapter(tmp: Path, seed: int = 0, extra: str = "") -> Path:
    from workbench.stages import reward

    rows = [json.loads(line) for line in BUNDLED_PREFERENCES.read_text().splitlines()[:24]]
    data = tmp / "prefs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = tmp / "reward.yaml"
    recipe.write_text(
        f"model_name_or_path: tiny-llama\ndatasets: [{{path: {data}}}]\neval_split_size: 0.0\nmax_steps: 3\n"
        f"per_device_train_batch_size: 4\nlearning_rate: 0.01\nmax_length: 256\ndtype: float32\nbf16: false\n"
        f"gradient_checkpointing: false\nsave_steps: 1000\nwandb_mode: disabled\nseed: {seed}\n"
        f"output_dir: {tmp / 'out'}\nlora_r: 4\nlora_alpha: 8\n{extra}"
    )
    assert reward.main(["--config", str(recipe)]) == 0
    return tmp / "out" / "adapter"


@pytest.fixture(scope="module")
def reward_adapter(tmp_path_factory, tiny_model_path):
    return train_reward_adapter(tmp_path_factory.mktemp("reward"))


@pytest.fixture(scope="module")
def other_adapter(tmp_path_factory, reward_adapter):
    """A second reward adapter for the same base: the first with its LoRA B and head changed."""
    from safetensors.torch import load_file, save_file

    target = tmp_path_factory.mktemp("other") / "adapter"
    shutil.copytree(reward_adapter, target)
    weights = load_file(str(target / "adapter_model.safetensors"))
    generator = torch.Generator().manual_seed(1)
    for key, value in weights.items():
        if "lora_B" in key or key == heads.HEAD_KEY:
            weights[key] = value + 0.5 * torch.randn(value.shape, generator=generator).to(value.dtype)
    save_file(weights, str(target / "adapter_model.safetensors"))
    return target


def batch(tokenizer):
    sequences = [reward_input_ids(tokenizer, prompt, answer) for prompt, answer in TEXTS]
    assert len({len(s) for s in sequences}) == len(sequences)
    return sequences, *right_pad(sequences, tokenizer.pad_token_id)


def stage_scores(adapter, quant, sequences, tokenizer) -> torch.Tensor:
    """The reward stage's own model: AutoModelForSequenceClassification + the adapter."""
    model = loading.load_model(margs("tiny-llama", quant), head="scalar", pad_token_id=tokenizer.pad_token_id)
    model = adapters.attach(model, "reward", path=adapter, trainable=False).eval()
    return torch.tensor(score_sequences(model, sequences, tokenizer.pad_token_id, batch_size=8))


@pytest.mark.parametrize("quant", [FP32, NF4], ids=["float32", "nf4"])
def test_single_base_score_equals_reward_stage_model(reward_adapter, other_adapter, quant):
    tokenizer = loading.load_tokenizer("tiny-llama")
    sequences, input_ids, attention_mask = batch(tokenizer)
    model = loading.load_model(margs("tiny-llama", quant), head="causal_lm").eval()
    model = heads.attach_scalar_adapter(model, "reward", reward_adapter)
    model = heads.attach_scalar_adapter(model, "value", other_adapter)
    assert isinstance(model.workbench_heads, torch.nn.ModuleDict) and set(model.workbench_heads) == {"reward", "value"}
    with torch.no_grad():
        single = heads.scalar_scores(model, "reward", input_ids, attention_mask)
        other = heads.scalar_scores(model, "value", input_ids, attention_mask)
        values = heads.token_values(model, "reward", input_ids, attention_mask)
    expected = stage_scores(reward_adapter, quant, sequences, tokenizer)
    torch.testing.assert_close(single, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(other, stage_scores(other_adapter, quant, sequences, tokenizer), atol=1e-4, rtol=0)
    assert (single - other).abs().min() > 1e-2  # two adapters on one base really are two reward models
    assert values.shape == input_ids.shape and values.dtype == torch.float32
    last = attention_mask.sum(-1) - 1
    torch.testing.assert_close(values[torch.arange(len(TEXTS)), last], single)
    # Left padding gives the same scores (positions follow the mask).
    left_ids = torch.stack([torch.roll(row, int((m == 0).sum())) for row, m in zip(input_ids, attention_mask)])
    left_mask = torch.stack([torch.roll(m, int((m == 0).sum())) for m in attention_mask])
    with torch.no_grad():
        torch.testing.assert_close(
            heads.scalar_scores(model, "reward", left_ids, left_mask), single, atol=1e-4, rtol=0
        )


def test_reward_score_command_agrees_with_single_base(reward_adapter):
    scorer, tokenizer, _ = load_reward_model(reward_adapter)  # what `workbench reward score` loads (4-bit)
    sequences, input_ids, attention_mask = batch(tokenizer)
    from_command = torch.tensor(score_sequences(scorer, sequences, tokenizer.pad_token_id, 2))
    args = from_manifest(adapters.read_manifest(reward_adapter).base_model, margs("tiny-llama"))
    model = heads.attach_scalar_adapter(loading.load_model(args).eval(), "reward", reward_adapter)
    with torch.no_grad():
        torch.testing.assert_close(
            heads.scalar_scores(model, "reward", input_ids, attention_mask), from_command, atol=1e-4, rtol=0
        )


@pytest.mark.parametrize("quant", [FP32, NF4], ids=["float32", "nf4"])
def test_reward_stage_model_scores_the_answers_to_a_prompt_with_its_tokens_run_once(reward_adapter, quant):
    """`score_sequences` with `groups` (`workbench reward score` on candidates or pairs: a row's answers share its
    prompt) runs each group's common tokens once (shared_prefix.last_hidden_states) and scores as whole rows do."""
    from workbench.modeling.shared_prefix import last_hidden_states

    tokenizer = loading.load_tokenizer("tiny-llama")
    model = loading.load_model(margs("tiny-llama", quant), head="scalar", pad_token_id=tokenizer.pad_token_id)
    model = adapters.attach(model, "reward", path=reward_adapter, trainable=False).eval()
    (shoes, polish), (hi, hello), (picnic, rude) = TEXTS
    rows = [(shoes, polish), (hi, hello), (shoes, rude), (picnic, rude), (shoes, "Buff them."), (hi, polish)]
    groups = [json.dumps(prompt) for prompt, _ in rows]
    sequences = [reward_input_ids(tokenizer, prompt, answer) for prompt, answer in rows]
    pad = tokenizer.pad_token_id
    whole = torch.tensor(score_sequences(model, sequences, pad, batch_size=4))
    shared = torch.tensor(score_sequences(model, sequences, pad, batch_size=4, groups=groups))
    with torch.no_grad():  # the shared path runs on such a batch (it returns None where nothing is shared)
        assert last_hidden_states(model.get_base_model().base_model, sequences[:4], groups[:4], pad) is not None
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=0)
    assert whole.std() > 1e-3


@pytest.fixture(scope="module")
def first_layer_adapter(tmp_path_factory, tiny_model_path):
    """A reward model on tiny-llama's first decoder layer of two, its head fitted before 3 steps of training."""
    return train_reward_adapter(
        tmp_path_factory.mktemp("first-layer"), extra="reward_layer: 1\nlinear_head_fit: true\n"
    )


def test_a_reward_model_on_the_first_layers_scores_alike_wherever_it_is_loaded(first_layer_adapter):
    """`reward_layer: 1`: the stage trains on the base cut after decoder layer 1 (then the final norm). The single
    base (all layers, PPO's and eval's) reads that layer for this head alone, by the whole batch and by a shared
    prompt, and `workbench reward score` loads the cut base: the same scores."""
    manifest = adapters.read_manifest(first_layer_adapter)
    assert manifest.extra["head"]["layer"] == 1
    assert "linear_head_train_accuracy" in manifest.metrics and manifest.metrics["train_loss"] > 0
    scorer, tokenizer, _ = load_reward_model(first_layer_adapter)
    assert scorer.config.num_hidden_layers == 1
    sequences, input_ids, attention_mask = batch(tokenizer)
    from_command = torch.tensor(score_sequences(scorer, sequences, tokenizer.pad_token_id, 2))
    args = from_manifest(manifest.base_model, margs("tiny-llama"))  # the stage's precision (4-bit), as the command
    model = heads.attach_scalar_adapter(loading.load_model(args).eval(), "reward", first_layer_adapter)
    decoder = model.get_base_model().get_decoder()
    assert decoder.config.num_hidden_layers == 2
    with torch.no_grad():
        single = heads.scalar_scores(model, "reward", input_ids, attention_mask)
        groups = ["a", "b", "a"]  # rows 0 and 2 share a group: their common prefix runs once
        from workbench.modeling.shared_prefix import shared_prefix_scores

        shared = shared_prefix_scores(model, "reward", sequences, groups, tokenizer.pad_token_id)
        model.workbench_heads["reward"].reads_layer = None  # the same head on the last layer: another score
        last_layer = heads.scalar_scores(model, "reward", input_ids, attention_mask)
    assert decoder.config.num_hidden_layers == 2  # restored after each call
    torch.testing.assert_close(single, from_command, atol=1e-4, rtol=0)
    torch.testing.assert_close(shared, from_command, atol=1e-4, rtol=0)
    assert (last_layer - single).abs().max() > 1e-3


def test_trainable_value_head_gets_gradients_and_round_trips(reward_adapter, tmp_path):
    tokenizer = loading.load_tokenizer("tiny-llama")
    sequences, input_ids, attention_mask = batch(tokenizer)
    model = loading.load_model(margs("tiny-llama", NF4))
    model = heads.attach_scalar_adapter(model, "reward", reward_adapter, trainable=False)
    model = heads.attach_scalar_adapter(model, "value", reward_adapter, trainable=True)
    head = model.workbench_heads["value"]
    assert head.weight.requires_grad and not model.workbench_heads["reward"].weight.requires_grad
    assert head.weight in set(model.parameters())  # an optimizer over model.parameters() trains the head
    values = heads.token_values(model, "value", input_ids, attention_mask)
    (values * attention_mask).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    lora_grads = [p.grad for n, p in model.named_parameters() if ".value." in n and "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert all(p.grad is None for n, p in model.named_parameters() if ".reward." in n)

    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        trained = heads.scalar_scores(model, "value", input_ids, attention_mask)
        assert (trained - heads.scalar_scores(model, "reward", input_ids, attention_mask)).abs().max() > 1e-3
    manifest = adapters.read_manifest(reward_adapter)
    manifest.stage = "ppo-value"
    saved = heads.save_scalar_adapter(model, "value", tmp_path / "value", manifest)
    assert adapters.read_manifest(saved).task_type == "SEQ_CLS"
    torch.testing.assert_close(stage_scores(saved, NF4, sequences, tokenizer), trained, atol=1e-4, rtol=0)


def test_adapter_on_wrong_base_is_refused(reward_adapter):
    other_base = loading.load_model(margs("tiny-qwen2", FP32))
    with pytest.raises(UserError, match="was trained on base 'tiny-llama'"):
        heads.attach_scalar_adapter(other_base, "reward", reward_adapter)


def test_causal_adapter_is_not_a_reward_adapter(reward_adapter, tmp_path):
    target = tmp_path / "causal"
    shutil.copytree(reward_adapter, target)
    config = json.loads((target / "adapter_config.json").read_text())
    (target / "adapter_config.json").write_text(json.dumps({**config, "task_type": "CAUSAL_LM"}))
    with pytest.raises(UserError, match="not a reward"):
        heads.attach_scalar_adapter(loading.load_model(margs("tiny-llama", FP32)), "reward", target)
