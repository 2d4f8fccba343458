"""One reward adapter from several: the members' weights averaged (WARM, Ramé et al. 2024, "Weight Averaged Reward
Models"), so RL and eval score with one adapter and one forward pass, not one per member as a score ensemble needs.

Members are reward adapters trained on the same labels from the same base (different seeds). Averaging LoRA factors
A and B separately would not average the members' weight updates (B·A is not linear in the pair); concatenating them
does, exactly: PEFT's `add_weighted_adapter(..., combination_type="cat")` stacks each member's A (scaled by its
weight 1/K and its own alpha/r) and B into one LoRA of rank K·r, whose update is (1/K)·Σ_k scale_k·B_k·A_k. The heads
are linear, so the averaged head is the mean of the members' heads. The averaged model is not the mean of the
members' scores (their hidden states differ); what it buys is measured in bench/alignment.py (`reward ... --seeds`:
`weight_averaged` beside the score ensemble). `workbench reward average` checks that there are 2 or more members.
"""

from __future__ import annotations

from pathlib import Path

from workbench.errors import UserError

AVERAGED = "averaged"


def average_reward_adapters(members: list, out_dir, args):
    """Write the weight average of reward adapter folders `members` to `out_dir` (a reward adapter folder like any
    other, with a manifest whose parents are the members). `args`: ModelArguments placing the base (device)."""
    import torch

    from workbench.modeling import adapters, heads, loading
    from workbench.modeling.arguments import from_manifest

    manifests = [adapters.read_manifest(path, "SEQ_CLS", f"member {path}") for path in members]
    methods = {manifest.peft_method for manifest in manifests}
    if methods != {"lora"}:
        raise UserError(f"averaging needs LoRA reward adapters; the members are {sorted(methods)}")
    layers = {manifest.extra.get("head", {}).get("layer") for manifest in manifests}  # reward_layer
    if len(layers) > 1:
        found = ", ".join(str(layer or "all") for layer in sorted(layers, key=lambda layer: layer or 0))
        raise UserError(f"averaging needs reward adapters that read the same decoder layer; the members read {found}")
    model = loading.load_model(from_manifest(manifests[0].base_model, args))
    names = [f"member_{index}" for index in range(len(members))]
    for name, path in zip(names, members):  # each checks that its manifest names the same base weights
        model = heads.attach_scalar_adapter(model, name, path, trainable=False)
    weight = 1.0 / len(members)
    model.add_weighted_adapter(names, [weight] * len(members), AVERAGED, combination_type="cat")
    head = torch.nn.Linear(model.workbench_heads[names[0]].in_features, 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.stack([model.workbench_heads[name].weight for name in names]).mean(dim=0))
    model.workbench_heads[AVERAGED] = head.to(model.workbench_heads[names[0]].weight.device)
    first = manifests[0]
    manifest = adapters.AdapterManifest(
        stage="reward",
        base_model=first.base_model,
        peft_method="lora",
        parents=[
            {"kind": "adapter", "stage": m.stage, "path": str(Path(path).resolve()), "role": "member"}
            for path, m in zip(members, manifests)
        ],
        data_fingerprint=first.data_fingerprint,
        metrics={"members": [manifest.metrics for manifest in manifests]},
        extra={
            "averaged": {"members": len(members), "combination": "cat", "weight": weight},
            "head": first.extra.get("head", {}),
        },
    )
    return heads.save_scalar_adapter(model, AVERAGED, out_dir, manifest)
