"""`workbench eval`'s report: PNG plots (matplotlib, Agg backend: no display needed) and report.md.

Each file is written beside its final name and renamed into place, so a half-written plot never looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.fileio import write_text_atomic

PLOTS = {
    "reward_distribution": "reward_distribution.png",
    "gold_distribution": "gold_distribution.png",
    "win_rates": "win_rates.png",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    figure.savefig(temporary, dpi=110, bbox_inches="tight")
    os.replace(temporary, path)


def distribution_plot(values: dict[str, list[float]], title: str, xlabel: str, path: Path) -> Path:
    """One box per policy with its per-prompt values drawn over it (deterministic jitter)."""
    plt = _pyplot()
    names = list(values)
    figure, axis = plt.subplots(figsize=(1.6 + 1.4 * len(names), 4))
    axis.boxplot([values[n] for n in names], tick_labels=names, showmeans=True)
    for position, name in enumerate(names, start=1):
        points = values[name]
        jitter = [position + 0.18 * (((i * 0.618034) % 1.0) - 0.5) for i in range(len(points))]
        axis.scatter(jitter, points, s=8, alpha=0.45)
    axis.set_title(title)
    axis.set_ylabel(xlabel)
    axis.grid(axis="y", alpha=0.3)
    _save(figure, path)
    plt.close(figure)
    return path


def win_rate_plot(win_rates: dict[str, dict], baseline: str, path: Path) -> Path:
    """Bars: each policy's win rate against the baseline by the reward model and by the gold rubric; 50% dashed."""
    plt = _pyplot()
    names = list(win_rates)
    judges = sorted({judge for rates in win_rates.values() for judge in rates})
    width = 0.8 / max(1, len(judges))
    figure, axis = plt.subplots(figsize=(2 + 1.5 * len(names), 4))
    for offset, judge in enumerate(judges):
        rates = [100 * (win_rates[n].get(judge, {}).get("rate") or 0.0) for n in names]
        errors = [200 * (win_rates[n].get(judge, {}).get("stderr") or 0.0) for n in names]
        xs = [i + (offset - (len(judges) - 1) / 2) * width for i in range(len(names))]
        bars = axis.bar(xs, rates, width, yerr=errors, capsize=3, label=f"by {judge}")
        axis.bar_label(bars, fmt="%.0f%%", padding=2)
    axis.axhline(50, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 119)
    axis.set_ylabel(f"win rate vs {baseline} (%; ties half; ±2 s.e.)")
    axis.set_title(f"Win rate against {baseline}")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(judges), frameon=False)
    _save(figure, path)
    plt.close(figure)
    return path


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(metrics: dict, samples: list[dict], plots: dict[str, str], sample_rows: int = 3) -> str:
    """The human-readable report: settings, a table per policy, win rates, the plots and a few answers."""
    settings, policies = metrics["settings"], metrics["policies"]
    reference, baseline = settings["reference"], settings["baseline"]
    lines = [
        "# Evaluation report",
        "",
        f"{settings['prompts']} held-out prompts ({settings['prompt_source']}), one answer per prompt per policy "
        f"({settings['decoding']}, up to {settings['max_new_tokens']} new tokens), all policies on one base "
        f"({settings['base_model']}, {settings['quantization']}). Reward model: `{settings['reward_adapter']}`. "
        f"KL: summed per-token log-ratio log π(y|x) − log π_{reference}(y|x) over each answer's tokens "
        f"(temperature {settings['logprob_temperature']}), averaged over prompts.",
        "",
        "| policy | adapter | reward | gold rubric | KL to " + reference + " | KL / token | tokens | words |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in policies.items():
        reward = f"{_number(row.get('reward_mean'))} ± {_number(row.get('reward_std'))}"
        gold = f"{_number(row.get('gold_mean'))} ± {_number(row.get('gold_std'))}" if "gold_mean" in row else "—"
        lines.append(
            f"| {name} | `{row['adapter'] or '(bare base)'}` | {reward} | {gold} | {_number(row.get('kl_mean'))} "
            f"| {_number(row.get('kl_per_token_mean'), 4)} | {_number(row.get('tokens_mean'), 1)} "
            f"| {_number(row.get('words_mean'), 1)} |"
        )
    lines += ["", f"## Win rate against `{baseline}` (ties count half)", "", "| policy | judge | rate | W / T / L |"]
    lines.append("|---|---|---|---|")
    for name, judges in metrics["win_rates"].items():
        for judge, rate in judges.items():
            lines.append(
                f"| {name} | {judge} | {100 * rate['rate']:.1f}% ± {200 * rate['stderr']:.1f} "
                f"| {rate['wins']} / {rate['ties']} / {rate['losses']} |"
            )
    agreement = metrics.get("reward_model_vs_gold")
    if agreement and agreement["pairs"]:
        lines += [
            "",
            f"The reward model orders two answers to the same prompt as the gold rubric does in "
            f"{100 * agreement['rate']:.1f}% ± {200 * agreement['stderr']:.1f} of {agreement['pairs']} pairs "
            f"(answers from any policy whose gold scores differ by {agreement['min_gold_gap']} or more).",
        ]
    lines += ["", "## Plots", ""] + [f"![{key}]({file})" for key, file in plots.items()]
    lines += ["", "## Sample answers", ""]
    prompt_ids = list(dict.fromkeys(row["prompt_id"] for row in samples))[:sample_rows]
    for prompt_id in prompt_ids:
        rows = [row for row in samples if row["prompt_id"] == prompt_id]
        lines += [f"**{prompt_id}**: {rows[0]['prompt'][-1]['content']}", ""]
        for row in rows:
            gold = f", gold {row['gold']:.2f}" if row.get("gold") is not None else ""
            answer = row["response"].replace("\n", " ")
            lines.append(f"- *{row['policy']}* (reward {row['reward']:.3f}{gold}): {answer}")
        lines.append("")
    return "\n".join(lines) + "\n"


def write_report(path: Path, metrics: dict, samples: list[dict], plots: dict[str, str]) -> None:
    write_text_atomic(path, markdown(metrics, samples, plots))


def write_plots(output_dir: Path, samples: list[dict], names: list[str], win_rates: dict, baseline: str) -> dict:
    """The report's PNGs: reward (and gold, when judged) distribution per policy, win rates against the baseline."""
    by_policy = {name: [s for s in samples if s["policy"] == name] for name in names}
    plots = {
        "reward_distribution": distribution_plot(
            {n: [s["reward"] for s in rows] for n, rows in by_policy.items()},
            "Reward model score per answer",
            "reward",
            output_dir / PLOTS["reward_distribution"],
        )
    }
    if all(s.get("gold") is not None for s in samples):
        plots["gold_distribution"] = distribution_plot(
            {n: [s["gold"] for s in rows] for n, rows in by_policy.items()},
            "Gold rubric score per answer",
            "rubric score (0-5)",
            output_dir / PLOTS["gold_distribution"],
        )
    if win_rates:
        plots["win_rates"] = win_rate_plot(win_rates, baseline, output_dir / PLOTS["win_rates"])
    return plots
