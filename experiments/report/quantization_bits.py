"""The report's Quantization section, second part: bit-width sweeps.

A family module of experiments/report (see builder.py): post-training
quantization (min-max, MSE and mixed-precision ranges) against
quantization-aware training at each bit width on the LeNets
(configs/ablation_bits_{lenet300,lenet5}.py), and the char Transformer at 8
and 4 bits, weights only and with activations
(configs/ablation_bits_char_transformer.py). "Within a point of float" is
common.within, the separation rule of DESIGN.md.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from matplotlib.figure import Figure

from configs import quantization_common
from experiments.report.common import (CLAIM_EPS, MISSING, NEEDS_SEEDS, NOT_SEPARATED, UNRECOVERABLE_MARK, Group,
                                       References, ReportInputs, accuracy_line,
                                       accuracy_percents, column, compare, config_text,
                                       finish_line_figure, format_stat, loss_change, loss_text,
                                       markdown_table, mean_or_none, mean_std, not_run_yet,
                                       recorded_commands, seeds_text, signed_nats, val_losses, with_mark,
                                       within)

SECTION = "Quantization"


def _distinct_sizes(by_label: Mapping[str, Group], dotted: str, fmt: str) -> str:
    """One size when every kind's runs agree, else `PTQ 1,234; QAT 1,240`.

    Sizes agree by their numbers: a size from a dirty tree's run (marked) agrees
    with the same size unmarked, and the one size shown then keeps the mark.
    """
    texts = {label: format_stat(column(members, dotted), fmt, collapse_equal=True)
             for label, members in by_label.items() if members}
    known = {label: t for label, t in texts.items() if t != MISSING}
    if not known:
        return MISSING
    numbers = {t.replace(UNRECOVERABLE_MARK, "") for t in known.values()}
    if len(numbers) == 1:
        return with_mark(numbers.pop(), any(UNRECOVERABLE_MARK in t for t in known.values()))
    return "; ".join(f"{label} {t}" for label, t in known.items())


# --------------------------------------------------------------------------
# Bit-width sweeps on the LeNets: PTQ (min-max and MSE ranges) against QAT.

BIT_LEVELS = (32, 16, 8, 6, 4, 3, 2, 1)  # configs/quantization_common.py; 32 = float
SWEEP_KINDS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("ptq", "PTQ min-max", BIT_LEVELS),
    ("ptqmse", "PTQ MSE", (16, 8, 6, 4, 3, 2)),
    ("ptqmixed", "PTQ mixed", (6, 4, 3, 2)),  # B: a budget of bits per weight
    ("qat", "QAT", BIT_LEVELS),
)
SWEEP_STYLES = {"ptq": ("tab:orange", "s"), "ptqmse": ("tab:green", "^"),
                "ptqmixed": ("tab:purple", "D"), "qat": ("tab:blue", "o")}
# "Near float" in the sweep's summary line: at most this many points below.
SWEEP_NEAR_POINTS = 1.0


@dataclasses.dataclass(frozen=True)
class BitSweep:
    label: str
    config: str   # runs are CONFIG_KIND_BITS
    figure: str


BIT_SWEEPS: tuple[BitSweep, ...] = (
    BitSweep("LeNet-300-100", "ablation_bits_lenet300", "quantization_bits_lenet300.png"),
    BitSweep("LeNet-5", "ablation_bits_lenet5", "quantization_bits_lenet5.png"),
)


def _sweep_variants() -> list[str]:
    return [f"{kind}_{b}" for b in BIT_LEVELS for kind, _, levels in SWEEP_KINDS if b in levels]


def _sweep_found(groups: Mapping[str, Group], sweep: BitSweep) -> dict[int, dict[str, Group]]:
    """{bits: {kind: members}} for the runs that exist."""
    found: dict[int, dict[str, Group]] = {}
    for kind, _, levels in SWEEP_KINDS:
        for b in levels:
            members = groups.get(f"{sweep.config}_{kind}_{b}")
            if members:
                found.setdefault(b, {})[kind] = members
    return found


def _sweep_chart(inputs: ReportInputs, sweep: BitSweep,
                 found: Mapping[int, Mapping[str, Group]]) -> bool:
    """Accuracy vs bits (categorical axis, 1 to 32), one line per kind."""
    levels = sorted(found)
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    drawn = False
    for kind, label, _ in SWEEP_KINDS:
        drawn |= accuracy_line(ax, [found[b].get(kind, []) for b in levels], SWEEP_STYLES[kind], label)
    if not drawn:
        return False
    ax.set_xticks(range(len(levels)), [f"{b}" for b in levels])
    ax.set_xlim(-0.5, len(levels) - 0.5)
    finish_line_figure(fig, ax, "bits per kernel weight (32 = float; 1 = binary)",
                       "test accuracy (%)",
                       f"Bit-width sweep on {sweep.label} (Fashion-MNIST)",
                       inputs.figures_dir / sweep.figure)
    return True


def _fewest_bits_near_float(found: Mapping[int, Mapping[str, Group]]) -> str:
    """Per kind, the fewest bits whose accuracy is within SWEEP_NEAR_POINTS of its float control.

    Each bit width is judged by common.within (the separation rule): it counts
    where the claim holds; bit widths above that fewest one where it is not
    separated from the bound (e.g. one seed, under a point from it) are named.
    """
    texts = []
    for kind, label, _ in SWEEP_KINDS:
        control = "qat" if kind == "qat" else "ptq"
        float_runs = accuracy_percents(found.get(32, {}).get(control, []))
        if not float_runs:
            continue
        checks = {b: c for b in sorted(found) if b != 32 and (members := found[b].get(kind))
                  and (c := within(accuracy_percents(members), float_runs,
                                   SWEEP_NEAR_POINTS)) is not None}
        if not checks:
            continue
        holds = [b for b, c in checks.items() if c.holds]
        open_ = [b for b, c in checks.items() if c.outcome == NOT_SEPARATED
                 and (not holds or b < min(holds))]
        few = all(checks[b].few_seeds for b in open_)
        text = (f"{label} {min(holds)} bits" + (f" ({checks[min(holds)].seeds})" if checks[min(holds)].few_seeds
                                                else "")
                if holds else f"{label} none ({len(checks)} run{'s' if len(checks) > 1 else ''})")
        if open_:
            seeds = seeds_text(checks[b].fewest_seeds for b in open_)
            text += (f", not separated from the bound at {', '.join(map(str, sorted(open_, reverse=True)))} "
                     f"bits" + (f" ({seeds}: {NEEDS_SEEDS})" if few else ""))
        texts.append(text)
    if not texts:
        return ""
    return (f"Fewest bits run within {SWEEP_NEAR_POINTS:.1f} point of the float model (PTQ "
            "against `ptq_32`, QAT against `qat_32`; a bit width counts where the drop, with "
            "twice its standard error or, with one seed, at least a point from the bound, lies "
            "within it): " + "; ".join(texts) + ".")


def _control_check(found: Mapping[int, Mapping[str, Group]]) -> str:
    """Whether QAT's float control (`qat_32`) stays within one std of the trained model (`ptq_32`).

    A fine-tune that moves the float model off its optimum lowers the bar every
    QAT row is judged against; the recipe is chosen so that it does not.
    """
    trained = accuracy_percents(found.get(32, {}).get("ptq", []))
    control = accuracy_percents(found.get(32, {}).get("qat", []))
    if not trained or not control:
        return ""
    (trained_mean, std), (control_mean, _) = mean_std(trained), mean_std(control)
    gap = control_mean - trained_mean
    text = (f"QAT's float control `qat_32` lies {gap:+.2f} points from the trained model `ptq_32` "
            f"({len(control)} and {len(trained)} seed{'s' if len(trained) > 1 else ''})")
    if std is None:
        return text + ": one seed of the trained model, no std to judge it by."
    verdict = ("within one std of the trained model" if abs(gap) <= std + CLAIM_EPS
               else "more than one std " + ("below" if gap < 0 else "above") + " the trained model")
    separation = compare(control, trained)
    assert separation is not None
    return (text + f"; the trained model's std is {std:.2f}: {verdict} "
            f"({separation.brief('above it', 'below it')} by the separation rule).")


def _sweep_model(inputs: ReportInputs, groups: Mapping[str, Group], sweep: BitSweep) -> str:
    title = f"#### {sweep.label}"
    found = _sweep_found(groups, sweep)
    variants = _sweep_variants()
    not_run = not_run_yet(sweep.config, variants, groups, total=len(variants))
    if not found:
        return f"{title}\n\n{not_run}"
    labels = {kind: label for kind, label, _ in SWEEP_KINDS}
    rows = []
    for b in sorted(found, reverse=True):
        by = found[b]
        by_label = {labels[k]: by.get(k, []) for k, _, _ in SWEEP_KINDS}
        row = [f"{b}" + (" (float)" if b == 32 else "")]
        for kind, _, levels in SWEEP_KINDS:
            row.append(format_stat(accuracy_percents(by.get(kind, [])))
                       if b in levels else "n/a")
        row += [_distinct_sizes(by_label, "compression.bytes_exported", "{:,.0f}"),
                _distinct_sizes(by_label, "compression.bits_per_weight", "{:.2f}"),
                _distinct_sizes(by_label, "compression.ratio", "{:.2f}")]
        rows.append(row)
    headers = ["bits", *[f"{label} (%)" for _, label, _ in SWEEP_KINDS], "bytes exported",
               "bits/weight", "ratio (bytes)"]
    parts = [title, markdown_table(headers, rows)]
    runs = [m for by in found.values() for m in by.values()]
    qat = [m for by in found.values() for k, m in by.items() if k == "qat"]
    recipe = f"Starts from `{config_text(runs, 'init_from')}`"
    if qat:
        recipe += (f"; QAT fine-tunes {config_text(qat, 'train.num_steps')} steps of batch "
                   f"{config_text(qat, 'train.batch_size')} with {config_text(qat, 'optimizer.name')} "
                   f"at {config_text(qat, 'optimizer.learning_rate')}, "
                   f"{config_text(qat, 'optimizer.schedule')} schedule")
    notes = [n for n in (recipe + ".", _control_check(found), _fewest_bits_near_float(found), not_run,
                         recorded_commands(runs)) if n]
    parts.append(" ".join(notes))
    if _sweep_chart(inputs, sweep, found):
        parts.append(f"![Bit-width sweep on {sweep.label}: accuracy vs bits]"
                     f"({inputs.figure_link(sweep.figure)})")
    return "\n\n".join(parts)


def _sweeps_part(inputs: ReportInputs, groups: Mapping[str, Group],
                 refs: References) -> str:
    del refs  # no paper number: the sweep is our own ablation
    parts = [
        "Each model's trained dense baseline with every kernel quantized "
        "symmetric uniform per output channel at B bits (binary with a mean|w| scale at "
        "1 bit); biases stay float32. PTQ quantizes once and evaluates (min-max range, or "
        "the MSE-optimal clipping range), with no training; PTQ mixed (MSE ranges) chooses each "
        "kernel's bits from " + ", ".join(map(str, quantization_common.MIXED_CANDIDATES))
        + " by the loss increase of quantizing that kernel alone "
        f"on {quantization_common.MIXED_INIT_BATCHES} training batches, the least total increase "
        "(an exact knapsack) such that the "
        "kernels average at most B bits per weight (B is a budget, not every kernel's "
        "width); QAT fine-tunes with the "
        "quantizer in the forward pass and straight-through gradients. At 32 bits "
        "nothing is quantized: `ptq_32` is the baseline evaluated as is, `qat_32` its "
        "float fine-tune, QAT's control. The export packs each kernel's codes at B bits "
        "with its scales, storing a mostly-zero kernel sparsely where that is smaller, so "
        "the kinds' sizes at equal bits differ where their codes do (the cell then gives "
        "each kind's); bytes are measured on disk, bits/weight = 8 · bytes / params_total. "
        "Test accuracy in %; n/a: no such run (MSE clipping has no range to choose at 32 or "
        "1 bit; the mixed-precision budgets are "
        + ", ".join(map(str, dict((k, lv) for k, _, lv in SWEEP_KINDS)["ptqmixed"]))
        + " bits).",
    ]
    parts += [_sweep_model(inputs, groups, sweep) for sweep in BIT_SWEEPS]
    return "\n\n".join(parts)


# --------------------------------------------------------------------------
# The char Transformer at 8 and 4 bits.

LM_CONFIG = "ablation_bits_char_transformer"
LM_FLOAT_GROUP = "baseline_char_transformer"
LM_SETTINGS: tuple[tuple[str, str], ...] = (
    ("w8", "8 / float"), ("w4", "4 / float"), ("w8a8", "8 / 8"), ("w4a4", "4 / 4"))
LM_FLOAT_FINETUNE = "fp_ft"


def _lm_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    del inputs, refs
    variants = ([f"{kind}_{s}" for s, _ in LM_SETTINGS for kind in ("ptq", "qat")]
                + [LM_FLOAT_FINETUNE])
    found = {v: groups[f"{LM_CONFIG}_{v}"] for v in variants if groups.get(f"{LM_CONFIG}_{v}")}
    not_run = not_run_yet(LM_CONFIG, variants, groups, total=len(variants))
    if not found:
        return not_run
    base = groups.get(LM_FLOAT_GROUP, [])
    tuned = found.get(LM_FLOAT_FINETUNE, [])
    base_loss = mean_or_none(val_losses(base))
    tuned_loss = mean_or_none(val_losses(tuned))

    def sizes(by_label: Mapping[str, Group]) -> list[str]:
        return [_distinct_sizes(by_label, "compression.bytes_exported", "{:,.0f}"),
                _distinct_sizes(by_label, "compression.bits_per_weight", "{:.2f}"),
                _distinct_sizes(by_label, "compression.ratio", "{:.2f}")]

    rows = [["float", "32 / float", f"`{LM_FLOAT_GROUP}`" if base else MISSING,
             loss_text(base), "reference", f"`{LM_FLOAT_FINETUNE}`" if tuned else MISSING,
             loss_text(tuned), "reference",
             *sizes({"baseline": base, LM_FLOAT_FINETUNE: tuned})]]
    for setting, bits in LM_SETTINGS:
        ptq, qat = found.get(f"ptq_{setting}", []), found.get(f"qat_{setting}", [])
        if not ptq and not qat:
            continue
        rows.append([setting, bits, f"`ptq_{setting}`" if ptq else MISSING, loss_text(ptq),
                     signed_nats(loss_change(ptq, base_loss)),
                     f"`qat_{setting}`" if qat else MISSING, loss_text(qat),
                     signed_nats(loss_change(qat, tuned_loss)),
                     *sizes({"PTQ": ptq, "QAT": qat})])
    headers = ["setting", "bits: weights / activations", "PTQ run", "PTQ val loss (nats)",
               "PTQ − float", "QAT run", "QAT val loss (nats)", "QAT − float fine-tune",
               "bytes exported", "bits/weight", "ratio (bytes)"]
    entropy = mean_or_none(column(base or [m for ms in found.values() for m in ms],
                                  "metrics.unigram_entropy_nats"))
    activations = [m for v, m in found.items() if v.endswith(("a8", "a4"))]
    calibration = (f"calibrated once on {config_text(activations, 'compression.init_batches')} "
                   "training batches" if activations else "calibrated once on training batches")
    trained = [m for v, m in found.items() if v.startswith("qat_") or v == LM_FLOAT_FINETUNE]
    steps = (f" {config_text(trained, 'train.num_steps')} steps" if trained else "")
    parts = [
        f"Our trained char Transformer (`{LM_FLOAT_GROUP}`) with every weight matrix "
        "(kernels, token and position embeddings) quantized symmetric uniform per output "
        "channel (min-max range) at 8 or 4 bits; in `w8a8` and `w4a4` the input of every "
        f"Dense layer is also quantized, asymmetric per tensor, its range {calibration} "
        "(attention's score and weighted-sum products stay float). PTQ evaluates the "
        f"quantized model as is; QAT fine-tunes it{steps} with straight-through gradients "
        f"and is compared with `{LM_FLOAT_FINETUNE}`, the same fine-tune in float. "
        "Validation loss in nats per character (lower is better); a change is the "
        "quantized minus the float loss, so positive is worse"
        + (f"; the unigram entropy of the validation text is {entropy:.3f} nats." if entropy
           is not None else ".")
        + f" Run names are after `{LM_CONFIG}_`.",
        markdown_table(headers, rows),
    ]
    notes = []
    if not base:
        notes.append(f"The float baseline `{LM_FLOAT_GROUP}` is not run yet: no PTQ change.")
    notes += [n for n in (not_run, recorded_commands([base, *found.values()])) if n]
    parts.append(" ".join(notes))
    return "\n\n".join(parts)


PARTS = (
    ("Bit-width sweep: post-training quantization vs quantization-aware training",
     _sweeps_part),
    ("The char Transformer at 8 and 4 bits", _lm_part),
)
