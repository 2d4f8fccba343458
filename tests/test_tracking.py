"""W&B tracking: offline without an API key, secrets never in the config, lineage artifacts in the offline run."""

from __future__ import annotations

import pytest

from workbench import tracking
from workbench.errors import UserError
from workbench.tracking import TrackingConfig


def test_secrets_are_dropped_but_token_counts_kept():
    config = {
        "hub_token": "hf_x",
        "max_new_tokens": 32,
        "pad_token": "<pad>",
        "WANDB_API_KEY": "k",
        "argilla": {"api_key": "argilla.apikey.xyz", "api_url": "http://127.0.0.1:6900"},
        "owner_password": "p",
    }
    assert tracking.without_secrets(config) == {
        "max_new_tokens": 32,
        "pad_token": "<pad>",
        "argilla": {"api_url": "http://127.0.0.1:6900"},
    }


def test_mode_is_offline_without_a_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert tracking.resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode("auto") == "online"
    with pytest.raises(UserError, match="wandb_mode must be one of"):
        tracking.resolve_mode("sometimes")


def test_offline_run_with_group_job_type_config_and_artifact(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    settings = TrackingConfig(wandb_project="wb-test", wandb_group="pipeline-1", wandb_tags=["t"])
    run = tracking.start_run("sft", settings, tmp_path, "my-run", {"lr": 0.1, "hub_token": "hf_secret"})
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "workbench.json").write_text("{}")
    tracking.log_artifact(run, tmp_path / "adapter", "sft adapter/x", "adapter", {"password": "p", "stage": "sft"})
    reference = tracking.run_reference(run)
    assert dict(run.config) == {"lr": 0.1}
    assert (run.group, run.job_type, run.name) == ("pipeline-1", "sft", "my-run")
    tracking.finish(run)
    assert reference["mode"] == "offline" and reference["project"] == "wb-test"
    run_files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert run_files
    assert b"hf_secret" not in run_files[0].read_bytes()
