"""The report's Distillation section: students trained on a teacher's outputs.

A family module of experiments/report (see builder.py). Hinton et al. 2015
(configs/hinton2015_mlp.py): the teacher, the student alone and the student
distilled, in test errors and accuracy beside the paper's MNIST numbers, and
how much of the student-teacher gap distillation closes, judged by
common.gap_closed (the separation rule of DESIGN.md).
"""

from __future__ import annotations

from typing import Any, Mapping

from experiments.report.common import (MISSING, Group, References, ReportInputs, accuracy_percents,
                                       column, format_published, format_stat, gap_closed, markdown_table,
                                       not_run_yet, recorded_commands)

SECTION = "Distillation"
RESULTS_NAME = "distillation"
HINTON = "hinton2015_mlp"
PREFIXES = (f"{HINTON}_",)
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
    ("teacher", "teacher: 1200-1200, dropout, inputs jittered ±2 px", "hinton2015_mnist_teacher_errors"),
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


def _runs(members: Group) -> str:
    return f"{len(members)} seed" + ("" if len(members) == 1 else "s")


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
        settings = _loss_settings(members) if kind == "distilled" else ""
        rows.append([label + (f" ({settings})" if settings else ""),
                     f"`{HINTON}_{kind}` ({_runs(members)})" if members else MISSING,
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
    return "\n\n".join(parts)


PARTS: tuple[tuple[str, Any], ...] = (
    ("Hinton et al. 2015: soft targets from a large teacher", _hinton_part),
)
