"""`workbench pipeline --config recipes/quickstart.yaml`: the whole loop, SFT to report, in one run folder.

SFT → generate K candidates → push them to Argilla (the embedded server is started when needed) → labels (simulated
annotators, or people in the Argilla UI while the pipeline waits) → pull preference pairs → reward model → PPO →
eval → report. Each stage writes `<run_dir>/<stage>/` and its log `<run_dir>/logs/<stage>.log`; `report.md` and
`plots/` sum it up. A complete stage is skipped when the pipeline runs again (`--force STAGE` re-runs it and every
later one; `--force` alone re-runs everything); a failed or interrupted one resumes where it stopped. All stages
share one W&B group, recorded in `<run_dir>/pipeline.json` with each stage's status and time.
"""

from __future__ import annotations

import contextlib
import io
import signal
import warnings
from pathlib import Path

from workbench.errors import UserError
from workbench.pipeline.pipeline_recipe import RECIPE_STAGES, PipelineConfig, recipe_of, split_round, stages_of

TRACKING_KEYS = {"wandb_project", "wandb_group", "wandb_mode", "wandb_tags"}


def _force_all(argv: list[str]) -> list[str]:
    """`--force` with no stage after it means every stage."""
    out = []
    for index, arg in enumerate(argv):
        out.append(arg)
        if arg == "--force" and (index + 1 == len(argv) or argv[index + 1].startswith("--")):
            out.append("all")
    return out


def parse(argv: list[str]):
    from workbench.recipe import RecipeParser, check_value
    from workbench.tracking import TrackingConfig

    parser = RecipeParser([PipelineConfig, TrackingConfig], "workbench pipeline")
    cfg, tracking_cfg = parser.parse(_force_all(argv))
    # the pipeline's own sizes, named as the pipeline recipe names them (the stage recipes check theirs in validate)
    sizes = dict(sft_max_steps=1, num_prompts=1, num_candidates=2, annotators=1, label_prompts=1)
    for key, least in (sizes | dict(reward_max_steps=1, ppo_steps=1, dpo_max_steps=1, eval_prompts=1)).items():
        value = getattr(cfg, key)
        check_value(argv, key, value is None or value >= least, f"{least} or more", value)
    return cfg, tracking_cfg, parser.given


def forced_stages(force: list[str], stages: tuple[str, ...]) -> set[str]:
    """The stages to run again for `--force` in a run with `stages`: those named and every later one (a stage's
    outputs feed every later stage)."""
    unknown = [name for name in force if name not in (*stages, "all")]
    if unknown:
        raise UserError(f"--force {unknown[0]}: no such stage; stages: {', '.join(stages)} (or --force alone: all)")
    if "all" in force:
        return set(stages)
    first = min(stages.index(name) for name in force) if force else len(stages)
    return set(stages[first:])


def validate(planner) -> None:
    """Parse every stage recipe now, so a bad key fails in seconds rather than after an hour of earlier stages."""
    import importlib

    from workbench.cli import COMMANDS

    for name in (name for name in planner.stages if split_round(name)[0] in RECIPE_STAGES):
        stage = planner.stage(name)
        path = planner.write_recipe(stage)
        try:  # quietly: importing the stages' libraries prints warnings that are not the user's business here
            with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                importlib.import_module(COMMANDS[recipe_of(name)][0]).parse(["--config", str(path)])
        except UserError as error:
            base = getattr(planner.cfg, f"{recipe_of(name)}_recipe")
            raise UserError(
                f"stage {name}: {error} (its recipe is built from {base or 'the stage defaults'}, the pipeline's "
                f"keys and overrides.{split_round(name)[0]} in {planner.where})"
            ) from error


def hooks_for(planner, runner_console) -> dict:
    from workbench.pipeline import labels

    def serve(stage, log):
        labels.ensure_server(planner, log)

    def serve_quietly(stage, log):  # the login banner once (push) is enough; later stages log it only
        with open(planner.path("logs", f"{stage.name}.log"), "a") as handle:
            labels.ensure_server(planner, lambda message: handle.write(message + "\n"))

    def label_after(stage, log):
        if planner.cfg.labelers == "human":
            labels.human_labels(planner, stage, log, console=runner_console)
        labels.record_labels(planner, stage, log)

    by_kind = {
        "push": {"before": serve, "after": lambda stage, log: labels.record_push(planner, stage, log)},
        "label": {"before": serve_quietly, "after": label_after},
        "pull": {"before": serve_quietly},
        "report": {"after": lambda stage, log: write_report(planner, log)},
    }
    hooks = {name: by_kind[split_round(name)[0]] for name in planner.stages if split_round(name)[0] in by_kind}
    for name in hooks:  # a later round's push finds the server up already: its banner goes to the log only
        if name != "push" and split_round(name)[0] == "push":
            hooks[name] = {**hooks[name], "before": serve_quietly}
    return hooks


def write_report(planner, log) -> None:
    from workbench.pipeline import run_report as report
    from workbench.pipeline.run_tracking import log_pipeline_run

    plots = report.write(planner.run, planner.state, planner.cfg.model_name_or_path, planner.stages)
    log(f"report: {planner.path('report.md')} ({len(plots)} plots in {planner.path('plots')})")
    log_pipeline_run(planner, plots)


def main(argv: list[str]) -> int:
    cfg, tracking_cfg, given = parse(argv)
    from workbench.pipeline.runner import hold_run_dir

    run_dir = Path(cfg.run_dir)
    with hold_run_dir(run_dir):  # one pipeline per run_dir; a second one gets a one-line error
        force = forced_stages(cfg.force, stages_of(cfg.methods, cfg.rounds))
        return _run(argv, cfg, tracking_cfg, given, force, run_dir)


def _run(argv: list[str], cfg, tracking_cfg, given: set[str], force: set[str], run_dir: Path) -> int:
    from rich.console import Console

    from workbench.pipeline.plan import Planner
    from workbench.pipeline.runner import STOP, Runner, StageFailed, load_state
    from workbench.recipe import _recipe_path, write_resolved_recipe

    state = load_state(run_dir, tracking_cfg.wandb_group if "wandb_group" in given else None)
    planner = Planner(cfg, tracking_cfg, given & TRACKING_KEYS, state, _recipe_path(argv))
    validate(planner)
    write_resolved_recipe(run_dir / "recipe.yaml", "pipeline", given, cfg, tracking_cfg)
    console = Console(highlight=False, soft_wrap=True)
    runner = Runner(planner, state, force, console, hooks_for(planner, console))
    # a stopped pipeline stops its stage too; SIGINT only where it is not ignored (a background job's is)
    handled = [signal.SIGTERM] + [signal.SIGINT] * (signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    STOP.clear()
    previous = {signum: signal.signal(signum, STOP) for signum in handled}
    try:
        runner.run()
    except StageFailed as error:
        console.print(f"workbench pipeline: {error}", markup=False)
        return 1
    except KeyboardInterrupt:
        running = [name for name, record in state["stages"].items() if record.get("status") == "interrupted"]
        where = f" during stage {running[-1]}" if running else ""
        console.print(f"workbench pipeline: interrupted{where}; run the same command again to resume", markup=False)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    records = [(name, state["stages"].get(name, {})) for name in planner.stages]
    times = ", ".join(f"{name} {record['seconds']:.0f}s" for name, record in records if "seconds" in record)
    console.print(f"workbench pipeline: done; report {planner.path('report.md')}\n  stage times: {times}")
    return 0
