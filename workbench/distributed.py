"""Several processes (`accelerate launch`): the main process decides about the output folder, every process follows.

Under `accelerate launch --num_processes N` every process runs the same stage. Checking and clearing `output_dir`,
writing `recipe.yaml` and starting the W&B run happen once, on the main process; `on_main_process` hands the result
(the checkpoint to resume from) or the refusal to every other process, so a refused `output_dir` stops every process
with exit 2 instead of leaving the others waiting at a barrier. The other processes' stdout is silenced
(`quiet_other_processes`), so progress lines come once.

On a machine without GPUs, `accelerate launch --cpu --num_processes N` starts ONE process whatever N says
(accelerate 1.x runs `--cpu` without torchrun unless MPI is set up), so the run would silently train with 1/N of the
batch; `check_launch` refuses that and names the command that does start N processes (torchrun with gloo).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from workbench.errors import UserError

T = TypeVar("T")
CPU_LAUNCH = (
    "accelerate launch --config_file recipes/accelerate/multi_gpu.yaml --num_processes {n} --mixed_precision no "
    "-m workbench.cli ..."
)


def process_state():
    """accelerate's process state (the one every Trainer and Accelerator of this process shares)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def on_main_process(decide: Callable[[], T]) -> T:
    """Run `decide` on the main process only and return its result on every process.

    A `UserError` raised by `decide` is raised on the main process (its message printed once) and ends the other
    processes with exit 2 and no message of their own.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return decide()
    from accelerate.utils import broadcast_object_list

    state = process_state()
    if state.num_processes == 1:
        return decide()
    outcome: list = [None]
    if state.is_main_process:
        try:
            outcome = [("ok", decide())]
        except UserError as error:
            outcome = [("refused", error)]
    broadcast_object_list(outcome, from_process=0)
    kind, value = outcome[0]
    if kind == "refused":
        if state.is_main_process:
            raise value
        raise SystemExit(2)
    return value


def quiet_other_processes() -> None:
    """Progress lines once, not once per process: stdout of every process but the main one goes nowhere (stderr,
    where errors go, stays)."""
    if int(os.environ.get("RANK", "0")) != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def requested_processes(launcher_argv: list[str]) -> int:
    """`--num_processes N` (or `--num_processes=N`) on an `accelerate launch` command line; 1 when absent."""
    for index, arg in enumerate(launcher_argv):
        value = None
        if arg == "--num_processes" and index + 1 < len(launcher_argv):
            value = launcher_argv[index + 1]
        elif arg.startswith("--num_processes="):
            value = arg.split("=", 1)[1]
        if value is not None:
            return int(value) if value.isdigit() else 1
    return 1


def check_launch() -> None:
    """Refuse `accelerate launch --cpu --num_processes N>1`, which would run one process (see the module's doc)."""
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() != "true" or "WORLD_SIZE" in os.environ:
        return
    if any(name in os.environ for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")):
        return  # MPI started the processes: accelerate's own multi-CPU path
    path = Path(f"/proc/{os.getppid()}/cmdline")  # the launcher that started this process
    try:
        argv = [part.decode(errors="replace") for part in path.read_bytes().split(b"\0") if part]
    except OSError:
        return
    if not any(Path(part).name == "accelerate" for part in argv[:2]) or "launch" not in argv:
        return
    requested = requested_processes(argv)
    if requested > 1:
        raise UserError(
            f"accelerate launch --cpu --num_processes {requested} starts 1 process, not {requested} (accelerate "
            f"runs --cpu without torchrun); on CPUs start {requested} processes with: "
            + CPU_LAUNCH.format(n=requested)
        )
