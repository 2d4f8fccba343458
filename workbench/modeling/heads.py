"""Scalar heads (reward, value) on a causal-LM base: the reward adapter as one more named adapter on the PPO base.

The reward stage trains a PEFT sequence-classification adapter: LoRA weights plus the `score` head (a bias-free
`Linear(hidden, 1)` saved through `modules_to_save`). Loading that onto `AutoModelForSequenceClassification` needs a
second copy of the base; here the LoRA weights join the single causal-LM base under their own adapter name and the
head lives beside it in `model.workbench_heads[name]`. The score is computed exactly as
`LlamaForSequenceClassification` computes it: the decoder's final hidden state at the last real token, times the head.
A reward model trained on its base's first N decoder layers (the reward stage's `reward_layer`) records N in its
manifest; its head then reads the decoder run to layer N (`reading_layer`), as the truncated model computed it.

PEFT has no notion of a head that lives outside the wrapped model's own modules (its `modules_to_save` needs a
`score` module in the base), hence this small module.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

from workbench.errors import UserError
from workbench.modeling import adapters

HEAD_MODULE = "score"  # the attribute name transformers' *ForSequenceClassification models give their head
HEAD_KEY = f"base_model.model.{HEAD_MODULE}.weight"  # where PEFT saves a modules_to_save head in the adapter file
WEIGHTS_FILE = "adapter_model.safetensors"
CONFIG_FILE = "adapter_config.json"


def _heads(model):
    import torch

    if "workbench_heads" not in model._modules:
        model.workbench_heads = torch.nn.ModuleDict()
    return model.workbench_heads


def _device(model):
    return next(p.device for p in model.parameters())


def attach_scalar_adapter(model, name: str, adapter_dir, trainable: bool = False):
    """Load a reward (SEQ_CLS) adapter as adapter `name` onto a causal-LM base, its head into a float32 Linear.

    `model` is a plain model from `loading.load_model(head="causal_lm")` or a PeftModel already carrying adapters;
    returns the PeftModel (keep using it). The adapter's manifest must name the same base weights.
    """
    from peft import PeftConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    adapter_dir = Path(adapter_dir)
    manifest = adapters.read_manifest(adapter_dir)
    base_info = getattr(model, "workbench_base", None)
    if base_info is None:
        raise UserError("attach_scalar_adapter needs a base loaded through workbench.modeling.loading.load_model")
    adapters.check_base(manifest, base_info, adapter_dir)
    config = PeftConfig.from_pretrained(str(adapter_dir))
    if str(getattr(config.task_type, "value", config.task_type)) != "SEQ_CLS":
        raise UserError(f"{adapter_dir} is a {config.task_type} adapter, not a reward (SEQ_CLS) adapter with a head")
    weights = load_file(str(adapter_dir / WEIGHTS_FILE))
    if HEAD_KEY not in weights:
        raise UserError(f"{adapter_dir / WEIGHTS_FILE} holds no `{HEAD_MODULE}` head ({HEAD_KEY})")
    head_weight = weights.pop(HEAD_KEY)
    layer = manifest.extra.get("head", {}).get("layer")
    if layer is not None:  # a head on layer N depends on layers 0..N-1 alone: any LoRA above (a critic saved with
        # the whole reference LoRA) is left out
        weights = {key: value for key, value in weights.items() if (adapters.layer_index(key) or 0) < layer}
    # On a causal LM the LoRA layers are the same modules; the head is ours, not PEFT's.
    config = dataclasses.replace(config, task_type="CAUSAL_LM", modules_to_save=None, inference_mode=not trainable)
    if layer is not None:  # trained on the first `layer` decoder layers: its LoRA exists only there
        config = dataclasses.replace(config, layers_to_transform=list(range(layer)))
    was_training = model.training
    model = adapters.attach(model, name, config=config, trainable=trainable)
    model.train(was_training)  # new LoRA modules start in training mode (dropout on); keep the model's mode
    result = set_peft_model_state_dict(model, weights, adapter_name=name)
    unexpected = [key for key in result.unexpected_keys if name in key or "lora_" in key]
    missing = [key for key in result.missing_keys if f".{name}." in key]
    if unexpected or missing:
        raise UserError(
            f"{adapter_dir}: adapter weights do not fit the base: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    if not trainable:
        adapters.freeze(model, name)
    hidden = model.get_base_model().config.get_text_config().hidden_size
    if tuple(head_weight.shape) != (1, hidden):
        raise UserError(f"{adapter_dir}: head shape {tuple(head_weight.shape)} does not fit hidden size {hidden}")
    add_head(model, name, head_weight, trainable).reads_layer = layer
    return model


def add_head(model, name: str, weight, trainable: bool):
    """A float32 bias-free `Linear(hidden, 1)` holding a copy of `weight` [1, hidden], as `model.workbench_heads[name]`
    (a head with no LoRA of its own: PPO's critic on the reference's features, workbench/rl/rollout.py)."""
    import torch

    head = torch.nn.Linear(weight.shape[1], 1, bias=False, dtype=torch.float32, device=_device(model))
    with torch.no_grad():
        head.weight.copy_(weight.to(torch.float32))
    head.weight.requires_grad_(trainable)
    _heads(model)[name] = head
    return head


def head_values(model, name: str, hidden):
    """Head `name` applied to final hidden states [batch, tokens, hidden]: Tensor[batch, tokens] in float32."""
    head = model.workbench_heads[name]
    return head(hidden.to(head.weight.dtype)).squeeze(-1)


def head_layer(model, name: str) -> int | None:
    """The decoder layer head `name` reads (`reads_layer`: a reward_layer model's, or its critic copy's), None for the
    last layer or no such head."""
    heads = model._modules.get("workbench_heads")
    return getattr(heads[name], "reads_layer", None) if heads is not None and name in heads else None


@contextmanager
def reading_layer(model, name: str):
    """Within it, the decoder runs only as many layers as head `name` reads (`reads_layer`, from the reward manifest's
    head layer; all of them otherwise): its output is the final norm of layer N's output, what the reward stage's
    model truncated to N layers computes. Transformers' decoders run `layers[: config.num_hidden_layers]`."""
    layer = head_layer(model, name)
    config = model.get_base_model().get_decoder().config
    full = config.num_hidden_layers
    if layer is None or layer == full:
        yield
        return
    if not 0 < layer < full:
        raise UserError(f"head {name!r} reads decoder layer {layer}; this base has layers 1 to {full}")
    config.num_hidden_layers = layer
    try:
        yield
    finally:
        config.num_hidden_layers = full


def final_hidden_states(model, name: str, input_ids, attention_mask):
    """The decoder's last hidden state [batch, seq, hidden] with adapter `name` active (no LM head is computed).

    Position ids follow the attention mask, so left- and right-padded batches give the same values at real tokens
    (with right padding they equal the default positions, as in the reward stage's own model).
    """
    import torch

    from workbench.modeling.loading import recomputes_activations
    from workbench.modeling.tokens import position_ids_from_mask

    if torch.is_grad_enabled() and model.training and recomputes_activations(model) and model.active_adapter != name:
        # Backward would recompute every layer under the adapter active THEN (the one restored on leaving here):
        # the wrong adapter's activations, its LoRA weights given the gradient, and `name`'s none.
        raise RuntimeError(
            f"adapter {name!r} on a gradient-checkpointed model: run its forward and its backward inside "
            f"adapters.use_adapter(model, {name!r}) (active now: {model.active_adapter!r})"
        )
    position_ids = position_ids_from_mask(attention_mask)
    with adapters.use_adapter(model, name), reading_layer(model, name):
        decoder = model.get_base_model().get_decoder()
        output = decoder(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
        )
    return output.last_hidden_state


def token_values(model, name: str, input_ids, attention_mask):
    """The head of adapter `name` applied at every position: Tensor[batch, seq] in float32 (PPO's value function)."""
    return head_values(model, name, final_hidden_states(model, name, input_ids, attention_mask))


def last_token_index(attention_mask):
    """Index of the last real token of each row (the rightmost mask==1), as *ForSequenceClassification picks it."""
    import torch

    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.to(positions.dtype)).argmax(-1)


def scalar_scores(model, name: str, input_ids, attention_mask):
    """One score per sequence: the head of adapter `name` on the final hidden state of the last real token."""
    import torch

    head = model.workbench_heads[name]
    hidden = final_hidden_states(model, name, input_ids, attention_mask)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    last = hidden[rows, last_token_index(attention_mask).to(hidden.device)]
    return head(last.to(head.weight.dtype)).squeeze(-1)


def save_scalar_adapter(
    model, name: str, out_dir, manifest: adapters.AdapterManifest, head: str | None = None
) -> Path:
    """Save adapter `name` and its head in the reward stage's layout (a SEQ_CLS PEFT adapter with `score`); the head
    is `model.workbench_heads[head or name]` (PPO's critic on the reference's features: the `ref` LoRA, the `value`
    head)."""
    from safetensors.torch import load_file, save_file

    from workbench.fileio import atomic_directory, write_json_atomic

    manifest.task_type = "SEQ_CLS"
    with atomic_directory(out_dir) as staging:
        adapters.save(model, name, staging, manifest)
        config = json.loads((staging / CONFIG_FILE).read_text())
        config.update(task_type="SEQ_CLS", modules_to_save=["classifier", HEAD_MODULE], inference_mode=True)
        write_json_atomic(staging / CONFIG_FILE, config)
        weights = load_file(str(staging / WEIGHTS_FILE))
        weights[HEAD_KEY] = model.workbench_heads[head or name].weight.detach().to("cpu").contiguous().clone()
        save_file(weights, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
    return Path(out_dir)
