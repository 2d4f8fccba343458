"""The pipeline's own W&B run, in the group every stage logged to: key figures, plots, lineage artifacts.

The stages log their adapters as artifacts themselves (sft, reward, ppo); this run adds the candidates and the
preference pairs (with the Argilla dataset they came from) and the report, each naming the files it was built from.
"""

from __future__ import annotations

import dataclasses
import json
import re

from workbench import tracking
from workbench.pipeline.pipeline_recipe import round_stage, split_round


def _artifact(run, name: str, kind: str, files: list, metadata: dict) -> None:
    import wandb

    existing = [path for path in files if path.exists()]
    if not existing:
        return
    artifact = wandb.Artifact(name=name, type=kind, metadata=tracking.without_secrets(metadata))
    for path in existing:
        artifact.add_file(str(path), name=str(path.relative_to(path.parents[1])) if kind == "report" else path.name)
    run.log_artifact(artifact)


def log_pipeline_run(planner, plots: dict) -> None:
    cfg, state = planner.cfg, planner.state
    settings = dataclasses.replace(planner.tracking, wandb_group=state["wandb_group"], wandb_job_type="pipeline")
    config = {"pipeline": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "force"}}
    config["stages"] = {
        name: {"status": r.get("status"), "seconds": r.get("seconds")} for name, r in state["stages"].items()
    }
    run = tracking.start_run("pipeline", settings, planner.run, f"pipeline-{planner.run.name}", config)
    if run is None:
        return
    import wandb

    prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", planner.run.name)
    generate = planner.path("generate")
    manifest_path = generate / "manifest.json"
    _artifact(
        run,
        f"candidates-{prefix}",
        "dataset",
        [generate / "candidates.jsonl", manifest_path],
        json.loads(manifest_path.read_text()) if manifest_path.exists() else {},
    )
    preferences = planner.path(round_stage("preferences", planner.cfg.rounds))  # every round's labels
    pulled = preferences / "manifest.json"
    _artifact(
        run,
        f"preferences-{prefix}",
        "dataset",
        [preferences / "preferences.jsonl", preferences / "agreement.jsonl", pulled],
        json.loads(pulled.read_text()) if pulled.exists() else {},
    )
    report_files = [planner.path("report.md"), *(planner.path(p) for p in plots.values())]
    rewards = [name for name in planner.stages if split_round(name)[0] == "reward"]  # every round's reward model
    lineage = {name: str(planner.path(name, "adapter")) for name in ("sft", *rewards, *planner.methods())}
    _artifact(run, f"report-{prefix}", "report", report_files, {"adapters": lineage})
    run.log({f"plots/{name}": wandb.Image(str(planner.path(path))) for name, path in plots.items()})
    seconds = {f"time/{name}_s": r["seconds"] for name, r in state["stages"].items() if "seconds" in r}
    run.summary.update(seconds)
    tracking.finish(run)
