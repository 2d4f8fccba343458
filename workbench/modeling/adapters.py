"""THE adapter management module: the PEFT config from a stage's `ModelArguments` (`get_peft_config`), named
adapters on one base (attach, switch, freeze, save, load, merge), and the `workbench.json` manifest beside each.

Several named adapters share one (quantized) base: the PPO stage carries `policy`, `ref`, `reward` and `value` on a
single copy of the weights. A manifest records the base an adapter was trained on; loading it onto another base fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from workbench.errors import UserError
from workbench.fileio import atomic_directory, write_json_atomic
from workbench.modeling.arguments import ModelArguments, base_of, from_manifest

MANIFEST_NAME = "workbench.json"
PEFT_METHODS = ("lora", "prompt_tuning", "ia3")


@dataclass
class AdapterManifest:
    """Lineage of an adapter: its base and quantization, parents and data, what it scored, where it was logged."""

    stage: str
    base_model: dict
    peft_method: str
    task_type: str = "CAUSAL_LM"
    parents: list[dict] = field(default_factory=list)
    data_fingerprint: str | None = None
    metrics: dict = field(default_factory=dict)
    wandb_run: dict | None = None
    code_version: str = ""
    created_at: str = ""
    extra: dict = field(default_factory=dict)

    def write(self, directory: str | Path) -> Path:
        self.created_at = self.created_at or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.code_version = self.code_version or code_version()
        target = Path(directory) / MANIFEST_NAME
        write_json_atomic(target, asdict(self))
        return target


def code_version() -> str:
    from workbench import __version__

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__}+{commit}" if commit else __version__


ROLES = {"CAUSAL_LM": "policy", "SEQ_CLS": "reward or value model"}


def read_manifest(
    adapter_dir: str | Path, task_type: str | None = None, what: str = "adapter", weights: bool = True
) -> AdapterManifest:
    """The adapter's manifest, once its folder is checked: the manifest readable, with `weights` (the caller loads
    the adapter) PEFT's adapter_config.json too, and with `task_type` the role it is given in (`what`, a recipe key)
    matching what it was trained as (a reward adapter is no policy)."""
    path = Path(adapter_dir) / MANIFEST_NAME
    if not path.is_file():
        found = "no such folder" if not Path(adapter_dir).exists() else "none (not an adapter the workbench wrote)"
        raise UserError(f"{what} {adapter_dir}: expected {MANIFEST_NAME}, found {found}")
    try:
        manifest = AdapterManifest(**json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: expected an adapter manifest, found an unreadable one ({error})") from error
    if task_type is not None and manifest.task_type != task_type:
        raise UserError(
            f"{what} {adapter_dir}: expected a {ROLES.get(task_type, task_type)} adapter ({task_type}), found a "
            f"{ROLES.get(manifest.task_type, manifest.task_type)} adapter ({manifest.task_type}, written by "
            f"`workbench {manifest.stage}`)"
        )
    config = Path(adapter_dir) / "adapter_config.json"
    try:
        if weights and not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError as error:
        raise UserError(f"{what} {adapter_dir}: expected adapter_config.json (PEFT's), found none") from error
    except (ValueError, UnicodeDecodeError) as error:  # JSONDecodeError is a ValueError
        raise UserError(f"{config}: expected PEFT's adapter config (a JSON object), found {error}") from error
    return manifest


def read_policy_manifest(policy_adapter: str | None, sft_adapter: str, sft_manifest: AdapterManifest):
    """The manifest of an RL stage's `policy_adapter` (a later round continues an earlier policy), or None when the
    recipe names none: a policy adapter that continues the SFT adapter must be of its kind (LoRA on LoRA)."""
    if not policy_adapter:
        return None
    manifest = read_manifest(policy_adapter, "CAUSAL_LM", "policy_adapter")
    if manifest.peft_method != sft_manifest.peft_method:
        raise UserError(
            f"policy_adapter {policy_adapter} is a {manifest.peft_method} adapter; sft_adapter {sft_adapter} is "
            f"{sft_manifest.peft_method}: the policy continues the SFT adapter's kind"
        )
    return manifest


def get_peft_config(args: ModelArguments, task_type: str = "CAUSAL_LM"):
    """The PEFT config the adapter keys of `args` ask for (None when `use_peft` is false: the full model trains).

    `task_type` is the stage's (CAUSAL_LM for a policy, SEQ_CLS for a reward model), not a recipe key. `all-linear`
    lets PEFT find every linear layer but the output head.
    """
    from peft import IA3Config, LoraConfig, PromptTuningConfig, PromptTuningInit, TaskType

    if not args.use_peft:
        return None
    if task_type not in TaskType.__members__:
        raise ValueError(f"task_type must be one of {list(TaskType.__members__)}; got {task_type!r}")
    method, targets = args.peft_method, args.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # PEFT knows the shorthand only as a string; a one-name list stays a name (not a regex)
    if method == "lora":
        if args.lora_r <= 0:
            raise UserError(f"lora_r must be a positive integer; got {args.lora_r}")
        if not 0.0 <= args.lora_dropout < 1.0:
            raise UserError(f"lora_dropout must be in [0, 1); got {args.lora_dropout}")
        return LoraConfig(
            task_type=task_type,
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=targets or "all-linear",
            modules_to_save=args.lora_modules_to_save,
            use_rslora=args.use_rslora,
            use_dora=args.use_dora,
            bias="none",
        )
    if method == "ia3":
        # IA3 needs to know which targets are feed-forward; PEFT's per-architecture defaults know that.
        targets = None if targets in (None, "all-linear") else targets
        return IA3Config(task_type=task_type, target_modules=targets, modules_to_save=args.lora_modules_to_save)
    if method == "prompt_tuning":
        if args.num_virtual_tokens < 1:
            raise UserError(f"num_virtual_tokens must be a positive integer; got {args.num_virtual_tokens}")
        if args.prompt_tuning_init_text:
            from workbench.modeling.loading import resolve_model_path

            return PromptTuningConfig(
                task_type=task_type,
                num_virtual_tokens=args.num_virtual_tokens,
                prompt_tuning_init=PromptTuningInit.TEXT,
                prompt_tuning_init_text=args.prompt_tuning_init_text,
                tokenizer_name_or_path=resolve_model_path(base_of(args).model_name_or_path)[0],
            )
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=args.num_virtual_tokens)
    raise UserError(f"peft_method must be one of {PEFT_METHODS}; got {method!r}")


def check_base(manifest: AdapterManifest, base_info, adapter_dir: str | Path) -> None:
    """Refuse an adapter trained on other weights: same architecture is not enough, the weights must be the same."""
    expected = manifest.base_model.get("content_hash")
    actual = base_info.content_hash
    if expected != actual:
        raise UserError(
            f"adapter {adapter_dir} was trained on base {manifest.base_model.get('name_or_path')!r} "
            f"({expected}), but the loaded base is {base_info.name_or_path!r} ({actual}); "
            "load the adapter onto the base named in its workbench.json"
        )


def _frozen(model) -> set:
    if not hasattr(model, "workbench_frozen"):
        model.workbench_frozen = set()
    return model.workbench_frozen


def attach(model, name: str, *, config=None, path: str | Path | None = None, trainable: bool = True):
    """Attach adapter `name` to a base (or to a PeftModel already carrying others) and make it the active one.

    Give either a PEFT `config` (a new adapter) or a `path` written by `save` (checked against the base first).
    Returns the PeftModel; keep using the returned object.
    """
    from peft import PeftModel, get_peft_model

    if (config is None) == (path is None):
        raise ValueError("attach needs exactly one of config= or path=")
    base_info = getattr(model, "workbench_base", None)
    if path is not None:
        manifest = read_manifest(path)
        if base_info is not None:
            check_base(manifest, base_info, path)
    is_peft = isinstance(model, PeftModel)
    if is_peft and name in model.peft_config:
        raise UserError(f"an adapter named {name!r} is already attached; attached: {sorted(model.peft_config)}")
    if config is not None:
        if is_peft:
            model.add_adapter(name, config)
        else:
            model = get_peft_model(model, config, adapter_name=name)
    elif is_peft:
        model.load_adapter(str(path), adapter_name=name, is_trainable=trainable)
    else:
        model = PeftModel.from_pretrained(model, str(path), adapter_name=name, is_trainable=trainable)
    if base_info is not None:
        model.workbench_base = base_info
    if not trainable:
        _frozen(model).add(name)
    ia3_keeps_input_dtype(model)
    switch(model, name)
    return model


def ia3_keeps_input_dtype(model) -> int:
    """Make peft's k-bit IA3 layers return their input's dtype; returns how many layers got the hook. Our own code
    around a peft 0.21 bug: outside autocast, `ia3.bnb.Linear4bit` (and `Linear8bitLt`) casts a 16-bit input to
    float32 and returns float32, so on a bf16 base an IA3 k_proj or v_proj hands attention float32 keys beside bf16
    queries (SDPA refuses the mix) and an IA3 down_proj turns the residual stream float32."""
    from peft.tuners.ia3 import bnb as ia3_bnb

    kinds = tuple(getattr(ia3_bnb, kind) for kind in ("Linear4bit", "Linear8bitLt") if hasattr(ia3_bnb, kind))
    hooked = 0
    for module in model.modules():
        if kinds and isinstance(module, kinds) and not getattr(module, "_workbench_keeps_dtype", False):
            module.register_forward_hook(lambda layer, args, output: output.to(args[0].dtype))
            module._workbench_keeps_dtype = True
            hooked += 1
    return hooked


LORA_SHAPE_KEYS = ("r", "lora_alpha", "use_rslora", "use_dora")


def layer_index(key: str) -> int | None:
    """The decoder layer a weight name belongs to (`...layers.7.self_attn...` -> 7), None outside the layers."""
    match = re.search(r"\.layers\.(\d+)\.", key)
    return int(match.group(1)) if match else None


def init_lora_from(model, name: str, source: str | Path, heads: bool = False) -> int:
    """Copy the LoRA weights of the adapter saved in `source` into the freshly attached adapter `name`.

    InstructGPT starts its reward model from the SFT model; on one 4-bit base the same start is the reward LoRA
    initialised with the SFT LoRA (same rank, alpha and target modules), while the heads (`modules_to_save`, e.g. the
    reward's `score`) keep their fresh initialisation. With `heads`, the saved heads are copied too: a reward model
    warm-started from an earlier reward model (the last labeling round's) starts as that model, LoRA and score head.
    Returns the number of tensors copied; a LoRA of another shape or with no layer in common, or (with `heads`) a head
    missing on either side, is refused.
    """
    import torch
    from peft.utils import load_peft_weights

    source = Path(source)
    try:
        saved = json.loads((source / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"{source}/adapter_config.json: expected a PEFT adapter config; {error}") from None
    config = model.peft_config[name]
    if str(saved.get("peft_type", "")).upper() != "LORA" or config.peft_type.value != "LORA":
        raise UserError(f"{source}: only a LoRA adapter can initialise a LoRA; found {saved.get('peft_type')!r}")
    for key in LORA_SHAPE_KEYS:
        if saved.get(key, False) != getattr(config, key):
            raise UserError(
                f"{source}/adapter_config.json: {key} is {saved.get(key)!r}; the adapter it initialises has "
                f"{getattr(config, key)!r} (use the same LoRA settings in both recipes)"
            )
    saved_tensors = load_peft_weights(str(source), device="cpu")
    weights = {k: v for k, v in saved_tensors.items() if "lora_" in k}
    if not weights:
        raise UserError(f"{source}: the adapter holds no LoRA weights")
    layers = model.get_base_model().config.get_text_config().num_hidden_layers
    # a model cut to its first layers (the reward stage's reward_layer) starts from the source's LoRA on those layers
    weights = {k: v for k, v in weights.items() if (layer_index(k) or 0) < layers}
    # saved: ...q_proj.lora_A.weight; attached: ...q_proj.lora_A.<name>.weight (PEFT's naming)
    own = {k: p for k, p in model.named_parameters() if "lora_" in k and f".{name}." in k}
    if len(own) != len(weights):
        raise UserError(
            f"{source}: holds {len(weights)} LoRA tensors, adapter {name!r} has {len(own)}; both adapters must "
            "target the same modules of the same base"
        )
    with torch.no_grad():
        for key, value in weights.items():
            stem, leaf = key.rsplit(".", 1)
            target = own.get(f"{stem}.{name}.{leaf}")
            if target is None or target.shape != value.shape:
                raise UserError(
                    f"{source}: LoRA tensor {key} has no counterpart of shape {tuple(value.shape)} in adapter "
                    f"{name!r}; both adapters must target the same modules of the same base"
                )
            target.copy_(value.to(target.dtype))
    if not heads:
        return len(weights)
    # saved: ...score.weight; attached: ...score.modules_to_save.<name>.weight (PEFT's ModulesToSaveWrapper)
    saved_heads = {k: v for k, v in saved_tensors.items() if "lora_" not in k}
    own_heads = {k: p for k, p in model.named_parameters() if f".modules_to_save.{name}." in k}
    wanted = {f"{k.rsplit('.', 1)[0]}.modules_to_save.{name}.{k.rsplit('.', 1)[1]}": k for k in saved_heads}
    if set(wanted) != set(own_heads):
        missing = sorted(set(own_heads) - set(wanted)) or sorted(set(wanted) - set(own_heads))
        raise UserError(
            f"{source}: its heads ({', '.join(sorted(saved_heads)) or 'none'}) do not match adapter {name!r}'s "
            f"trainable heads (first difference: {missing[0]}); a warm start needs a reward adapter of the same kind"
        )
    with torch.no_grad():
        for key, saved_key in wanted.items():
            if own_heads[key].shape != saved_heads[saved_key].shape:
                raise UserError(
                    f"{source}: head {saved_key} has shape {tuple(saved_heads[saved_key].shape)}; adapter {name!r}'s "
                    f"has {tuple(own_heads[key].shape)} (another base?)"
                )
            own_heads[key].copy_(saved_heads[saved_key].to(own_heads[key].dtype))
    return len(weights) + len(wanted)


def switch(model, name: str) -> None:
    """Make `name` the active adapter; frozen adapters stay frozen (PEFT's set_adapter would unfreeze them)."""
    if name not in model.peft_config:
        raise UserError(f"no adapter named {name!r}; attached: {sorted(model.peft_config)}")
    if getattr(model, "workbench_folded", None) == name:
        return  # active and folded in (folded_for_inference): PEFT's set_adapter would unfold it
    model.workbench_folded = None  # set_adapter unfolds whatever is folded
    model.set_adapter(name, inference_mode=name in _frozen(model))


@contextlib.contextmanager
def use_adapter(model, name: str):
    """Run a block with `name` active, then restore the adapter that was active before."""
    previous = model.active_adapter
    switch(model, name)
    try:
        yield model
    finally:
        switch(model, previous)


def _foldable_lora_layers(model) -> list:
    """The LoRA layers of the active adapter when folding it into the base is exact to undo and worth it: a plain
    LoRA (no DoRA), enabled (not inside `disable_adapter()`), not already merged, over float32 `nn.Linear` weights on
    the CPU. Otherwise [] (a 4-bit or 8-bit base would be re-quantized by a merge, a bf16 one rounded; on a GPU the
    extra LoRA kernels cost little next to the base's)."""
    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    if not isinstance(model, PeftModel) or model.peft_config[model.active_adapter].peft_type.value != "LORA":
        return []
    name = model.active_adapter
    if model.peft_config[name].use_dora:
        return []
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and name in m.lora_A]
    for layer in layers:
        base = layer.get_base_layer()
        if layer.disable_adapters or layer.merged or type(base) is not torch.nn.Linear:
            return []
        if base.weight.dtype != torch.float32 or base.weight.device.type != "cpu":
            return []
    return layers


@contextlib.contextmanager
def folded_for_inference(model):
    """Run a block of inference with the active LoRA adapter folded into the base weights, then put every base weight
    back bit for bit (restored from a copy, not subtracted). A no-op where `_foldable_lora_layers` finds nothing.

    Why: on the CPU an unfolded LoRA on every linear layer adds two small matmuls and their bookkeeping to each of
    them at every decoding step (bench/generation_speed.py measures the difference). The folded weights compute
    x (W + s B A) instead of x W + s (x A) B: the same function up to float32 rounding.
    """
    import torch

    layers = _foldable_lora_layers(model)
    if not layers:
        yield model
        return
    with torch.no_grad():
        weights = [layer.get_base_layer().weight for layer in layers]
        originals = [(weight, weight.detach().clone()) for weight in weights]
        model.base_model.merge_adapter([model.active_adapter])
        model.workbench_folded = model.active_adapter
    try:
        yield model
    finally:
        model.workbench_folded = None
        with torch.no_grad():
            model.base_model.unmerge_adapter()
            for weight, original in originals:
                weight.copy_(original)


def freeze(model, name: str) -> None:
    _frozen(model).add(name)
    for parameter_name, parameter in model.named_parameters():
        if f".{name}." in parameter_name or parameter_name.endswith(f".{name}"):
            parameter.requires_grad_(False)


def trainable_parameters(model, name: str) -> int:
    """Trainable parameters that belong to adapter `name`."""
    return sum(
        p.numel()
        for n, p in model.named_parameters()
        if p.requires_grad and (f".{name}." in n or n.endswith(f".{name}"))
    )


def save(model, name: str, out_dir: str | Path, manifest: AdapterManifest, tokenizer=None, extra=None) -> Path:
    """Save adapter `name` (PEFT files + manifest, and the tokenizer if given) into `out_dir`, replaced whole once
    everything is written; `extra(folder)` may write more files into it first."""
    with atomic_directory(out_dir) as staging:
        if extra is not None:
            extra(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        model.save_pretrained(staging, selected_adapters=[name])
        # PEFT writes every adapter but "default" into a sub-folder named after it; one adapter, one folder.
        nested = staging / name
        if name != "default" and nested.is_dir():
            for item in nested.iterdir():
                shutil.move(str(item), staging / item.name)
            nested.rmdir()
        manifest.write(staging)
    return Path(out_dir)


def merge_and_unload(model):
    """Fold the active LoRA/IA3 adapter into the base weights and return a plain transformers model."""
    method = model.peft_config[model.active_adapter].peft_type.value
    if method not in ("LORA", "IA3"):
        raise UserError(f"a {method} adapter adds virtual tokens and cannot be merged into the weights")
    return model.merge_and_unload()


def load_with_adapter(
    adapter_dir: str | Path,
    args: ModelArguments,
    *,
    name: str = "default",
    trainable: bool = False,
    manifest_precision: bool = False,
    padding_side: str = "right",
    task_type: str | None = None,
    what: str = "adapter",
):
    """The adapter's base plus the adapter: (model, tokenizer, manifest).

    The base is the one named in the adapter's manifest unless `args` names one (which must hold the same weights).
    Precision comes from `args`, or with `manifest_precision` from the manifest (the adapter's own training
    precision: a reward model scores as the reward stage trained it). A reward (SEQ_CLS) adapter gets its scalar head.
    `task_type` (with `what`, the recipe key): the role the caller needs, checked before anything loads.
    """
    from workbench.modeling import loading

    manifest = read_manifest(adapter_dir, task_type, what)
    if manifest_precision:
        args = from_manifest(manifest.base_model, args)
    else:
        args = base_of(args, manifest.base_model)
    tokenizer = loading.load_tokenizer(args, padding_side=padding_side)
    head = "scalar" if manifest.task_type == "SEQ_CLS" else "causal_lm"
    layers = manifest.extra.get("head", {}).get("layer") if head == "scalar" else None  # a reward_layer model
    model = loading.load_model(
        args, head=head, for_training=trainable, pad_token_id=tokenizer.pad_token_id, num_hidden_layers=layers
    )
    return attach(model, name, path=adapter_dir, trainable=trainable), tokenizer, manifest


class ResumeKeepsAdapterDtype:
    """Trainer mixin: a resumed run continues training its adapter in the dtype it was checkpointed in.

    TRL trains QLoRA adapters in bf16 (it casts them after `get_peft_model`), but on `resume_from_checkpoint` the
    Trainer reloads them with PEFT's `load_adapter`, which upcasts to fp32: the resumed run would then diverge from an
    uninterrupted one. We put the dtypes back before the optimizer (and its bf16 state) is rebuilt.

    With several adapters on the base (DPO's trained `default` beside its frozen `ref`), transformers 5.17's Trainer
    reloads only the subfolders (`ref/`) and never the checkpoint's root adapter, which is `default`: the resumed run
    went on from the SFT adapter with the optimizer state of the checkpoint (5.23 reloads it). We reload it here; where
    the Trainer already did, the same weights are loaded twice.
    """

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        target = model if model is not None else self.model
        dtypes = {name: p.dtype for name, p in target.named_parameters() if p.requires_grad}
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        root = Path(resume_from_checkpoint) / "adapter_model.safetensors"
        if len(getattr(target, "peft_config", {})) > 1 and "default" in target.peft_config and root.exists():
            target.load_adapter(resume_from_checkpoint, "default", is_trainable=True)
            target.set_adapter("default")
        for name, parameter in target.named_parameters():
            if name in dtypes and parameter.dtype != dtypes[name]:
                parameter.data = parameter.data.to(dtypes[name])
