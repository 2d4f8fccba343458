"""Atomic outputs: a folder or file appears whole or not at all, so nothing half-written looks finished."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_directory(target: str | Path):
    """Yield a staging folder beside `target`; on success it replaces `target` whole, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def write_json_atomic(path: str | Path, payload) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def checkpoint_to_resume(output_dir: str | Path, resume: bool, overwrite: bool, stage: str) -> str | None:
    """The checkpoint a stage continues from; refuses to clobber checkpoints unless told --resume or --overwrite."""
    from transformers.trainer_utils import get_last_checkpoint

    from workbench.errors import UserError

    output_dir = Path(output_dir)
    last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
    if last and not (resume or overwrite):
        raise UserError(f"{output_dir} holds {Path(last).name}: pass --resume to continue or --overwrite")
    if resume and not last:
        print(f"workbench {stage}: no checkpoint in {output_dir}; starting from the beginning")
    return last if resume else None
