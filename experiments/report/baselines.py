"""The report's Baselines section: the dense `baseline_*` runs beside published references.

A family module of experiments/report (see builder.py): it holds the table
of our dense models' accuracy (or language-model loss), size and time, the
published numbers they stand beside, and the bar chart of both.
"""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.figure import Figure

from experiments.report.common import (MISSING, Group, References, ReportInputs,
                                       accuracy_percents, distinct_text, format_published,
                                       format_stat, format_wall_time, get_path, is_number,
                                       markdown_table, mean_std, published_accuracy_percent,
                                       save_figure, short_cite)

SECTION = "Baselines"
RESULTS_NAME = "baseline"

# Published references a baseline stands beside, keyed by the normalised
# model name (lowercase alphanumerics), so `lenet_300_100` and `LeNet300`
# both find them. First the same-dataset reference, then the paper's MNIST one.
BASELINE_REFERENCES: dict[str, tuple[str, ...]] = {
    "lenet300": ("xiao2017_fmnist_mlp_accuracy", "han2015_lenet300_dense_error"),
    "lenet300100": ("xiao2017_fmnist_mlp_accuracy", "han2015_lenet300_dense_error"),
    "lenet5": ("xiao2017_fmnist_cnn2_accuracy", "han2015_lenet5_dense_error"),
    "lenet5caffe": ("xiao2017_fmnist_cnn2_accuracy", "han2015_lenet5_dense_error"),
}
BASELINE_PREFIX = "baseline_"
BASELINE_FIGURE = "baselines_accuracy.png"

PREFIXES = (BASELINE_PREFIX,)


def _normalise(name: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def baseline_reference_ids(group: str, model_names: Iterable[Any]) -> tuple[str, ...]:
    """Published ids for a baseline: by its config's model name, else its run name."""
    for candidate in [*sorted(map(str, model_names)), group.removeprefix(BASELINE_PREFIX)]:
        ids = BASELINE_REFERENCES.get(_normalise(candidate))
        if ids:
            return ids
    return ()


def _lm_metric(members: Group) -> str:
    loss = [get_path(r, "metrics.val_loss_nats") for _, r in members]
    entropy = [get_path(r, "metrics.unigram_entropy_nats") for _, r in members]
    # The reduction is taken per run, then averaged: seeds may validate on the
    # same text, but the ratio is the claim, so its spread is what we report.
    reduction = [100.0 * (1.0 - l / h) for l, h in zip(loss, entropy)
                 if is_number(l) and is_number(h) and h]
    text = f"val loss {format_stat(loss, '{:.3f}')} nats"
    text += f"; unigram entropy {format_stat(entropy, '{:.3f}', collapse_equal=True)} nats"
    text += f"; {format_stat(reduction, '{:.1f}')} % below unigram"
    return text


def baseline_metric(members: Group) -> str:
    """Our headline number for a baseline group: accuracy %, or LM loss in nats."""
    acc = accuracy_percents(members)
    if acc:
        return f"{format_stat(acc)} % accuracy"
    if any(is_number(get_path(r, "metrics.val_loss_nats")) for _, r in members):
        return _lm_metric(members)
    return MISSING


def _baseline_row(inputs: ReportInputs, group: str, members: Group,
                  refs: References) -> list[str]:
    def col(dotted: str) -> list[Any]:
        return [get_path(r, dotted) for _, r in members]

    models = [m for m in col("config.model.name") if m is not None]
    ref_entries = [inputs.published_by_id(i) for i in baseline_reference_ids(group, models)]
    run = group if len(members) == 1 else f"{group} ({len(members)} seeds)"
    return [
        run,
        distinct_text(models),
        distinct_text(col("config.dataset.name")),
        baseline_metric(members),
        "; ".join(f"{format_published(e)} ({e.get('setting', MISSING)})"
                  for e in ref_entries) or MISSING,
        "; ".join(refs.cite(e) for e in ref_entries) or MISSING,
        format_stat(col("compression.params_total"), "{:,.0f}", collapse_equal=True),
        format_stat(col("compression.bytes_exported"), "{:,.0f}", collapse_equal=True),
        format_stat(col("compression.bits_per_weight"), "{:.2f}", collapse_equal=True),
        format_stat(col("timing.train_step_ms_median"), "{:.2f}"),
        format_wall_time(members),
    ]


def _same_dataset(entry: Mapping[str, Any], datasets: Sequence[Any]) -> bool:
    # A run with no recorded dataset keeps every reference rather than none.
    known = {_normalise(d) for d in datasets if d}
    return not known or _normalise(entry.get("dataset", "")) in known


def _baseline_chart(inputs: ReportInputs, groups: Mapping[str, Group]) -> bool:
    """Draws our accuracy per baseline beside the published accuracy on the
    same dataset (the table lists the rest); False if there is nothing to draw."""
    bars: list[tuple[str, float, float, str]] = []  # label, value, std, colour
    for group, members in groups.items():
        acc = accuracy_percents(members)
        if not acc:
            continue
        mean, std = mean_std(acc)
        bars.append((f"{group} (ours)", mean, std or 0.0, "tab:blue"))
        models = [m for _, r in members if (m := get_path(r, "config.model.name")) is not None]
        datasets = [get_path(r, "config.dataset.name") for _, r in members]
        for entry_id in baseline_reference_ids(group, models):
            entry = inputs.published_by_id(entry_id)
            ref = published_accuracy_percent(entry)
            if ref is not None and _same_dataset(entry, datasets):
                # The setting is in the table; a long tick label squeezes the axes.
                label = f"{short_cite(entry)} ({entry.get('dataset', 'published')})"
                bars.append((label, ref, 0.0, "tab:gray"))
    if not bars:
        return False
    fig = Figure(figsize=(7.0, 0.45 * len(bars) + 1.2))
    ax = fig.add_subplot()
    ys = list(range(len(bars)))[::-1]  # first bar on top, as in the table
    ax.barh(ys, [b[1] for b in bars], color=[b[3] for b in bars])
    spread = [(y, b) for y, b in zip(ys, bars) if b[2] > 0]
    if spread:
        ax.errorbar([b[1] for _, b in spread], [y for y, _ in spread],
                    xerr=[b[2] for _, b in spread], fmt="none", ecolor="black", capsize=3)
    ax.set_yticks(ys, [b[0] for b in bars], fontsize=7)
    low = min(b[1] - b[2] for b in bars)
    # Accuracies sit in a narrow band near 100 %; a zero-based axis hides the gaps.
    ax.set_xlim(max(0.0, math.floor(low) - 2.0), 100.0)
    ax.set_xlabel("test accuracy (%)")
    ax.set_title("ours (blue, mean ± std over seeds) vs published (grey)", fontsize=9)
    for y, (_, value, std, _) in zip(ys, bars):
        label = f" {value:.2f}" + (f" ± {std:.2f}" if std else "")
        ax.text(value + std, y, label, va="center", fontsize=7)
    fig.tight_layout()
    save_figure(fig, inputs.figures_dir / BASELINE_FIGURE)
    return True


def _baselines_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """The dense baselines (runs named `baseline_*`) beside published references."""
    groups = {g: m for g, m in groups.items() if g.startswith(BASELINE_PREFIX)}
    rows = [_baseline_row(inputs, g, m, refs) for g, m in groups.items()]
    headers = ["run", "model", "dataset", "ours", "published", "source",
               "params", "bytes exported", "bits/weight", "step ms (median)", "wall time"]
    parts = [
        "Dense models trained from scratch, exported in fp32. The published "
        "numbers come from other datasets or setups (the papers used MNIST; "
        "the Fashion-MNIST README lists submitted, untested benchmarks), so "
        "they show where a baseline should land, not a number to match. "
        "Several seeds show as mean ± sample std; a wall time leaves out a seed whose timing misses an "
        "interrupted invocation (\"≥\" where every seed's does).",
        markdown_table(headers, rows),
    ]
    if _baseline_chart(inputs, groups):
        parts.append(f"![Baseline accuracy, ours vs published]"
                     f"({inputs.figure_link(BASELINE_FIGURE)})")
    return "\n\n".join(parts)


PARTS = ((None, _baselines_part),)
