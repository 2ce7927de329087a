"""The report's Pruning section, second part: structured vs unstructured pruning.

A family module of experiments/report (see builder.py): at equal nonzero
weights, LeNet-300-100 neurons (configs/ablation_structured_lenet300.py) and
LeNet-5 filters after Li et al. 2017 (configs/li2017_lenet5.py) against
global magnitude pruning, with the exports' inference latency timed side by
side by experiments/benchmark_inference.py, whose --out JSON sits at
RESULTS/<latency_dir>/latency.json; and the multiple-of-8 width control.
Verdicts come from experiments/report/common.py, the one place the report
decides them: which kind keeps more accuracy from common.compare (the
separation rule over seeds), faster / slower / no difference from
common.compare_repeats (a difference inside the repetitions' range is no
difference).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from experiments.report.common import (FASTER, LATENCY_BATCHES, MISSING, NEEDS_SEEDS, NO_DIFFERENCE, NOT_JUDGED,
                                       SLOWER, Comparison, Group, References, ReportInputs,
                                       accuracy_percents, column, compare, format_stat,
                                       is_number, latency_by_group, latency_line, latency_speedup,
                                       markdown_table, mean_accuracy, mean_or_none, latency_ms,
                                       read_latency, seeds_text, signed_points, speed_class)

SECTION = "Pruning"
RESULTS_NAME = "pruning"

STRUCTURED_LEVELS = (25, 50, 75)
UNSTRUCTURED_KIND = "unstructured"
LI2017_REFERENCE = "li2017_vgg16_flops_reduction"


@dataclasses.dataclass(frozen=True)
class StructuredAblation:
    """One model's structured runs (PREFIX + kind + _P) beside unstructured ones
    holding exactly as many nonzero weights, and their latency JSON."""
    label: str          # `LeNet-300-100`
    prefix: str         # run names are PREFIX + KIND + `_` + P
    kind: str           # the structured kind's run name: `neurons`, `filters`
    removes: str        # what the structured kind removes, for the text
    dense_group: str
    latency_dir: str    # RESULTS/latency_dir/latency.json
    references: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, str]:
        return (self.kind, UNSTRUCTURED_KIND)

    def group(self, kind: str, level: int) -> str:
        return f"{self.prefix}{kind}_{level}"


STRUCTURED_ABLATIONS: tuple[StructuredAblation, ...] = (
    StructuredAblation("LeNet-300-100", "ablation_structured_lenet300_", "neurons",
                       "P % of the neurons of each hidden layer", "baseline_lenet300",
                       "structured_latency_lenet300"),
    StructuredAblation("LeNet-5", "li2017_lenet5_", "filters",
                       "P % of the filters of each conv layer and of the 500 dense neurons",
                       "baseline_lenet5", "structured_latency_lenet5", (LI2017_REFERENCE,)),
)

PREFIXES = tuple(s.prefix for s in STRUCTURED_ABLATIONS)


@dataclasses.dataclass(frozen=True)
class _AblationRow:
    """One table row: its runs, their latency row (None: not timed) and derived numbers."""
    level: int | None       # None: the dense reference
    kind: str
    members: Group
    latency: Mapping[str, Any] | None
    accuracy: float | None  # mean test accuracy, %
    flops: float | None
    flops_from_results: bool  # no latency row: FLOPs as results.json has them


def _first_number(*values: Any) -> float | None:
    return next((float(v) for v in values if is_number(v)), None)


def _ablation_rows(groups: Mapping[str, Group], study: StructuredAblation,
                   latency: Mapping[str, Any] | None) -> list[_AblationRow]:
    """The dense reference (when run or timed), then each level's kinds that have results."""
    timed = latency_by_group(latency)
    wanted: list[tuple[int | None, str, str]] = [(None, "dense", study.dense_group)]
    wanted += [(p, k, study.group(k, p)) for p in STRUCTURED_LEVELS for k in study.kinds]
    rows = []
    for level, kind, group in wanted:
        members, lat = groups.get(group, []), timed.get(group)
        if not members and not (level is None and lat):
            continue
        lat_flops = lat.get("flops_per_example") if lat else None
        flops = _first_number(lat_flops, *column(members, "compression.flops_per_example"))
        rows.append(_AblationRow(level, kind, members, lat,
                                 mean_or_none(accuracy_percents(members)), flops,
                                 flops is not None and not is_number(lat_flops)))
    return rows


def _size_cell(row: _AblationRow, dotted: str, latency_key: str,
               dense_fallback: str | None = None) -> str:
    """A size from results.json (over seeds), else the latency JSON's count of the export."""
    text = format_stat(column(row.members, dotted), "{:,.0f}", collapse_equal=True)
    if text == MISSING and row.latency is not None and is_number(row.latency.get(latency_key)):
        text = f"{row.latency[latency_key]:,.0f}"
    if text == MISSING and dense_fallback and row.level is None:
        text = format_stat(column(row.members, dense_fallback), "{:,.0f}", collapse_equal=True)
    return text


def _ablation_cells(row: _AblationRow, dense: float | None,
                    latency: Mapping[str, Any] | None) -> list[str]:
    change = None if row.accuracy is None or dense is None else row.accuracy - dense
    flops = MISSING if row.flops is None else f"{row.flops:,.0f}" + (
        "†" if row.flops_from_results else "")
    ms = [latency_ms(row.latency, b) for b in LATENCY_BATCHES]
    speed = [None if latency is None or row.latency is None
             else latency_speedup(latency, row.latency, b) for b in LATENCY_BATCHES]
    return [
        "0" if row.level is None else f"{row.level}",
        row.kind,
        format_stat(accuracy_percents(row.members)),
        signed_points(change),
        # The dense export is the full model: its params_total is what it exports.
        _size_cell(row, "compression.params_exported", "params_total",
                   dense_fallback="compression.params_total"),
        _size_cell(row, "compression.weights_nonzero", "weights_nonzero"),
        _size_cell(row, "compression.bytes_exported", "bytes_exported"),
        flops,
        *[MISSING if m is None else f"{m:.3f}" for m in ms],
        *[MISSING if x is None else f"{x:.2f}×" for x in speed],
    ]


def _ablation_table(inputs: ReportInputs, groups: Mapping[str, Group],
                    study: StructuredAblation
                    ) -> tuple[str, list[_AblationRow], Mapping[str, Any] | None]:
    """The model's sub-part (table and notes), its rows and latency JSON, for the finding."""
    kinds = f"{{{','.join(study.kinds)}}}"
    path_text, latency = read_latency(inputs, study.latency_dir)
    rows = _ablation_rows(groups, study, latency)
    pruned = [r for r in rows if r.level is not None]
    title = f"#### {study.label}"
    if not pruned:
        return (f"{title}\n\nNo {study.label} results (`{study.prefix}{kinds}_P` for P in "
                f"{', '.join(map(str, STRUCTURED_LEVELS))}) yet.", [], latency)
    dense = mean_accuracy(groups, study.dense_group)
    headers = ["P (%)", "kind", "test accuracy (%)", "change vs dense (points)",
               "params exported", "nonzero weights", "bytes exported", "FLOPs / example",
               *[f"ms / batch, b={b}" for b in LATENCY_BATCHES],
               *[f"speedup vs dense, b={b}" for b in LATENCY_BATCHES]]
    parts = [title, markdown_table(headers, [_ablation_cells(r, dense, latency) for r in rows])]
    notes = []
    dense_members = groups.get(study.dense_group, [])
    if dense_members:
        seeds = f", {len(dense_members)} seeds" if len(dense_members) > 1 else ""
        notes.append(f"Dense accuracy: `{study.dense_group}`{seeds}, "
                     f"{format_stat(accuracy_percents(dense_members))} %.")
    else:
        notes.append(f"Dense baseline `{study.dense_group}` not run yet: no accuracy change.")
    missing = [f"{k}_{p}" for p in STRUCTURED_LEVELS for k in study.kinds
               if not groups.get(study.group(k, p))]
    if missing:
        notes.append(f"Not run yet: {len(missing)} of {2 * len(STRUCTURED_LEVELS)} runs "
                     f"(after `{study.prefix}`: " + ", ".join(f"`{n}`" for n in missing) + ").")
    if latency is None:
        runs = ",".join([f"runs/{study.dense_group}/seed_0"] + [
            f"runs/{study.group(k, p)}" for k in study.kinds for p in STRUCTURED_LEVELS])
        notes.append(f"No latency measurement (`{path_text}`) yet: run "
                     f"`python -m experiments.benchmark_inference --runs={runs} "
                     f"--out={path_text}`.")
    else:
        untimed = [r.kind if r.level is None else f"{r.kind}_{r.level}"
                   for r in rows if r.latency is None]
        if untimed:
            notes.append("Not in the latency run: " + ", ".join(f"`{n}`" for n in untimed) + ".")
    if any(r.flops_from_results for r in rows):
        notes.append("† FLOPs as the run's results.json has them (no latency row counted the "
                     "export): results written before the FLOPs fix count the masked "
                     "full-size model, not the smaller export.")
    parts.append(" ".join(notes))
    if latency is not None:
        parts.append(latency_line(path_text, latency))
    return "\n\n".join(parts), rows, latency


def _levels_text(levels: Sequence[int]) -> str:
    return f"P = {', '.join(map(str, levels))}"


def _speed_text(kind: str, values: Mapping[int, float], classes: Mapping[int, str]) -> str:
    """`neurons 1.30×, 1.67×, 2.90× (faster than dense at every level)`."""
    by_class: dict[str, list[int]] = {}
    for level in sorted(values):
        by_class.setdefault(classes[level], []).append(level)
    if len(by_class) == 1:
        (which,) = by_class
        qual = (f"{which} from dense at every level" if which == NO_DIFFERENCE
                else f"{which} at every level" if which == NOT_JUDGED
                else f"{which} than dense at every level")
    else:
        qual = "; ".join(f"{which} at {', '.join(map(str, levels))} %"
                         for which in (FASTER, SLOWER, NO_DIFFERENCE, NOT_JUDGED)
                         if (levels := by_class.get(which)))
    return f"{kind} " + ", ".join(f"{x:.2f}×" for _, x in sorted(values.items())) + f" ({qual})"


def _levels_list(levels: Sequence[int], comparisons: Mapping[int, Comparison]) -> str:
    """`25 %; 50, 75 %: one seed`: levels, those that rest on under 3 seeds said so."""
    many = [p for p in levels if not comparisons[p].few_seeds]
    few = [p for p in levels if comparisons[p].few_seeds]
    seeds = seeds_text(comparisons[p].fewest_seeds for p in few)
    parts = ([f"{', '.join(map(str, many))} %"] if many else []) + (
        [f"{', '.join(map(str, few))} %: {seeds}"] if few else [])
    return "; ".join(parts)


def _accuracy_sentence(study: StructuredAblation, both: Sequence[int],
                       comparisons: Mapping[int, Comparison]) -> tuple[str, str | None]:
    """Which kind keeps more accuracy, level by level by common.compare; (text, the kind or None)."""
    s_kind, u_kind = study.kinds
    wins = {u_kind: [p for p in both if comparisons[p].sign > 0],
            s_kind: [p for p in both if comparisons[p].sign < 0]}
    ties = [p for p in both if comparisons[p].sign == 0]
    many = ", ".join(str(p) for p in ties if not comparisons[p].few_seeds)
    few = [p for p in ties if comparisons[p].few_seeds]
    seeds = seeds_text(comparisons[p].fewest_seeds for p in few)
    tie_text = " and ".join(
        ([f"not separated at {many} %"] if many else [])
        + ([f"{'' if many else 'not separated '}at {', '.join(map(str, few))} % ({seeds}: {NEEDS_SEEDS})"]
           if few else []))
    winners = [k for k in (u_kind, s_kind) if wins[k]]
    if len(winners) == 1:
        (kind,) = winners
        text = (f"{kind} keeps more accuracy at equal nonzero weights, at {len(wins[kind])} of "
                f"{len(both)} levels ({_levels_list(wins[kind], comparisons)})")
        return text + (f"; {tie_text}" if tie_text else ""), kind
    if winners:
        text = ("neither kind keeps more accuracy at every level: " + "; ".join(
            f"{k} ahead at {_levels_list(wins[k], comparisons)}" for k in winners))
        return text + (f"; {tie_text}" if tie_text else ""), None
    return f"neither kind keeps more accuracy at equal nonzero weights: {tie_text}", None


def _ablation_finding(inputs: ReportInputs, study: StructuredAblation,
                      rows: Sequence[_AblationRow], latency: Mapping[str, Any] | None,
                      refs: References) -> str:
    """What this model's numbers say: which kind gives speed, which keeps accuracy."""
    dense = next((r for r in rows if r.level is None), None)
    by = {(r.level, r.kind): r for r in rows if r.level is not None}
    both = [p for p in STRUCTURED_LEVELS
            if all(by.get((p, k)) and by[p, k].accuracy is not None for k in study.kinds)]
    if not both:
        return ""
    s_kind, u_kind = study.kinds
    sentences = []

    def speedup(level: int, kind: str, batch: int) -> float | None:
        row = by[level, kind].latency
        return None if latency is None or row is None else latency_speedup(latency, row, batch)

    # Speed is compared where both kinds were timed at every batch size.
    timed = [p for p in both if all(speedup(p, k, b) is not None
                                    for k in study.kinds for b in LATENCY_BATCHES)]
    speeds = {b: {k: {p: speedup(p, k, b) for p in timed} for k in study.kinds}
              for b in LATENCY_BATCHES}
    classes = ({b: {k: {p: speed_class(latency, by[p, k].latency, b) for p in timed}
                    for k in study.kinds} for b in LATENCY_BATCHES} if latency is not None else {})
    if timed:
        sentences.append(
            f"{study.label}, speedup against the dense export ({_levels_text(timed)}; faster or "
            "slower only where the repetitions' ranges do not overlap): "
            + "; ".join(f"at batch {b}, " + " against ".join(
                _speed_text(k, speeds[b][k], classes[b][k]) for k in study.kinds)
                for b in LATENCY_BATCHES)
            + ".")
    else:
        sentences.append(f"{study.label}: no latency for both kinds at any level both ran "
                         f"({_levels_text(both)}), so no speed comparison.")
    acc = {k: [by[p, k].accuracy for p in both] for k in study.kinds}
    comparisons = {p: compare(accuracy_percents(by[p, u_kind].members),
                              accuracy_percents(by[p, s_kind].members)) for p in both}
    dense_acc = dense.accuracy if dense is not None else None
    if dense_acc is not None:
        changes = "; ".join(f"{k} " + ", ".join(signed_points(a - dense_acc) for a in acc[k])
                            for k in study.kinds)
        detail = f". Change vs dense in points: {changes}"
    else:
        detail = ". Accuracy %: " + "; ".join(
            f"{k} " + ", ".join(f"{a:.2f}" for a in acc[k]) for k in study.kinds)
    acc_text, acc_kind = _accuracy_sentence(study, both, comparisons)
    sentences.append(acc_text[0].upper() + acc_text[1:] + detail + ".")
    if timed:
        b = LATENCY_BATCHES[-1]
        speed = speeds[b]
        fast = {k: sum(c == FASTER for c in classes[b][k].values()) for k in study.kinds}
        if fast[s_kind] == fast[u_kind]:
            speed_text = (f"neither kind is faster than dense at batch {b}" if not fast[s_kind]
                          else f"both kinds are faster than dense at {fast[s_kind]} of "
                               f"{len(timed)} levels at batch {b}")
        else:
            speed_kind = max(study.kinds, key=lambda k: fast[k])
            other = u_kind if speed_kind == s_kind else s_kind
            speed_text = (f"{speed_kind} pruning is the kind that gives speed (faster than "
                          f"dense at {fast[speed_kind]} of {len(timed)} levels at batch {b}, "
                          f"{other} at {fast[other]})")
        keep = ("" if acc_kind is None
                else f", {acc_kind} pruning the kind that keeps accuracy")
        sentences.append(f"So on {study.label}, {speed_text}{keep}.")
        slow = [p for p in timed if classes[b][s_kind][p] == SLOWER
                and dense is not None and dense.flops and by[p, s_kind].flops is not None
                and by[p, s_kind].flops < dense.flops]
        if slow:
            sentences.append(
                f"Fewer FLOPs did not always mean faster: {s_kind} at "
                + ", ".join(f"{p} % ({100.0 * (1.0 - by[p, s_kind].flops / dense.flops):.0f} % "
                            f"fewer FLOPs, {speed[s_kind][p]:.2f}×)" for p in slow)
                + f" ran slower than dense at batch {b} in this one timing run.")
    # FLOPs from results.json may be the masked full-size count: only the
    # exports the latency benchmark counted go into the comparison with the paper.
    if (LI2017_REFERENCE in study.references and dense is not None and dense.flops
            and not dense.flops_from_results):
        cut = {p: 100.0 * (1.0 - row.flops / dense.flops) for p in STRUCTURED_LEVELS
               if (row := by.get((p, s_kind))) and row.flops is not None
               and not row.flops_from_results}
        if cut:
            entry = inputs.published_by_id(LI2017_REFERENCE)
            levels = sorted(cut)
            changes = [None if dense_acc is None or by[p, s_kind].accuracy is None
                       else by[p, s_kind].accuracy - dense_acc for p in levels]
            sentences.append(
                f"{refs.cite(entry)} report up to {entry['value']:g} % fewer FLOPs for "
                f"{entry.get('dataset', MISSING)} VGG-16 at close to the original accuracy; "
                f"our {s_kind} exports have " + ", ".join(f"{cut[p]:.0f} %" for p in levels)
                + f" fewer FLOPs than the dense {study.label} ({_levels_text(levels)}) at "
                + ", ".join(signed_points(c) for c in changes) + " points.")
    return " ".join(sentences)


def _structured_vs_unstructured_part(inputs: ReportInputs, groups: Mapping[str, Group],
                                     refs: References) -> str:
    structured = "; ".join(f"`{s.prefix}{s.kind}_P` removes {s.removes}"
                           for s in STRUCTURED_ABLATIONS)
    parts = [
        "Each model's trained dense baseline is pruned one-shot at three levels P and "
        f"fine-tuned for two epochs, in two ways. Structured ({structured}), those with "
        "the smallest L1 norm of their incoming weights: the export is a smaller dense "
        "model. Unstructured (`..._unstructured_P`): global weight magnitude down to "
        "exactly as many nonzero weights as the structured run at the same P, exported "
        "sparse (values + indices); it is small on disk but loads as dense tensors and "
        "runs the dense shapes, zeros included, so its FLOPs are the dense model's. "
        "Params exported count what the export holds (the full model for a sparse one), "
        "nonzero weights the weight-matrix entries that are not zero; sizes come from "
        "results.json, from the latency JSON where results.json lacks them. FLOPs are 2 "
        "per multiply-add of the matmuls and convolutions of one example through the "
        "exported model, as the latency benchmark counted them. The dense row's accuracy "
        "is the baseline's mean over its seeds, its timing that of the export the latency "
        "run names as its reference.",
    ]
    findings = []
    for study in STRUCTURED_ABLATIONS:
        text, rows, latency = _ablation_table(inputs, groups, study)
        parts.append(text)
        finding = _ablation_finding(inputs, study, rows, latency, refs)
        if finding:
            findings.append(finding)
    if findings:
        parts.append("Finding: " + " ".join(findings))
    width = _width_control_part(inputs, groups)
    if width:
        parts.append(width)
    return "\n\n".join(parts)


WIDTH_CONTROL = ("li2017_lenet5_filters_25", "li2017_lenet5_filters8_25", "structured_latency_lenet5")


def _width_control_part(inputs: ReportInputs, groups: Mapping[str, Group]) -> str:
    """filters_25 against filters8_25 (kept counts rounded up to multiples of 8): accuracy and speed."""
    plain, rounded, latency_dir = WIDTH_CONTROL
    if not groups.get(rounded):
        return ""
    _, latency = read_latency(inputs, latency_dir)
    timed = latency_by_group(latency)

    def described(group: str) -> str:
        members = groups.get(group, [])
        row = timed.get(group)
        model = (row or {}).get("model") or {}
        shape = (f"{'/'.join(str(c) for c in model['conv_features'])} filters and "
                 f"{model['dense_features']} neurons"
                 if "conv_features" in model and "dense_features" in model else "its widths")
        accuracy = format_stat(accuracy_percents(members)) if members else MISSING
        speeds = [(latency_speedup(latency, row, b) if latency is not None and row is not None else None)
                  for b in LATENCY_BATCHES]
        speed = ", ".join(f"{'n/a' if x is None else f'{x:.2f}×'} at batch {b}"
                          + ("" if x is None else f" ({speed_class(latency, row, b)})")
                          for x, b in zip(speeds, LATENCY_BATCHES))
        return f"`{group}` keeps {shape}: {accuracy} % test accuracy, speed against dense {speed}"

    return ("Hardware-friendly widths (LeNet-5): `structured_prune(multiple_of=8)` rounds each "
            "layer's kept count up to a multiple of 8. " + described(plain) + "; "
            + described(rounded) + ". The latency numbers are from the same timing run "
            f"(`{latency_dir}/latency.json`)" + ("" if latency is not None else ", not run yet") + ".")


PARTS = (
    ("Structured vs unstructured pruning: size, accuracy and speed",
     _structured_vs_unstructured_part),
)
