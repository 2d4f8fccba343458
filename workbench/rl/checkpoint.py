"""PPO checkpoints that resume exactly: trained tensors, optimizer, trainer state and every random state.

A checkpoint is the folder `checkpoint-<step>/`:

    trainable.safetensors   every trained tensor (policy LoRA, value LoRA, value head), in the dtype it trains in
    optimizer.pt            the optimizer's state_dict (AdamW moments or bitsandbytes 8-bit states)
    state.json              step, KL controller, prompt-stream position, metrics history (anything JSON)
    rng-<rank>.pt           python, numpy, torch CPU/CUDA RNG states and the named torch.Generator states, per process
    complete                written last: a folder without it (a killed save) is ignored

It is built in a hidden sibling folder and renamed into place, so a `kill -9` never leaves a half-written checkpoint
that looks finished. (TRL 1.12's PPOTrainer could not resume at all: huggingface/trl PR #7020.)
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import torch

from workbench.errors import UserError
from workbench.fileio import atomic_directory

PATTERN = re.compile(r"^checkpoint-(\d+)$")
MARKER = "complete"


def rng_state(generators: dict[str, torch.Generator]) -> dict:
    import numpy as np

    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, generators: dict[str, torch.Generator]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    directory = Path(output_dir)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := PATTERN.match(p.name))]
    return [p for _, p in sorted(found) if (p / MARKER).exists()]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    state: dict,
    generators: dict[str, torch.Generator],
    rank: int = 0,
    is_main: bool = True,
    keep: int | None = None,
) -> Path:
    """Write `checkpoint-<step>` (main process: tensors, optimizer, state; every process: its RNG file).

    With several processes, call it on all of them and wait for everyone before the main one finishes: the main
    process writes its files into the staging folder, every rank its RNG file into `rng-staging/`. Here (one process
    per machine holding the whole model) the simple path is the common one.
    """
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    target = output_dir / f"checkpoint-{step}"
    output_dir.mkdir(parents=True, exist_ok=True)
    if not is_main:
        # Non-main processes only contribute their RNG state, next to the checkpoint, atomically.
        temporary = output_dir / f".rng-{step}-{rank}.pt.tmp"
        torch.save(rng_state(generators), temporary)
        os.replace(temporary, output_dir / f".rng-{step}-{rank}.pt")
        return target
    with atomic_directory(target) as staging:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, staging / "trainable.safetensors")
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        (staging / "state.json").write_text(json.dumps(state, indent=2, default=float) + "\n")
        torch.save(rng_state(generators), staging / f"rng-{rank}.pt")
        (staging / MARKER).write_text("ok\n")
    if keep:
        for old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(
    checkpoint: str | Path,
    tensors: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    generators: dict[str, torch.Generator],
    rank: int = 0,
) -> dict:
    """Copy a checkpoint back into the live tensors, optimizer and RNGs; returns its `state.json`."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    saved = load_file(checkpoint / "trainable.safetensors")
    missing, unexpected = sorted(set(tensors) - set(saved)), sorted(set(saved) - set(tensors))
    if missing or unexpected:
        raise ValueError(f"{checkpoint} does not match this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, tensor in tensors.items():
            tensor.copy_(saved[name].to(tensor.dtype))
    try:
        optimizer.load_state_dict(torch.load(checkpoint / "optimizer.pt", weights_only=False))
    except ValueError as error:  # e.g. a checkpoint of an older workbench: one parameter group, not policy + value
        raise UserError(
            f"{checkpoint}/optimizer.pt does not fit this run's optimizer ({error}); it was written by another "
            "version or recipe: start again with --overwrite"
        ) from None
    rng_file = checkpoint / f"rng-{rank}.pt"
    if not rng_file.exists():
        rng_file = checkpoint.parent / f".rng-{checkpoint.name.split('-')[-1]}-{rank}.pt"
    restore_rng_state(torch.load(rng_file, weights_only=False), generators)
    return json.loads((checkpoint / "state.json").read_text())
