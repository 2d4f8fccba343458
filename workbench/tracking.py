"""W&B for every stage: one run per stage, offline automatically without an API key, never a secret in the config.

Offline runs land in `<output_dir>/wandb/offline-run-*`; `wandb sync <that folder>` uploads them later.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from workbench.errors import UserError

# Names of secret-holding keys (hub_token, WANDB_API_KEY, passwords...), not of counts like max_new_tokens.
SECRET_KEY = re.compile(
    r"(hub_token|auth_token|access_token|api_token|^token$|api_?key|secret|password|passwd|credential)", re.IGNORECASE
)
MODES = ("auto", "online", "offline", "disabled")


@dataclass
class TrackingConfig:
    """Weights & Biases settings. Offline automatically when no WANDB_API_KEY is set."""

    wandb_project: str = field(default="alignment-workbench", metadata={"help": "W&B project."})
    wandb_group: str | None = field(default=None, metadata={"help": "W&B group (a pipeline run groups its stages)."})
    wandb_job_type: str | None = field(default=None, metadata={"help": "W&B job type; defaults to the stage name."})
    wandb_mode: str = field(
        default="auto",
        metadata={"help": "auto (online if WANDB_API_KEY is set, else offline), online, offline or disabled."},
    )
    wandb_tags: list[str] | None = field(default=None, metadata={"help": "W&B tags."})


def resolve_mode(mode: str) -> str:
    if mode not in MODES:
        raise UserError(f"wandb_mode must be one of {MODES}; got {mode!r}")
    if mode == "auto":
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


def without_secrets(config):
    """A copy of a (nested) config with every secret-looking key dropped."""
    if isinstance(config, dict):
        return {k: without_secrets(v) for k, v in config.items() if not SECRET_KEY.search(str(k))}
    if isinstance(config, list):
        return [without_secrets(v) for v in config]
    return config


def start_run(stage: str, tracking, output_dir: str | Path, run_name: str | None, config: dict):
    """Start the stage's W&B run (before any HF Trainer, whose W&B callback then reuses it); None when disabled,
    and on every process but the main one under `accelerate launch` (one run per stage, however many processes)."""
    mode = resolve_mode(tracking.wandb_mode)
    if mode == "disabled":
        os.environ["WANDB_DISABLED"] = "true"
        return None
    if int(os.environ.get("RANK", "0")) != 0:
        return None  # the Trainer's W&B callback, too, logs from the main process only
    import wandb

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    # The Trainer's callback reads these when it logs the model; keep it from uploading checkpoints on its own.
    os.environ["WANDB_LOG_MODEL"] = "false"
    os.environ["WANDB_PROJECT"] = tracking.wandb_project
    return wandb.init(
        project=tracking.wandb_project,
        group=tracking.wandb_group,
        job_type=tracking.wandb_job_type or stage,
        name=run_name or f"{stage}-{output_dir.name}",
        tags=tracking.wandb_tags,
        dir=str(output_dir),
        mode=mode,
        config=without_secrets(config),
        reinit="finish_previous",
    )


def run_reference(run) -> dict | None:
    """What a manifest records of a W&B run: enough to find it again, online or in the offline folder."""
    if run is None:
        return None
    return {
        "project": run.project,
        "id": run.id,
        "name": run.name,
        "group": run.group,
        "dir": run.dir,
        "mode": run.settings.mode,
    }


def log_artifact(run, path: str | Path, name: str, kind: str, metadata: dict | None = None) -> None:
    """Log a folder (an adapter, a dataset) as a W&B artifact, for lineage between stages."""
    if run is None:
        return
    import wandb

    artifact = wandb.Artifact(
        name=re.sub(r"[^A-Za-z0-9_.-]", "-", name), type=kind, metadata=without_secrets(metadata or {})
    )
    artifact.add_dir(str(path))
    run.log_artifact(artifact)


def finish(run) -> None:
    if run is not None:
        run.finish()
