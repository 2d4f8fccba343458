"""`workbench eval`'s report: PNG plots (matplotlib, Agg backend: no display needed) and report.md.

Each file is written beside its final name and renamed into place, so a half-written plot never looks finished.
"""

from __future__ import annotations

import os
from pathlib import Path

from workbench.evaluation.metrics import LOOP_TIMES, LOOP_WORDS
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
        intervals = [win_rates[n].get(judge, {}).get("ci95") or [None, None] for n in names]
        errors = [
            [max(0.0, r - 100 * (low if low is not None else r / 100)) for r, (low, _) in zip(rates, intervals)],
            [max(0.0, 100 * (high if high is not None else r / 100) - r) for r, (_, high) in zip(rates, intervals)],
        ]
        xs = [i + (offset - (len(judges) - 1) / 2) * width for i in range(len(names))]
        bars = axis.bar(xs, rates, width, yerr=errors, capsize=3, label=f"by {judge}")
        axis.bar_label(bars, fmt="%.0f%%", padding=2)
    axis.axhline(50, color="grey", linestyle="--", linewidth=1)
    axis.set_xticks(range(len(names)), names)
    axis.set_ylim(0, 119)
    axis.set_ylabel(f"win rate vs {baseline} (%; ties half; bootstrap 95% CI)")
    axis.set_title(f"Win rate against {baseline}")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=len(judges), frameon=False)
    _save(figure, path)
    plt.close(figure)
    return path


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _percent_interval(interval) -> str:
    low, high = interval
    return "—" if low is None else f"{100 * low:.0f}–{100 * high:.0f}%"


def verdict(metrics: dict) -> list[str]:
    """Plain words first: does each policy beat the baseline, by the gold rubric when judged (else the reward model),
    with the paired bootstrap 95% intervals. "Beats" only when the whole interval is above 50%."""
    baseline, lines = metrics["settings"]["baseline"], []
    for name, judges in metrics["win_rates"].items():
        judge = "gold_rubric" if "gold_rubric" in judges else "reward_model"
        rate = judges[judge]
        if rate["rate"] is None:
            continue
        low, high = rate["ci95"]
        if low is not None and low > 0.5:
            word = "beats"
        elif high is not None and high < 0.5:
            word = "loses to"
        else:
            word = "cannot be told apart from"
        difference = rate.get("difference") or {}
        gap = ""
        if difference.get("mean") is not None:
            d_low, d_high = difference["ci95"]
            gap = f"; mean {judge.replace('_', ' ')} score {difference['mean']:+.3f}"
            gap += f" (95% CI {d_low:+.3f} to {d_high:+.3f})" if d_low is not None else ""
        lines.append(
            f"- **{name} {word} {baseline}** by the {judge.replace('_', ' ')}: it wins {100 * rate['rate']:.1f}% of "
            f"{rate['n']} held-out prompts (ties half; paired bootstrap 95% CI "
            f"{_percent_interval(rate['ci95'])}){gap}."
        )
        parts = rate.get("difference_by_part") or {}
        if parts:
            split = ", ".join(f"{part} {_signed_interval(difference)}" for part, difference in parts.items())
            lines.append(f"  - the gold difference by rubric part (points; paired 95% CI): {split}.")
        row = metrics["policies"].get(name, {})
        if row.get("empty"):
            lines.append(f"  - **{row['empty']} of its {row['prompts']} answers are empty.**")
        if row.get("looping"):
            theirs = metrics["policies"].get(baseline, {}).get("looping", "—")
            lines.append(
                f"  - {row['looping']} of its {row['prompts']} answers loop (a run of {LOOP_WORDS} words "
                f"{LOOP_TIMES} or more times; {baseline}: {theirs})."
            )
    return lines


def _signed_interval(difference: dict) -> str:
    if difference.get("mean") is None:
        return "—"
    low, high = difference["ci95"]
    interval = f" ({low:+.2f} to {high:+.2f})" if low is not None else ""
    return f"{difference['mean']:+.2f}{interval}"


def agreement_lines(metrics: dict) -> list[str]:
    """The report's paragraphs on how the reward model orders answers against the gold rubric (the head RL optimises,
    and with a length term, head and term together)."""
    lines: list[str] = []
    agreement = metrics.get("reward_model_vs_gold")
    if agreement and agreement["pairs"]:
        lines += [
            "",
            f"The reward model orders two answers to the same prompt as the gold rubric does in "
            f"{100 * agreement['rate']:.1f}% ± {200 * agreement['stderr']:.1f} of {agreement['pairs']} pairs "
            f"(answers from any policy whose gold scores differ by {agreement['min_gold_gap']} or more).",
        ]
        if agreement.get("by_part"):
            split = ", ".join(
                f"{part} {100 * row['rate']:.0f}% of {row['pairs']}" for part, row in agreement["by_part"].items()
            )
            lines[-1] += f" Split by the rubric part that makes most of a pair's gold gap: {split}."
    whole = metrics.get("reward_model_with_length_term_vs_gold")
    if whole and whole["pairs"]:
        lines += [
            "",
            f"That is the head RL optimises. The reward model was trained with a length term beside it "
            f"({whole['length_weight']:+.2f} per 10 tokens, left out of the head); head and term together agree with "
            f"gold on {100 * whole['rate']:.1f}% ± {200 * whole['stderr']:.1f} of the same pairs.",
        ]
    return lines


def markdown(metrics: dict, samples: list[dict], plots: dict[str, str], sample_rows: int = 3) -> str:
    """The human-readable report: settings, a table per policy, win rates, the plots and a few answers."""
    settings, policies = metrics["settings"], metrics["policies"]
    reference, baseline = settings["reference"], settings["baseline"]
    lines = [
        "# Evaluation report",
        "",
        *verdict(metrics),
        "",
        f"{settings['prompts']} held-out prompts ({settings['prompt_source']}), one answer per prompt per policy "
        f"({settings['decoding']}, up to {settings['max_new_tokens']} new tokens), all policies on one base "
        f"({settings['base_model']}, {settings['quantization']}). Reward model: `{settings['reward_adapter']}`. "
        f"KL: summed per-token log-ratio log π(y|x) − log π_{reference}(y|x) over each answer's tokens "
        f"(temperature {settings['logprob_temperature']}), averaged over prompts.",
        "",
        "| policy | adapter | reward | gold rubric | KL to " + reference + " | KL / token | tokens | words | empty "
        "| looping |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in policies.items():
        reward = f"{_number(row.get('reward_mean'))} ± {_number(row.get('reward_std'))}"
        gold = f"{_number(row.get('gold_mean'))} ± {_number(row.get('gold_std'))}" if "gold_mean" in row else "—"
        lines.append(
            f"| {name} | `{row['adapter'] or '(bare base)'}` | {reward} | {gold} | {_number(row.get('kl_mean'))} "
            f"| {_number(row.get('kl_per_token_mean'), 4)} | {_number(row.get('tokens_mean'), 1)} "
            f"| {_number(row.get('words_mean'), 1)} | {row.get('empty', '—')} | {row.get('looping', '—')} |"
        )
    best_of = settings.get("best_of")
    if best_of:
        lines += [
            "",
            f"`best_of_{best_of['n']}`: {best_of['n']} answers of {reference} sampled at temperature "
            f"{best_of['temperature']}, the reward model keeps one. Its KL column reads 0 (scored under {reference}); "
            f"its true KL to {reference} is at most log N − (N−1)/N = {best_of['kl_bound']:.3f}.",
        ]
    lines += [
        "",
        f"## Win rate against `{baseline}` (ties count half; paired bootstrap 95% intervals over prompts)",
        "",
    ]
    lines += [
        "| policy | judge | rate | 95% CI | W / T / L | mean score difference (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for name, judges in metrics["win_rates"].items():
        for judge, rate in judges.items():
            difference = rate.get("difference") or {}
            gap = "—"
            if difference.get("mean") is not None and difference["ci95"][0] is not None:
                gap = f"{difference['mean']:+.3f} ({difference['ci95'][0]:+.3f} to {difference['ci95'][1]:+.3f})"
            rate_text = "—" if rate["rate"] is None else f"{100 * rate['rate']:.1f}%"
            lines.append(
                f"| {name} | {judge} | {rate_text} | {_percent_interval(rate['ci95'])} "
                f"| {rate['wins']} / {rate['ties']} / {rate['losses']} | {gap} |"
            )
    lines += agreement_lines(metrics)
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
