"""The report's Distillation section: students trained on a teacher's outputs.

A family module of experiments/report (see builder.py). Hinton et al. 2015
(configs/hinton2015_mlp.py): the teacher, the student alone and the student
distilled, in test errors and accuracy beside the paper's MNIST numbers, and
how much of the student-teacher gap distillation closes, judged by
common.gap_closed (the separation rule of DESIGN.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from matplotlib.figure import Figure

from experiments.report.common import (MISSING, Group, References, ReportInputs, ResultsError,
                                       accuracy_percents, column, compare, finish_line_figure, format_published,
                                       format_stat, gap_closed, get_path, is_number, loss_text, markdown_table,
                                       not_run_yet, ordering, ratio_cell, read_json, read_selection, recorded_commands,
                                       reported_values, val_losses)

SECTION = "Distillation"
RESULTS_NAME = "distillation"
HINTON = "hinton2015_mlp"
TINYBERT = "jiao2020_tinybert_char_transformer"
DISTILBERT = "sanh2019_distilbert_char_transformer"
FITNETS = "romero2015_fitnets_cnn"
RECOVERY = "distillation_recovery"
PREFIXES = (f"{HINTON}_", f"{TINYBERT}_", f"{DISTILBERT}_", f"{FITNETS}_", f"{RECOVERY}_")
INTRO = (
    "Distillation changes the loss, not the model: the teacher runs inside the student's "
    "jitted training step without gradients (`config.teacher.export`), and a loss term "
    "(compression/distillation.py) compares the two models' outputs. The MLP runs are "
    "Fashion-MNIST and the paper reports MNIST, so it is compared by its claim (how much "
    "of the student-teacher gap distillation closes), not by its absolute numbers. Test "
    "errors are of Fashion-MNIST's 10,000 test images; accuracy in %, mean ± sample std "
    "over the seeds the run column counts.",
)

TEST_IMAGES = 10_000
# (variant, row label, published MNIST errors)
HINTON_ROWS: tuple[tuple[str, str, str], ...] = (
    ("teacher", "teacher: 1200-1200", "hinton2015_mnist_teacher_errors"),
    ("student", "student alone: 800-800, labels only", "hinton2015_mnist_student_errors"),
    ("distilled", "student distilled from the teacher", "hinton2015_mnist_distilled_t20_errors"),
)
# The claim: the distilled student closes at least this much of the student-teacher gap
# (the paper's closes 91 %).
HINTON_GAP_TARGET = 0.5


def _errors(members: Group) -> list[float]:
    return [(100.0 - a) * TEST_IMAGES / 100.0 for a in accuracy_percents(members)]


def _loss_settings(members: Group) -> str:
    """`T = 20, α = 0.9`: the distillation term's settings over the runs (distinct values joined)."""
    settings: dict[str, set] = {"T": set(), "α": set()}
    for terms in column(members, "config.loss"):
        for term in terms if isinstance(terms, list) else []:
            if isinstance(term, Mapping) and term.get("term") == "knowledge_distillation":
                settings["T"].add(term.get("temperature", 1.0))
                settings["α"].add(term.get("alpha", 0.5))
    return ", ".join(f"{k} = {'/'.join(f'{v:g}' for v in sorted(vs))}" for k, vs in settings.items() if vs)


HINTON_SELECTION = "hinton2015_mlp_distilled"  # paper/selection/NAME.json, by experiments.select
HINTON_SWEEP_FIGURE = "distillation_hinton_temperature.png"


def _sweep_figure(inputs: ReportInputs) -> str:
    """The T and alpha sweep of experiments.select (paper/selection/HINTON_SELECTION.json): a figure and the choice.

    Selection accuracy (what chose) and test accuracy (what is reported) against
    T, one line per alpha; '' when the sweep has not run.
    """
    if inputs.results_dir is None:
        return ""
    sweep = read_selection(inputs, HINTON_SELECTION)
    if sweep is None:
        return (f"The temperature and α sweep (`python -m experiments.select --config={HINTON}:distilled "
                f"--grid=loss.0.temperature=1,2,4,8,20 --grid=loss.0.alpha=0.5,0.9`) has not run yet.")
    lines: dict[float, list[tuple[float, float, float | None]]] = {}
    for point in sweep["points"]:
        reported = reported_values(point, "test_accuracy")
        test = 100 * sum(reported) / len(reported) if reported and None not in reported else None
        lines.setdefault(point["point"]["loss.0.alpha"], []).append(
            (point["point"]["loss.0.temperature"], 100 * point["mean"], test))
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for alpha, points in sorted(lines.items()):
        points.sort()
        line, = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"α = {alpha:g}, selection")
        if all(p[2] is not None for p in points):
            ax.plot([p[0] for p in points], [p[2] for p in points], marker="s", linestyle="--", color=line.get_color(),
                    label=f"α = {alpha:g}, test")
    ax.set_xscale("log")
    finish_line_figure(fig, ax, "temperature T", "accuracy (%)",
                       "Distilled 800-800 student: temperature and α (Fashion-MNIST)",
                       inputs.figures_dir / HINTON_SWEEP_FIGURE)
    chosen = sweep["chosen"]
    seeds = sorted({s for p in sweep["points"] for s in p["seeds"]})
    return (f"T and α were chosen on the selection split over {len(sweep['points'])} points "
            f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''} each; `paper/selection/{HINTON_SELECTION}.json`, "
            f"`{sweep.get('command', '')}`): T = {chosen['loss.0.temperature']:g}, α = {chosen['loss.0.alpha']:g}."
            f"\n\n![The distilled student against T and α]({inputs.figure_link(HINTON_SWEEP_FIGURE)})")


def _regularisation(members: Group) -> str:
    """`dropout 0.2, jitter 0 px`: the teacher's regularisation as its runs' configs record it."""
    dropout = {v for v in column(members, "config.model.dropout_rate") if v is not None}
    shift = {v for v in column(members, "config.dataset.augment.shift") if v is not None}
    parts = ([f"dropout {'/'.join(f'{v:g}' for v in sorted(dropout))}"] if dropout else []) + (
        [f"jitter {'/'.join(f'{v:g}' for v in sorted(shift))} px"] if shift else [])
    return ", ".join(parts)


def _seeds(members: Group) -> str:
    return f"{len(members)} seed" + ("" if len(members) == 1 else "s")


def _run_cell(group: str, members: Group) -> str:
    """`` `group` (3 seeds) ``, or MISSING when the group has no run."""
    return f"`{group}` ({_seeds(members)})" if members else MISSING


def _hinton_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    found = {kind: groups.get(f"{HINTON}_{kind}", []) for kind, _, _ in HINTON_ROWS}
    not_run = not_run_yet(HINTON, [kind for kind, _, _ in HINTON_ROWS], groups)
    if not any(found.values()):
        return not_run
    rows = []
    cited = ""
    for kind, label, published_id in HINTON_ROWS:
        members = found[kind]
        entry = inputs.published_by_id(published_id)
        cited = cited or refs.cite(entry)
        settings = _loss_settings(members) if kind == "distilled" else _regularisation(members) if kind == "teacher" \
            else ""
        rows.append([label + (f" ({settings})" if settings else ""),
                     _run_cell(f"{HINTON}_{kind}", members),
                     format_stat(column(members, "compression.params_total"), "{:,.0f}", collapse_equal=True),
                     format_stat(_errors(members), "{:.0f}"), format_stat(accuracy_percents(members)),
                     format_published(entry)])
    headers = ["model", "run", "parameters", "test errors", "test accuracy (%)", f"{cited}, MNIST"]
    parts = [markdown_table(headers, rows)]
    notes = []
    check = gap_closed(accuracy_percents(found["distilled"]), accuracy_percents(found["student"]),
                       accuracy_percents(found["teacher"]), HINTON_GAP_TARGET)
    published = [inputs.published_by_id(p)["value"] for _, _, p in HINTON_ROWS]
    paper_closed = (published[1] - published[2]) / (published[1] - published[0])
    notes.append(f"The paper's distilled student closes {100 * paper_closed:.0f} % of the gap between "
                 f"its student alone and its teacher (in errors); the claim checked here is at least "
                 f"{100 * HINTON_GAP_TARGET:.0f} %" + (f": ours {check.text()}." if check else
                                                       ": not all three rows have run."))
    notes += [n for n in (not_run, recorded_commands(found.values())) if n]
    parts.append(" ".join(notes))
    sweep = _sweep_figure(inputs)
    return "\n\n".join(parts + ([sweep] if sweep else []))


def _omitted_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """The omitted-class rows: errors before and after the class's bias is raised (experiments.omitted_class)."""
    members = groups.get(f"{HINTON}_omit3_bias", [])
    published = [inputs.published_by_id(i) for i in ("hinton2015_omit3_errors", "hinton2015_omit3_errors_on_3s",
                                                      "hinton2015_omit3_bias_errors",
                                                      "hinton2015_omit3_bias_errors_on_3s")]
    cite = refs.cite(published[0])
    if not members:
        return (f"Not run yet: `{HINTON}_omit3_bias`; run `python -m experiments.reproduce "
                f"--configs={HINTON}:omit3 --seeds=0,1,2`, then `python -m experiments.omitted_class "
                f"--config={HINTON}:omit3 --seeds=0,1,2`.")
    cls = format_stat(column(members, "metrics.omitted_class"), "{:.0f}", collapse_equal=True)
    of_class = format_stat(column(members, "metrics.test_examples_of_class"), "{:.0f}", collapse_equal=True)
    offset = format_stat(column(members, "metrics.bias_offset"), "{:.1f}", collapse_equal=True)
    rows = [[f"distilled, class {cls} left out of the transfer set",
             format_stat(column(members, "metrics.test_errors_before"), "{:.0f}"),
             format_stat(column(members, "metrics.test_errors_on_class_before"), "{:.0f}") + f" of {of_class}",
             f"{published[0]['value']:g} ({published[1]['value']:g} on the 3s)"],
            [f"the same, class {cls}'s bias raised by {offset} (chosen on the selection split)",
             format_stat(column(members, "metrics.test_errors"), "{:.0f}"),
             format_stat(column(members, "metrics.test_errors_on_class"), "{:.0f}") + f" of {of_class}",
             f"{published[2]['value']:g} ({published[3]['value']:g} on the 3s; bias +3.5)"]]
    headers = ["model", "test errors", f"errors on class {cls}", f"{cite}, MNIST, without the 3s"]
    notes = [f"{_seeds(members)}; the student saw no training example of "
             f"class {cls}, only the teacher's soft targets for the other classes' images.",
             recorded_commands([members])]
    return "\n\n".join([markdown_table(headers, rows), " ".join(n for n in notes if n)])


# (variant, row label) of the Transformer students; the teacher is baseline_char_transformer.
TRANSFORMER_ROWS: tuple[tuple[str, str, str], ...] = (
    (TINYBERT, "alone", "student alone (labels)"),
    (TINYBERT, "logits", "soft targets"),
    (TINYBERT, "tinybert", "TinyBERT: soft targets + embeddings, hidden states, attention"),
    (TINYBERT, "staged", "TinyBERT in two stages: the layer losses, then soft targets"),
    (DISTILBERT, "distilbert", "DistilBERT: every other teacher layer, soft targets + labels + cosine"),
)
# `staged` starts from this first stage (the layer losses alone; its own loss is not a row).
TINYBERT_FIRST_STAGE = "layers"
TRANSFORMER_TEACHER = "baseline_char_transformer"


def _model_text(members: Group) -> str:
    layers = column(members, "config.model.num_layers")
    width = column(members, "config.model.width")
    return f"{layers[0]} x {width[0]}" if layers and width and layers[0] is not None else MISSING


def _negated(values: list) -> list:
    return [-v for v in values]


def _steps(members: Group) -> str:
    return ", ".join(sorted({str(v) for v in column(members, "config.train.num_steps")})) or MISSING


def _steps_text(found: Mapping[tuple[str, str], Group], first_stage: Group) -> str:
    """How many steps the rows train: one number for the one-stage rows; the staged row's two stages."""
    one_stage = [m for (_, kind), m in found.items() if kind != "staged"]
    text = f"Every one-stage student row trains {_steps([r for m in one_stage for r in m])} steps."
    if found.get((TINYBERT, "staged")):
        text += (f" The two-stage row trains {_steps(first_stage)} on the layer losses alone "
                 f"(`{TINYBERT}_{TINYBERT_FIRST_STAGE}`), then {_steps(found[(TINYBERT, 'staged')])} "
                 f"on the soft targets from there.")
    return text


def _transformer_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    found = {(config, kind): groups.get(f"{config}_{kind}", []) for config, kind, _ in TRANSFORMER_ROWS}
    not_run = [f"`{config}_{kind}`" for (config, kind), m in found.items() if not m]
    if len(not_run) == len(found):
        return (f"Not run yet: {', '.join(not_run)}; each runs with `python -m experiments.reproduce "
                f"--configs=CONFIG:VARIANT`.")
    teacher = groups.get(TRANSFORMER_TEACHER, [])
    rows = [["teacher", f"`{TRANSFORMER_TEACHER}`" if teacher else MISSING, _model_text(teacher),
             format_stat(column(teacher, "compression.params_total"), "{:,.0f}", collapse_equal=True),
             loss_text(teacher)]]
    for config, kind, label in TRANSFORMER_ROWS:
        members = found[(config, kind)]
        rows.append([label, _run_cell(f"{config}_{kind}", members), _model_text(members),
                     format_stat(column(members, "compression.params_total"), "{:,.0f}", collapse_equal=True),
                     loss_text(members)])
    headers = ["row", "run", "layers x width", "parameters", "val loss (nats/char)"]
    arms = [(label, _negated(val_losses(found[(config, kind)]))) for config, kind, label in TRANSFORMER_ROWS]
    first_stage = groups.get(f"{TINYBERT}_{TINYBERT_FIRST_STAGE}", [])
    entries = [inputs.published_by_id(i) for i in ("jiao2020_tinybert4_retained", "sanh2019_distilbert_retained")]
    notes = [f"{_steps_text(found, first_stage)} Best first (lower loss; neighbours the seeds do not separate "
             f"by 0.02 nats, or with 3 seeds by twice their standard error, are joined by ≈): "
             f"{ordering(arms, unit='nats')}.",
             f"Published: {refs.cite(entries[0])}: TinyBERT-4 keeps {format_published(entries[0])} on GLUE; "
             f"{refs.cite(entries[1])}: DistilBERT keeps {format_published(entries[1])}.",
             f"Not run yet: {', '.join(not_run)}." if not_run else "",
             recorded_commands([teacher, first_stage, *found.values()])]
    return "\n\n".join([markdown_table(headers, rows), " ".join(n for n in notes if n)])


FITNETS_ROWS: tuple[tuple[str, str], ...] = (
    ("teacher", "teacher: VGG, 2 stages of 2 convolutions (32, 64 channels)"),
    ("student", "student alone: 2 stages of 3 convolutions (8, 16 channels)"),
    ("kd", "student, soft targets"),
    ("fitnet", "FitNet: hints, then soft targets"),
    ("at", "student, attention transfer"),
)


def _fitnets_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    found = {kind: groups.get(f"{FITNETS}_{kind}", []) for kind, _ in FITNETS_ROWS}
    not_run = not_run_yet(FITNETS, [k for k, _ in FITNETS_ROWS + (("hints", ""),)], groups)
    if not any(found.values()):
        return not_run
    rows = [[label, _run_cell(f"{FITNETS}_{kind}", found[kind]),
             format_stat(column(found[kind], "compression.params_total"), "{:,.0f}", collapse_equal=True),
             format_stat(accuracy_percents(found[kind]))] for kind, label in FITNETS_ROWS]
    headers = ["row", "run", "parameters", "test accuracy (%)"]
    teacher, fitnet = (inputs.published_by_id(i) for i in ("romero2015_cifar10_teacher_accuracy",
                                                           "romero2015_cifar10_fitnet_accuracy"))
    claim = compare(accuracy_percents(found["fitnet"]), accuracy_percents(found["teacher"]))
    verdict = (f"ours: the FitNet is {claim.verdict('above', 'below')} the teacher "
               f"({claim.difference:+.2f} points)" if claim else "ours: not both rows have run")
    arms = [(label.split(":")[0], accuracy_percents(found[kind])) for kind, label in FITNETS_ROWS[1:]]
    notes = [f"{refs.cite(fitnet)} on CIFAR-10: the FitNet {format_published(fitnet)} against its teacher's "
             f"{format_published(teacher)}, with about a quarter of the parameters; {verdict}.",
             f"The students, best first: {ordering(arms)}.", not_run, recorded_commands(found.values())]
    return "\n\n".join([markdown_table(headers, rows), " ".join(n for n in notes if n)])


# (variant, label, dense reference group, higher is better)
RECOVERY_ROWS: tuple[tuple[str, str, str, bool], ...] = (
    ("pruned90_lenet300", "LeNet-300-100, 90 % pruned", "baseline_lenet300", True),
    ("ternary_lenet5", "LeNet-5, ternary", "baseline_lenet5", True),
    ("w4a4_transformer", "Transformer, 4-bit weights and activations", "baseline_char_transformer", False),
)


def _quality(members: Group, higher_is_better: bool) -> list:
    return accuracy_percents(members) if higher_is_better else _negated(val_losses(members))


def _recovery_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    del refs
    variants = [v for kind, *_ in RECOVERY_ROWS for v in (kind, f"{kind}_kd")]
    not_run = not_run_yet(RECOVERY, variants, groups)
    if not any(groups.get(f"{RECOVERY}_{v}") for v in variants):
        return not_run
    rows = []
    for kind, label, dense_group, higher in RECOVERY_ROWS:
        alone, taught = groups.get(f"{RECOVERY}_{kind}", []), groups.get(f"{RECOVERY}_{kind}_kd", [])
        dense = groups.get(dense_group, [])
        show = (lambda m: format_stat(accuracy_percents(m))) if higher else loss_text
        check = gap_closed(_quality(taught, higher), _quality(alone, higher), _quality(dense, higher), 0.5,
                           "points" if higher else "nats")
        rows.append([label, show(dense), show(alone), show(taught), check.text() if check else MISSING])
    headers = ["compressed model", "dense (the teacher)", "fine-tuned alone", "fine-tuned with the teacher",
               "the teacher's recovery of the gap to dense"]
    notes = ["Accuracy in % for the LeNets, validation loss in nats per character for the Transformer; "
             "both fine-tunes of a model train the same steps from the same compressed start, and the "
             "recovery is judged against half the gap by the separation rule.",
             not_run, recorded_commands([groups.get(f"{RECOVERY}_{v}", []) for v in variants])]
    return "\n\n".join([markdown_table(headers, rows), " ".join(n for n in notes if n)])


BENCHMARK = "benchmark_distillation/benchmark.json"  # under the results folder
BENCHMARK_VARIANTS = ("in_step", "precomputed")
BENCHMARK_AIM = 1.10  # experiments/benchmark_distillation.py's TARGET_RATIO, for precomputed/plain


def _benchmark_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    del groups, refs
    path = None if inputs.results_dir is None else inputs.results_dir / BENCHMARK
    command = f"python -m experiments.benchmark_distillation --out={BENCHMARK}"
    if path is None or not path.is_file():
        return f"Not run yet: `{command}` (paths under the results folder)."
    data = read_json(path)
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ResultsError(f"{path}: expected an object with a 'results' list of objects "
                           "(experiments/benchmark_distillation.py --out)")
    table = [[str(r.get("model", MISSING)), str(r.get("batch_size", MISSING)), str(r.get("steps", MISSING)),
              *(f"{v:.2f}" if is_number(v := get_path(r, f"ms_median.{k}")) else MISSING
                for k in ("plain", *BENCHMARK_VARIANTS)),
              *(ratio_cell(r, k, "plain") for k in BENCHMARK_VARIANTS),
              ("yes" if get_path(r, "ratio_to_float.precomputed") <= BENCHMARK_AIM else "no")
              if is_number(get_path(r, "ratio_to_float.precomputed")) else MISSING] for r in rows]
    headers = ["student", "batch", "timed steps", "no teacher ms/step", "teacher in step ms/step",
               "precomputed ms/step", "in step / none", "precomputed / none",
               f"precomputed within {BENCHMARK_AIM:.2f}×"]
    return "\n\n".join([
        "The student's driver step with no teacher, with the teacher's forward pass in the step, and with "
        "the teacher's outputs read from disk, timed side by side in one run (repetitions interleaved; "
        "a ratio counts as slower or faster only where the repetitions' ranges do not overlap); "
        f"device {data.get('device', MISSING)}, jax {data.get('jax', MISSING)}.",
        markdown_table(headers, table), f"Measured by `{command}`."])


PARTS: tuple[tuple[str, Any], ...] = (
    ("Hinton et al. 2015: soft targets from a large teacher", _hinton_part),
    ("Hinton et al. 2015: a class the student never saw", _omitted_part),
    ("Transformer students: soft targets, TinyBERT and DistilBERT", _transformer_part),
    ("FitNets: hints for a thin, deep student", _fitnets_part),
    ("Distillation as recovery after compression", _recovery_part),
    ("The teacher's cost in the training step", _benchmark_part),
)
