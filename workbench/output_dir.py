"""A stage's output folder before any work: never clobber a finished result, resume or start afresh when told.

Every stage that writes a folder takes `OverwriteArguments` (or `ResumeArguments` where it has checkpoints) and calls
`prepare_output_dir` first, before it loads a model or writes its `recipe.yaml`:

- a folder holding a finished result (the stage's `finished` files) is refused unless `--overwrite` (or `--resume`
  with a checkpoint to continue from);
- a folder holding checkpoints is refused unless `--resume` (continue from the last one) or `--overwrite`;
- `--overwrite` removes the old checkpoints and finished files first, so nothing stale can be resumed or look finished.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError

CHECKPOINT = re.compile(r"^checkpoint-\d+$")


@dataclass
class OverwriteArguments:
    """What to do with a finished result already in output_dir."""

    overwrite: bool = field(
        default=False, metadata={"help": "Replace what output_dir holds (a finished result, checkpoints)."}
    )


@dataclass
class ResumeArguments(OverwriteArguments):
    """What to do with a finished result or checkpoints already in output_dir."""

    resume: bool = field(default=False, metadata={"help": "Continue from the last checkpoint in output_dir."})


def trainer_checkpoint(output_dir: Path) -> Path | None:
    """The last complete checkpoint a transformers Trainer wrote (`checkpoint-<step>/`). Trainer writes
    trainer_state.json last, so a folder without a readable one is a checkpoint that a kill interrupted: skipped, the
    one before it resumes (transformers' `get_last_checkpoint` would pick the broken one, and resuming then fails)."""
    steps = []
    for folder in output_dir.glob("checkpoint-*") if output_dir.is_dir() else ():
        if folder.is_dir() and CHECKPOINT.match(folder.name):
            steps.append((int(folder.name.removeprefix("checkpoint-")), folder))
    for _, folder in sorted(steps, reverse=True):
        try:
            json.loads((folder / "trainer_state.json").read_text())
        except (OSError, ValueError):
            continue
        return folder
    return None


def prepare_output_dir(
    output_dir: str | Path,
    run: OverwriteArguments,
    stage: str,
    finished: list[str],
    last_checkpoint: Callable[[Path], Path | None] | None = None,
) -> Path | None:
    """Check (and with --overwrite clear) `output_dir`; returns the checkpoint to resume from, or None.

    `finished`: files (relative to output_dir) that exist only once the stage has finished. `last_checkpoint`:
    how this stage finds its last complete checkpoint (None for stages without checkpoints).
    """
    output_dir = Path(output_dir)
    resume = getattr(run, "resume", False)
    done = [name for name in finished if (output_dir / name).exists()]
    last = last_checkpoint(output_dir) if last_checkpoint and output_dir.is_dir() else None
    if run.overwrite and not resume:
        for old in output_dir.iterdir() if output_dir.is_dir() else []:
            if CHECKPOINT.match(old.name) and old.is_dir():
                shutil.rmtree(old)
        for name in done:
            (output_dir / name).unlink()
        return None
    if done and not (resume and last):
        flags = "--resume to continue from its last checkpoint or --overwrite" if last else "--overwrite"
        raise UserError(f"{output_dir} holds a finished {stage} result ({done[0]}): pass {flags} to replace it")
    if last and not resume:
        raise UserError(f"{output_dir} holds {last.name}: pass --resume to continue or --overwrite to start afresh")
    if resume and not last:
        print(f"workbench {stage}: no checkpoint in {output_dir}; starting from the beginning")
    return last if resume else None


def claim_output_dir(
    output_dir: Path,
    run: OverwriteArguments,
    stage: str,
    finished: list[str],
    last_checkpoint: Callable[[Path], Path | None] | None,
    write_recipe: Callable[[], None],
) -> Path | None:
    """`prepare_output_dir`, then `write_recipe()` (a failed run still says how it ran), on the main process only
    under `accelerate launch`; every process gets the checkpoint to resume from, or stops when it is refused."""
    from workbench.distributed import on_main_process

    def prepare():
        last = prepare_output_dir(output_dir, run, stage, finished, last_checkpoint)
        write_recipe()
        return last

    return on_main_process(prepare)
