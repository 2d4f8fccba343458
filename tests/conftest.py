"""Shared fixtures. Tests never reach a model hub: the embedded default model and tiny models are built locally."""

from __future__ import annotations

import os

import pytest

# Prove that nothing downloads from a hub: any attempt fails loudly.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(scope="session")
def default_model_path():
    from workbench.modeling.default_model import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_path():
    from workbench.modeling.default_model import ensure_tiny_model

    return ensure_tiny_model("tiny-llama")


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run only where CUDA is visible (the lent GPU machines); elsewhere they are reported as skipped."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
