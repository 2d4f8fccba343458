"""What a benchmark's JSON says about where it ran (the machine, library versions), and how it is given out:
printed, and written to `--out` when asked. Shared by bench/shared_prefill.py, bench/shared_prefix_scoring.py and
bench/raft_seeds.py."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path


def machine() -> str:
    import torch

    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores{gpu}"


def versions(*packages: str) -> dict:
    from importlib.metadata import version

    return {package: version(package) for package in packages}


def emit(result: dict, out: str | None) -> None:
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
