"""The pipeline's report: `<run_dir>/report.md` and `<run_dir>/plots/*.png`, read from the stages' own outputs.

Every number in report.md comes through `Figures.get`, which records the file and key it read; the key-figures table
shows that source beside each value, so anyone (and tests/test_pipeline.py) can check it against the stage outputs.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from workbench.fileio import write_text_atomic


def fmt(value) -> str:
    """How report.md writes a number (tests format the stage outputs the same way)."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    return f"{value:.3f}"


def lookup(document, key: str):
    """`a.b[2].c` inside nested dicts/lists; keys may contain `/` (PPO metric names)."""
    value = document
    for part in key.replace("]", "").split("."):
        name, *indices = part.split("[")
        if name:
            value = value[name]
        for index in indices:
            value = value[int(index)]
    return value


class Figures:
    """Reads values from JSON files under the run folder and remembers where each came from."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.rows, self.cache = run_dir, [], {}

    def load(self, relative: str):
        if relative not in self.cache:
            path = self.run_dir / relative
            self.cache[relative] = json.loads(path.read_text()) if path.exists() else None
        return self.cache[relative]

    def get(self, label: str, relative: str, key: str, table: bool = True):
        document = self.load(relative)
        try:
            value = lookup(document, key) if document is not None else None
        except (KeyError, IndexError, TypeError):
            value = None
        if table and value is not None:
            self.rows.append((label, fmt(value), f"`{relative}` → `{key}`"))
        return value


def last_checkpoint_state(stage_dir: Path) -> tuple[str | None, list[dict]]:
    """The log history in the newest checkpoint-*/trainer_state.json of an HF Trainer output folder."""
    checkpoints = sorted(stage_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name[11:]))
    if not checkpoints:
        return None, []
    return str(checkpoints[-1].relative_to(stage_dir.parent)), json.loads(checkpoints[-1].read_text())["log_history"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    plt.close(figure)
    temporary.replace(path)
    return f"plots/{path.name}"


def plot_sft(history: list[dict], path: Path) -> str | None:
    train = [(row["step"], row["loss"]) for row in history if "loss" in row]
    held_out = [(row["step"], row["eval_loss"]) for row in history if "eval_loss" in row]
    if not train and not held_out:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for points, label in ((train, "training loss"), (held_out, "held-out loss")):
        if points:
            axis.plot(*zip(*points), marker="o", markersize=3, label=label)
    axis.set(xlabel="step", ylabel="loss", title="SFT loss")
    axis.grid(alpha=0.3)
    axis.legend()
    return _save(plt, figure, path)


def plot_reward(metrics: dict, history: list[dict], path: Path) -> str | None:
    bins = [b for b in metrics.get("eval_calibration") or [] if b.get("pairs")]
    if not bins and not history:
        return None
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    train = [(row["step"], row["loss"]) for row in history if "loss" in row]
    if train:
        left.plot(*zip(*train), marker="o", markersize=3, label="training loss")
    accuracy = [(row["step"], row["accuracy"]) for row in history if "accuracy" in row]
    if accuracy:
        left.plot(*zip(*accuracy), marker="s", markersize=3, label="training accuracy")
    if metrics.get("eval_accuracy") is not None:
        left.axhline(metrics["eval_accuracy"], color="green", linestyle="--", label="held-out accuracy")
    left.set(xlabel="step", title="Reward model training")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    right.plot([0.5, 1], [0.5, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    if bins:
        sizes = [20 + 8 * b["pairs"] for b in bins]
        right.scatter([b["confidence"] for b in bins], [b["accuracy"] for b in bins], s=sizes, label="bins")
    right.set(xlim=(0.48, 1.02), ylim=(-0.02, 1.02), xlabel="confidence sigmoid(|margin|)", ylabel="accuracy")
    right.set_title(f"Held-out calibration (ECE {fmt(metrics.get('eval_ece'))})")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    return _save(plt, figure, path)


METHOD_TITLES = {"ppo": "PPO", "rloo": "RLOO", "grpo": "GRPO", "reinforce++": "REINFORCE++", "raft": "RAFT"}


def method_title(stage: str) -> str:
    """`reinforce++-r2` → `REINFORCE++, round 2`."""
    from workbench.pipeline.pipeline_recipe import split_round

    method, round_ = split_round(stage)
    return METHOD_TITLES[method] + (f", round {round_}" if round_ > 1 else "")


def plot_ppo(history: list[dict], path: Path, method: str = "PPO") -> str | None:
    if not history:
        return None
    plt = _pyplot()
    steps = [row["step"] for row in history]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5), layout="constrained")
    left.plot(steps, [row["reward/mean"] for row in history], marker="o", markersize=3, label="mean reward")
    if "objective/rlhf_reward" in history[0]:
        rlhf = [row["objective/rlhf_reward"] for row in history]
        left.plot(steps, rlhf, marker="s", markersize=3, label="reward - KL penalty")
    left.set(xlabel=f"{method} step", ylabel="reward", title=f"{method} reward")
    right.plot(steps, [row["objective/kl"] for row in history], marker="o", markersize=3, color="tab:red")
    right.set(xlabel=f"{method} step", ylabel="KL to SFT (per response)", title=f"{method} KL")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    left.legend(fontsize=8)
    return _save(plt, figure, path)


def plot_win_rates(eval_metrics: dict, path: Path) -> str | None:
    if not eval_metrics or not eval_metrics.get("win_rates"):
        return None
    from workbench.evaluation.eval_report import win_rate_plot

    path.parent.mkdir(parents=True, exist_ok=True)
    win_rate_plot(eval_metrics["win_rates"], eval_metrics["settings"]["baseline"], path)
    return f"plots/{path.name}"


def build(run_dir: Path, state: dict, base_model: str, stages: tuple[str, ...]) -> tuple[str, dict]:
    """report.md's text and {name: plot path} for a run of `stages`; every number read from the stage outputs under
    run_dir."""
    from workbench.pipeline.pipeline_recipe import RL_METHODS, round_stage, split_round

    f, plots = Figures(run_dir), {}
    rounds = max(split_round(name)[1] for name in stages)
    lines = [
        f"# Pipeline report: {run_dir.name}",
        "",
        f"Run folder `{run_dir}`, base model `{base_model}`, W&B group `{state['wandb_group']}` (offline runs sit in "
        f"each stage's `wandb/` folder; `wandb sync` uploads them). Built "
        f"{dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} from the stage outputs: every number in "
        "the key figures names the file and key it was read from.",
        "",
        "## Stages",
        "",
        "| stage | status | time (min) | CPU time, its processes (min) | peak memory of a process (MiB) | attempts |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in stages[:-1]:
        record = state["stages"].get(name, {})
        minutes = f"{record['seconds'] / 60:.1f}" if "seconds" in record else "-"
        cpu = f"{record['cpu_seconds'] / 60:.1f}" if "cpu_seconds" in record else "-"
        peak = f"{record['peak_rss_mb']:.0f}" if "peak_rss_mb" in record else "-"
        status, attempts = record.get("status", "-"), record.get("attempts", 0)
        lines.append(f"| {name} | {status} | {minutes} | {cpu} | {peak} | {attempts} |")
    total = sum(r.get("seconds", 0) for n, r in state["stages"].items() if n != "report")
    lines += ["", f"Total stage time: {total / 60:.1f} min.", ""]

    # ── SFT ──────────────────────────────────────────────────────────────────────────────────────────────────────
    f.get("SFT steps", "sft/metrics.json", "global_step")
    f.get("SFT training loss (mean)", "sft/metrics.json", "train_loss")
    f.get("SFT held-out loss, base model", "sft/metrics.json", "base_eval_loss")
    f.get("SFT held-out loss, after SFT", "sft/metrics.json", "eval_loss")
    sft_source, history = last_checkpoint_state(run_dir / "sft")
    plots["sft"] = plot_sft(history, run_dir / "plots" / "sft_loss.png")
    # ── labels and reward model, per labeling round ─────────────────────────────────────────────────────────────
    for round_ in range(1, rounds + 1):
        tag = "" if round_ == 1 else f"Round {round_}: "  # a later round's pull holds every round's labels so far
        pulled, reward_dir = round_stage("preferences", round_), round_stage("reward", round_)
        f.get(f"{tag}Argilla records ranked", f"{pulled}/manifest.json", "counts.records_ranked")
        f.get(f"{tag}Submitted rankings", f"{pulled}/manifest.json", "counts.submitted")
        f.get(f"{tag}Preference pairs", f"{pulled}/manifest.json", "counts.pairs")
        f.get(f"{tag}Pairs below min_agreement, left out", f"{pulled}/manifest.json", "counts.pairs_below_agreement")
        f.get(
            f"{tag}Annotator agreement (Krippendorff's alpha)",
            f"{pulled}/manifest.json",
            "agreement.krippendorff_alpha_ordinal",
        )
        f.get(f"{tag}Annotator agreement (mean Kendall's W)", f"{pulled}/manifest.json", "agreement.mean_kendalls_w")
        source = f"{reward_dir}/metrics.json"
        f.get(f"{tag}Reward model held-out pairs", source, "eval_pairs")
        f.get(f"{tag}Reward model held-out accuracy", source, "eval_accuracy")
        f.get(f"{tag}Reward model held-out accuracy, standard error", source, "eval_accuracy_stderr")
        f.get(f"{tag}Reward model held-out accuracy, untrained head", source, "base_eval_accuracy")
        f.get(f"{tag}Reward model mean margin", source, "eval_mean_margin")
        f.get(f"{tag}Reward model expected calibration error", source, "eval_ece")
    reward = f.load("reward/metrics.json") or {}
    _, reward_history = last_checkpoint_state(run_dir / "reward")
    plots["reward"] = plot_reward(reward, reward_history, run_dir / "plots" / "reward_model.png")
    # ── the alignment methods: PPO and the critic-free RL methods, DPO ──────────────────────────────────────────
    rl_methods = [name for name in stages if split_round(name)[0] in RL_METHODS]
    titles = {name: method_title(name) for name in rl_methods}
    for name in rl_methods:
        title, source = titles[name], f"{name}/metrics.json"
        f.get(f"{title} steps", source, "summary.steps")
        f.get(f"{title} mean reward, first steps", source, "summary.reward_first")
        f.get(f"{title} mean reward, last steps", source, "summary.reward_last")
        f.get(f"{title} KL to SFT, last steps", source, "summary.kl_last")
        history = (f.load(source) or {}).get("history") or []
        plots[name] = plot_ppo(history, run_dir / "plots" / f"{name}_reward_kl.png", title)
    for name in [name for name in stages if split_round(name)[0] == "raft"]:
        title, source = method_title(name), f"{name}/metrics.json"
        f.get(f"{title} prompts (N answers each)", source, "prompts")
        f.get(f"{title} mean reward, all answers", source, "reward_mean_samples")
        f.get(f"{title} mean reward, kept answers", source, "reward_mean_kept")
        f.get(f"{title} steps", source, "global_step")
    if "dpo" in stages:
        f.get("DPO steps", "dpo/metrics.json", "global_step")
        f.get("DPO held-out preference accuracy (implicit reward)", "dpo/metrics.json", "eval_rewards/accuracies")
        f.get("DPO held-out implicit reward margin", "dpo/metrics.json", "eval_rewards/margins")
    # ── eval ─────────────────────────────────────────────────────────────────────────────────────────────────────
    evaluation = f.load("eval/metrics.json") or {}
    f.get("Eval held-out prompts", "eval/metrics.json", "settings.prompts")
    for name in evaluation.get("policies") or {}:
        for key, what in (("reward_mean", "mean reward"), ("gold_mean", "mean gold-rubric score")):
            f.get(f"Eval {name}: {what}", "eval/metrics.json", f"policies.{name}.{key}")
        f.get(f"Eval {name}: mean KL to reference", "eval/metrics.json", f"policies.{name}.kl_mean")
        for key, what in (("empty", "empty answers"), ("looping", "answers that loop")):
            f.get(f"Eval {name}: {what}", "eval/metrics.json", f"policies.{name}.{key}")
    baseline = (evaluation.get("settings") or {}).get("baseline")
    for name, judges in (evaluation.get("win_rates") or {}).items():
        for judge in judges:
            f.get(
                f"Eval {name} win rate vs {baseline}, by {judge}",
                "eval/metrics.json",
                f"win_rates.{name}.{judge}.rate",
            )
    agreement = "reward_model_vs_gold"
    f.get("Eval answer pairs, same prompt, gold scores apart", "eval/metrics.json", f"{agreement}.pairs")
    f.get("Eval reward model orders them as the gold rubric", "eval/metrics.json", f"{agreement}.rate")
    for part in (evaluation.get(agreement) or {}).get("by_part") or {}:  # what the reward model has learned, and not
        label = f"Eval reward model vs gold, pairs mostly about {part}"
        f.get(label, "eval/metrics.json", f"{agreement}.by_part.{part}.rate")
    if evaluation.get("reward_model_with_length_term_vs_gold"):  # head + the length term it was trained beside
        label = "Eval reward model with its length term orders them as the gold rubric"
        f.get(label, "eval/metrics.json", "reward_model_with_length_term_vs_gold.rate")
    for name in evaluation.get("reward_models_vs_gold") or {}:  # earlier rounds' reward models, same answers
        if name == round_stage("reward", rounds):
            continue  # the eval's own reward model: the row above
        f.get(f"Eval {name} orders them as the gold rubric", "eval/metrics.json", f"reward_models_vs_gold.{name}.rate")
    plots["win_rates"] = plot_win_rates(evaluation, run_dir / "plots" / "win_rates.png")

    if evaluation.get("win_rates"):
        from workbench.evaluation.eval_report import verdict

        summary = ["## Did the policy get better?", "", "From `eval/metrics.json` (`win_rates`):", ""]
        lines[2:2] = [*summary, *verdict(evaluation), ""]
    lines += ["## Key figures", "", "| figure | value | source |", "|---|---:|---|"]
    lines += [f"| {label} | {value} | {where} |" for label, value, where in f.rows]
    sections = [
        ("SFT", "sft", f"Loss curve from `{sft_source}` (the trainer's log history)." if sft_source else None),
        ("Reward model", "reward", "Left: training curves; right: held-out pairs binned by confidence."),
        *(
            (titles[name], name, f"Mean reward of each rollout and KL to SFT, from `{name}/metrics.json`.")
            for name in rl_methods
        ),
        ("Win rates", "win_rates", f"Against `{baseline}` on held-out prompts; see [eval/report.md](eval/report.md)."),
    ]
    for title, key, note in sections:
        lines += ["", f"## {title}", ""]
        if plots.get(key):
            lines += [f"![{title}]({plots[key]})", ""]
        lines.append(note if plots.get(key) and note else ("(no data yet)" if not plots.get(key) else ""))
    return "\n".join(lines).rstrip() + "\n", {k: v for k, v in plots.items() if v}


def write(run_dir: Path, state: dict, base_model: str, stages: tuple[str, ...]) -> dict:
    text, plots = build(run_dir, state, base_model, stages)
    write_text_atomic(run_dir / "report.md", text)
    return plots
