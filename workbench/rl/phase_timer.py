"""Wall-clock seconds per phase of a PPO step (generation, each scoring pass, the updates), as NeMo-RL's Timer
reports them: `with timer("generation"): ...` adds the block's seconds to its phase; `metrics()` gives them as
`perf/<phase>_seconds`. On a GPU each phase ends with a device synchronisation, or the time of queued kernels would
be charged to whichever phase next waits for them."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch


class PhaseTimer:
    def __init__(self, device=None) -> None:
        self.device = torch.device(device) if device is not None else None
        self.seconds: dict[str, float] = defaultdict(float)

    def _synchronize(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, phase: str):
        self._synchronize()
        started = time.perf_counter()
        try:
            yield
        finally:
            self._synchronize()
            self.seconds[phase] += time.perf_counter() - started

    def metrics(self) -> dict[str, float]:
        return {f"perf/{phase}_seconds": seconds for phase, seconds in self.seconds.items()}
