"""The report's quantization section, registered in `build_paper.SECTIONS`.

It stands our runs beside Li et al. 2016 (ternary and binary LeNet-5,
configs/li2016_twn_lenet5.py) and Courbariaux et al. 2015 (BinaryConnect,
configs/courbariaux2015_mlp.py), and shows the bit-width sweeps of
configs/ablation_bits_{lenet300,lenet5,char_transformer}.py (post-training
quantization against quantization-aware training) and
experiments/benchmark_quantization.py's QAT step time and export bytes.
Like every section it reads only `RESULTS/NAME[/seed_K]/results.json`
(through `ReportInputs`), `RESULTS/benchmark_quantization/benchmark.json` and
published.json, and uses build_paper's helpers for seeds, tables and figures.
Each table names the command(s) its results.json files record.

build_paper imports this module inside `quantization_section`, not at the
top, because this module imports build_paper's helpers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from matplotlib.figure import Figure

from configs import default as default_config, quantization_common
from experiments import build_paper as bp

Group = bp.Group
MISSING = bp.MISSING
REPRODUCE = "python -m experiments.reproduce"


# --------------------------------------------------------------------------
# Helpers shared by the parts below.


def _seeds(members: Group) -> str:
    return f"{len(members)} seed" + ("" if len(members) == 1 else "s")


def _run_cell(group: str, members: Group) -> str:
    """`li2016_twn_lenet5_twn (1 seed)`: the group and how many runs it averages."""
    return f"{group} ({_seeds(members)})"


def _commands(groups: Iterable[Group]) -> str:
    """`Results from `cmd`.`: the distinct `command` keys of the runs a table shows."""
    commands: list[str] = []
    unrecorded = 0
    for members in groups:
        for _, result in members:
            command = result.get("command")
            if isinstance(command, str) and command.strip():
                if command not in commands:
                    commands.append(command)
            else:
                unrecorded += 1
    if not commands and not unrecorded:
        return ""
    text = ("Results from " + "; ".join(f"`{c}`" for c in commands)) if commands else ""
    if unrecorded:
        note = f"{unrecorded} run{'s' if unrecorded > 1 else ''} without a recorded command"
        text = f"{text} ({note})" if text else f"Results from {note}"
    return text + "."


def _not_run(config: str, variants: Sequence[str], groups: Mapping[str, Group],
             total: int | None = None) -> str:
    """`Not run yet: ...` naming the missing variants of `config` and how to run one."""
    missing = [v for v in variants if f"{config}_{v}" not in groups]
    if not missing:
        return ""
    if total is None:
        names = ", ".join(f"`{config}_{v}`" for v in missing)
    else:  # a sweep: name the variants once the prefix is said
        names = (f"{len(missing)} of {total} runs (after `{config}_`: "
                 + ", ".join(f"`{v}`" for v in missing) + ")")
    return f"Not run yet: {names}; each runs with `{REPRODUCE} --configs={config}:VARIANT`."


def _distinct_sizes(by_label: Mapping[str, Group], dotted: str, fmt: str) -> str:
    """One size when every kind's runs agree, else `PTQ 1,234; QAT 1,240`."""
    texts = {label: bp.format_stat(bp._column(members, dotted), fmt, collapse_equal=True)
             for label, members in by_label.items() if members}
    known = {label: t for label, t in texts.items() if t != MISSING}
    if not known:
        return MISSING
    if len(set(known.values())) == 1:
        return next(iter(known.values()))
    return "; ".join(f"{label} {t}" for label, t in known.items())


def _config_text(groups: Iterable[Group], dotted: str) -> str:
    """The distinct values of one config field over the runs, MISSING when none records it."""
    return bp.distinct_text(value for members in groups
                            for value in bp._column(members, f"config.{dotted}"))


def _change_vs(members: Group, reference: float | None) -> float | None:
    """Mean accuracy of `members` minus `reference`, in points."""
    mean = bp._mean_or_none(bp._accuracy_percents(members))
    return None if mean is None or reference is None else mean - reference


def _config_differences(reference: Group, others: Iterable[Group],
                        ignore: Sequence[str] = ("compression", "seed")) -> list[str]:
    """Dotted config keys (outside `ignore`) whose values differ between the runs' configs."""
    def flat(node: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(node, Mapping):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if not prefix and key in ignore:
                    continue
                out.update(flat(value, f"{prefix}{key}."))
            return out
        return {prefix.rstrip("."): node}

    # A key a run's config lacks (recorded before the field existed) holds its default.
    defaults = flat(default_config.get_config().to_dict())
    configs = [flat(r.get("config", {})) for members in (reference, *others) for _, r in members]
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({repr(_plain(c.get(k, defaults.get(k)))) for c in configs}) > 1]


def _plain(value: Any) -> Any:
    """Tuples as lists (a config holds tuples, its JSON record lists)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _paper_change(entry: Mapping[str, Any], fp_entry: Mapping[str, Any]) -> str:
    """`99.35 % accuracy (-0.06 vs its FP)`: a published accuracy and its gap to the paper's FP."""
    value, fp = bp.published_accuracy_percent(entry), bp.published_accuracy_percent(fp_entry)
    gap = "" if value is None or fp is None else f" ({value - fp:+.2f} vs its FP)"
    return f"{bp.format_published(entry)}{gap}; {entry.get('dataset', MISSING)}"


# --------------------------------------------------------------------------
# Li et al. 2016: ternary (TWN) and binary (BWN) weights on LeNet-5.

TWN_CONFIG = "li2016_twn_lenet5"
TWN_FP_GROUP = "baseline_lenet5"
TWN_FP_REFERENCE = "li2016_lenet5_fp_accuracy"


@dataclasses.dataclass(frozen=True)
class LowBitVariant:
    """One quantized variant of a reproduction: run `CONFIG_kind`, its label and paper entry."""
    kind: str
    label: str
    published_id: str | None = None
    max_drop_points: float | None = None  # the claim: at most this far below our FP


TWN_VARIANTS: tuple[LowBitVariant, ...] = (
    LowBitVariant("twn", "TWN (ternary, 2-bit export)", "li2016_lenet5_twn_accuracy", 1.0),
    LowBitVariant("bwn", "BWN (binary, 1-bit export)", "li2016_lenet5_bwn_accuracy", 2.0),
)


def drop_claim(change_points: float | None, max_drop_points: float) -> str:
    """`within` / `not within` the claim, from mean accuracy minus our FP's, in points.

    Judged on the change as the table prints it (two decimals): a drop of at
    most `max_drop_points` is within, and so is any gain.
    """
    if change_points is None:
        return MISSING
    shown = round(change_points, 2)
    if shown >= 0:
        return f"within {max_drop_points:.1f} points (gain {shown:.2f})"
    drop = -shown
    if drop <= max_drop_points + bp._CLAIM_EPS:
        return f"within {max_drop_points:.1f} points (drop {drop:.2f} ≤ {max_drop_points:.1f})"
    return f"not within {max_drop_points:.1f} points (drop {drop:.2f} > {max_drop_points:.1f})"


def _ordering_text(means: Sequence[tuple[str, float]]) -> str:
    """`FP > TWN > BWN` by mean accuracy, `=` where the two printed decimals agree."""
    ranked = sorted(means, key=lambda t: -t[1])
    text = ranked[0][0]
    for (_, prev), (label, value) in zip(ranked, ranked[1:]):
        text += f" {'=' if round(prev, 2) == round(value, 2) else '>'} {label}"
    return text


def _twn_part(inputs: bp.ReportInputs, groups: Mapping[str, Group], refs: bp.References) -> str:
    fp_members = groups.get(TWN_FP_GROUP, [])
    found = [(v, groups[f"{TWN_CONFIG}_{v.kind}"]) for v in TWN_VARIANTS
             if groups.get(f"{TWN_CONFIG}_{v.kind}")]
    not_run = _not_run(TWN_CONFIG, [v.kind for v in TWN_VARIANTS], groups)
    if not found:
        return not_run
    fp = bp._mean_or_none(bp._accuracy_percents(fp_members))
    fp_entry = inputs.published_by_id(TWN_FP_REFERENCE)

    def sizes(members: Group) -> list[str]:
        return [bp.format_stat(bp._column(members, "compression.bytes_exported"), "{:,.0f}",
                               collapse_equal=True),
                bp.format_stat(bp._column(members, "compression.bits_per_weight"), "{:.2f}",
                               collapse_equal=True),
                bp._times(bp._column(members, "compression.ratio"))]

    rows = []
    if fp_members:
        rows.append(["FP (full precision)", _run_cell(TWN_FP_GROUP, fp_members),
                     bp.format_stat(bp._accuracy_percents(fp_members)), "reference",
                     *sizes(fp_members), f"{bp.format_published(fp_entry)}; "
                     f"{fp_entry.get('dataset', MISSING)}", refs.cite(fp_entry), "reference"])
    for variant, members in found:
        entry = inputs.published_by_id(variant.published_id)
        change = _change_vs(members, fp)
        rows.append([variant.label, _run_cell(f"{TWN_CONFIG}_{variant.kind}", members),
                     bp.format_stat(bp._accuracy_percents(members)), bp._signed_points(change),
                     *sizes(members), _paper_change(entry, fp_entry), refs.cite(entry),
                     drop_claim(change, variant.max_drop_points)])
    headers = ["variant", "run", "test accuracy (%)", "change vs our FP (points)",
               "bytes exported", "bits/weight", "ratio (bytes)", "paper", "source",
               "claim: drop vs our FP"]
    claims = " and ".join(f"{v.label.split(' ')[0]} within {v.max_drop_points:.1f} point"
                          f"{'' if v.max_drop_points == 1 else 's'}" for v in TWN_VARIANTS)
    parts = [
        "LeNet-5 (Caffe form) trained from scratch on Fashion-MNIST with every kernel "
        "ternarized (TWN: threshold 0.7 mean|W| per layer, scale the mean |W| above it) or "
        "binarized (BWN: mean|W| · sign(W)) in the forward pass, straight-through gradients "
        "to the float weights; the export packs the codes at 2 and 1 bits with their "
        "scales, biases stay float32, and bits/weight counts everything on disk. "
        f"The claim checked on Fashion-MNIST: {claims} of our full-precision LeNet-5 "
        "(a gain is within). The paper's numbers are MNIST.",
        bp.markdown_table(headers, rows),
    ]
    notes = []
    if fp_members:
        notes.append(f"The FP row is `{TWN_FP_GROUP}` ({_seeds(fp_members)}): the `fp` variant "
                     f"of configs/{TWN_CONFIG}.py is configs/baseline_lenet5.py's config, "
                     "the same recipe, so it is not run again.")
        differ = _config_differences(fp_members, [m for _, m in found])
        if differ:
            notes.append("But the recorded configs differ outside compression and seed, in: "
                         + ", ".join(f"`{k}`" for k in differ) + ".")
        else:
            notes.append("The configs recorded in results.json differ only in compression "
                         "and seed.")
    else:
        notes.append(f"The FP baseline `{TWN_FP_GROUP}` is not run yet, so no change or "
                     "claim is shown.")
    def margin(variant, members) -> float | None:
        change = _change_vs(members, fp)
        return None if change is None else abs(variant.max_drop_points + change)

    # DESIGN.md: 3 seeds where a claim's margin (distance from the claim's threshold) is under a point.
    few = [(v, m, margin(v, m)) for v, m in found if len(m) < 3]
    short = [f"{v.label.split(' ')[0]} ({_seeds(m)}, margin {g:.2f} points)" for v, m, g in few
             if g is None or g < 1.0]
    enough = [f"{v.label.split(' ')[0]} ({_seeds(m)}, margin {g:.2f} points)" for v, m, g in few
              if g is not None and g >= 1.0]
    if short:
        notes.append("Fewer than 3 seeds: " + ", ".join(short) + "; DESIGN.md asks for mean ± "
                     "std over 3 seeds where a claim's margin is under one point.")
    if enough:
        notes.append("One seed suffices where the claim's margin is a point or more: "
                     + ", ".join(enough) + ".")
    if not_run:
        notes.append(not_run)
    parts.append(" ".join(notes))
    # The paper's claim is an ordering and a gap; state both, theirs then ours.
    paper = [("FP", bp.published_accuracy_percent(fp_entry))] + [
        (v.label.split(" ")[0], bp.published_accuracy_percent(inputs.published_by_id(
            v.published_id))) for v in TWN_VARIANTS]
    ours = ([("FP", fp)] if fp is not None else []) + [
        (v.label.split(" ")[0], m) for v, members in found
        if (m := bp._mean_or_none(bp._accuracy_percents(members))) is not None]
    if len(ours) > 1 and all(x is not None for _, x in paper):
        parts.append(f"The paper orders {_ordering_text(paper)} on MNIST; ours orders "
                     f"{_ordering_text(ours)} on Fashion-MNIST (mean test accuracy).")
    command = _commands([fp_members, *(m for _, m in found)])
    if command:
        parts.append(command)
    return "\n\n".join(parts)


# --------------------------------------------------------------------------
# Courbariaux et al. 2015: BinaryConnect on a 3 x 1024 MLP.

BC_CONFIG = "courbariaux2015_mlp"
BC_VARIANTS: tuple[LowBitVariant, ...] = (
    LowBitVariant("fp", "full precision"),
    LowBitVariant("binary", "BinaryConnect (deterministic, sign(W), 1-bit export)",
                  "courbariaux2015_mlp_deterministic_error"),
    LowBitVariant("bwn", "BWN (mean|W| · sign(W), 1-bit export)"),
)


def _errors(members: Group) -> list[float]:
    return [100.0 - a for a in bp._accuracy_percents(members)]


def _bc_part(inputs: bp.ReportInputs, groups: Mapping[str, Group], refs: bp.References) -> str:
    found = [(v, groups[f"{BC_CONFIG}_{v.kind}"]) for v in BC_VARIANTS
             if groups.get(f"{BC_CONFIG}_{v.kind}")]
    not_run = _not_run(BC_CONFIG, [v.kind for v in BC_VARIANTS], groups)
    if not found:
        return not_run
    fp_members = groups.get(f"{BC_CONFIG}_fp", [])
    fp_error = bp._mean_or_none(_errors(fp_members))
    rows = []
    for variant, members in found:
        error = bp._mean_or_none(_errors(members))
        change = (None if variant.kind == "fp" or error is None or fp_error is None
                  else error - fp_error)
        if variant.published_id:
            entry = inputs.published_by_id(variant.published_id)
            paper = f"{bp.format_published(entry)}; {entry.get('dataset', MISSING)}"
            source = refs.cite(entry)
        else:
            paper, source = MISSING, MISSING
        rows.append([
            variant.label, _run_cell(f"{BC_CONFIG}_{variant.kind}", members),
            bp.format_stat(_errors(members)),
            "reference" if variant.kind == "fp" else bp._signed_points(change),
            bp.format_stat(bp._column(members, "compression.bytes_exported"), "{:,.0f}",
                           collapse_equal=True),
            bp.format_stat(bp._column(members, "compression.bits_per_weight"), "{:.2f}",
                           collapse_equal=True),
            bp._times(bp._column(members, "compression.ratio")),
            paper, source,
        ])
    headers = ["variant", "run", "test error (%)", "change vs our fp (points of error)",
               "bytes exported", "bits/weight", "ratio (bytes)", "paper", "source"]
    runs = [m for _, m in found]
    hidden = _config_text(runs, "model.hidden")
    norm = _config_text(runs, "model.normalization")
    paper_entry = inputs.published_by_id("courbariaux2015_mlp_deterministic_error")
    parts = [
        f"An MLP with hidden layers {hidden} and {norm} normalization (the paper uses batch "
        "norm) on Fashion-MNIST, trained with binary kernels in the forward and backward "
        "pass and float shadow weights (clipped to [-1, 1] for BinaryConnect); the export "
        "packs one bit per kernel weight (plus BWN's scales), biases and norms stay "
        "float32. The paper's claim: binary weights train to near full-precision accuracy "
        f"(its deterministic BinaryConnect: {bp.format_published(paper_entry)} on "
        f"permutation-invariant {paper_entry.get('dataset', MISSING)}; unchecked: not yet "
        "confirmed from the paper's own table). Test error is 100 − test accuracy; a "
        "positive change is worse than our fp.",
        bp.markdown_table(headers, rows),
    ]
    notes = [n for n in (not_run, _commands(m for _, m in found)) if n]
    if notes:
        parts.append(" ".join(notes))
    return "\n\n".join(parts)


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


def _sweep_chart(inputs: bp.ReportInputs, sweep: BitSweep,
                 found: Mapping[int, Mapping[str, Group]]) -> bool:
    """Accuracy vs bits (categorical axis, 1 to 32), one line per kind."""
    levels = sorted(found)
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    drawn = False
    for kind, label, _ in SWEEP_KINDS:
        drawn |= bp.accuracy_line(ax, [found[b].get(kind, []) for b in levels], SWEEP_STYLES[kind], label)
    if not drawn:
        return False
    ax.set_xticks(range(len(levels)), [f"{b}" for b in levels])
    ax.set_xlim(-0.5, len(levels) - 0.5)
    bp._finish_line_figure(fig, ax, "bits per kernel weight (32 = float; 1 = binary)",
                           "test accuracy (%)",
                           f"Bit-width sweep on {sweep.label} (Fashion-MNIST)",
                           inputs.figures_dir / sweep.figure)
    return True


def _fewest_bits_near_float(found: Mapping[int, Mapping[str, Group]]) -> str:
    """Per kind, the fewest bits whose accuracy is within SWEEP_NEAR_POINTS of its float control."""
    texts = []
    for kind, label, _ in SWEEP_KINDS:
        control = "qat" if kind == "qat" else "ptq"
        float_acc = bp._mean_or_none(bp._accuracy_percents(found.get(32, {}).get(control, [])))
        if float_acc is None:
            continue
        near = [b for b in sorted(found) if b != 32 and (members := found[b].get(kind))
                and (c := _change_vs(members, float_acc)) is not None
                and round(c, 2) >= -SWEEP_NEAR_POINTS - bp._CLAIM_EPS]
        ran = [b for b in found if b != 32 and found[b].get(kind)]
        if not ran:
            continue
        texts.append(f"{label} {min(near)} bits" if near else f"{label} none (of {len(ran)} run)")
    if not texts:
        return ""
    return (f"Fewest bits run within {SWEEP_NEAR_POINTS:.1f} point of the float model (PTQ "
            "against `ptq_32`, QAT against `qat_32`): " + "; ".join(texts) + ".")


def _sweep_model(inputs: bp.ReportInputs, groups: Mapping[str, Group], sweep: BitSweep) -> str:
    title = f"#### {sweep.label}"
    found = _sweep_found(groups, sweep)
    variants = _sweep_variants()
    not_run = _not_run(sweep.config, variants, groups, total=len(variants))
    if not found:
        return f"{title}\n\n{not_run}"
    labels = {kind: label for kind, label, _ in SWEEP_KINDS}
    rows = []
    for b in sorted(found, reverse=True):
        by = found[b]
        by_label = {labels[k]: by.get(k, []) for k, _, _ in SWEEP_KINDS}
        row = [f"{b}" + (" (float)" if b == 32 else "")]
        for kind, _, levels in SWEEP_KINDS:
            row.append(bp.format_stat(bp._accuracy_percents(by.get(kind, [])))
                       if b in levels else "n/a")
        row += [_distinct_sizes(by_label, "compression.bytes_exported", "{:,.0f}"),
                _distinct_sizes(by_label, "compression.bits_per_weight", "{:.2f}"),
                _distinct_sizes(by_label, "compression.ratio", "{:.2f}")]
        rows.append(row)
    headers = ["bits", *[f"{label} (%)" for _, label, _ in SWEEP_KINDS], "bytes exported",
               "bits/weight", "ratio (bytes)"]
    parts = [title, bp.markdown_table(headers, rows)]
    runs = [m for by in found.values() for m in by.values()]
    qat = [m for by in found.values() for k, m in by.items() if k == "qat"]
    recipe = f"Starts from `{_config_text(runs, 'init_from')}`"
    if qat:
        recipe += (f"; QAT fine-tunes {_config_text(qat, 'train.num_steps')} steps of batch "
                   f"{_config_text(qat, 'train.batch_size')}")
    notes = [n for n in (recipe + ".", _fewest_bits_near_float(found), not_run,
                         _commands(runs)) if n]
    parts.append(" ".join(notes))
    if _sweep_chart(inputs, sweep, found):
        parts.append(f"![Bit-width sweep on {sweep.label}: accuracy vs bits]"
                     f"({inputs.figure_link(sweep.figure)})")
    return "\n\n".join(parts)


def _sweeps_part(inputs: bp.ReportInputs, groups: Mapping[str, Group],
                 refs: bp.References) -> str:
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


def _lm_part(inputs: bp.ReportInputs, groups: Mapping[str, Group], refs: bp.References) -> str:
    del inputs, refs
    variants = ([f"{kind}_{s}" for s, _ in LM_SETTINGS for kind in ("ptq", "qat")]
                + [LM_FLOAT_FINETUNE])
    found = {v: groups[f"{LM_CONFIG}_{v}"] for v in variants if groups.get(f"{LM_CONFIG}_{v}")}
    not_run = _not_run(LM_CONFIG, variants, groups, total=len(variants))
    if not found:
        return not_run
    base = groups.get(LM_FLOAT_GROUP, [])
    tuned = found.get(LM_FLOAT_FINETUNE, [])
    base_loss = bp._mean_or_none(bp._losses(base))
    tuned_loss = bp._mean_or_none(bp._losses(tuned))

    def sizes(by_label: Mapping[str, Group]) -> list[str]:
        return [_distinct_sizes(by_label, "compression.bytes_exported", "{:,.0f}"),
                _distinct_sizes(by_label, "compression.bits_per_weight", "{:.2f}"),
                _distinct_sizes(by_label, "compression.ratio", "{:.2f}")]

    rows = [["float", "32 / float", f"`{LM_FLOAT_GROUP}`" if base else MISSING,
             bp._loss_text(base), "reference", f"`{LM_FLOAT_FINETUNE}`" if tuned else MISSING,
             bp._loss_text(tuned), "reference",
             *sizes({"baseline": base, LM_FLOAT_FINETUNE: tuned})]]
    for setting, bits in LM_SETTINGS:
        ptq, qat = found.get(f"ptq_{setting}", []), found.get(f"qat_{setting}", [])
        if not ptq and not qat:
            continue
        rows.append([setting, bits, f"`ptq_{setting}`" if ptq else MISSING, bp._loss_text(ptq),
                     bp._signed_nats(bp._loss_change(ptq, base_loss)),
                     f"`qat_{setting}`" if qat else MISSING, bp._loss_text(qat),
                     bp._signed_nats(bp._loss_change(qat, tuned_loss)),
                     *sizes({"PTQ": ptq, "QAT": qat})])
    headers = ["setting", "bits: weights / activations", "PTQ run", "PTQ val loss (nats)",
               "PTQ − float", "QAT run", "QAT val loss (nats)", "QAT − float fine-tune",
               "bytes exported", "bits/weight", "ratio (bytes)"]
    entropy = bp._mean_or_none(bp._column(base or [m for ms in found.values() for m in ms],
                                          "metrics.unigram_entropy_nats"))
    activations = [m for v, m in found.items() if v.endswith(("a8", "a4"))]
    calibration = (f"calibrated once on {_config_text(activations, 'compression.init_batches')} "
                   "training batches" if activations else "calibrated once on training batches")
    trained = [m for v, m in found.items() if v.startswith("qat_") or v == LM_FLOAT_FINETUNE]
    steps = (f" {_config_text(trained, 'train.num_steps')} steps" if trained else "")
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
        bp.markdown_table(headers, rows),
    ]
    notes = []
    if not base:
        notes.append(f"The float baseline `{LM_FLOAT_GROUP}` is not run yet: no PTQ change.")
    notes += [n for n in (not_run, _commands([base, *found.values()])) if n]
    parts.append(" ".join(notes))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------
# The quantization benchmark (experiments/benchmark_quantization.py): QAT step
# time against float, and exported bytes against the size formula.

BENCHMARK_DIR = "benchmark_quantization"
BENCHMARK_FILE = "benchmark.json"
BENCHMARK_PARTS = ("step_time", "bytes")
BENCHMARK_VARIANTS = ("float", "qat", "qat+act")


def _benchmark_command(path_text: str) -> str:
    return f"python -m experiments.benchmark_quantization --out={path_text}"


def load_benchmark(path: Path) -> dict[str, Any] | None:
    """experiments/benchmark_quantization.py's --out JSON, None when the file does not exist.

    It must be an object holding a `step_time` or `bytes` list (or both) of
    objects; anything else raises `ResultsError` naming the path.
    """
    if not path.is_file():
        return None
    data = bp._read_json(path)
    parts = [data.get(p) for p in BENCHMARK_PARTS] if isinstance(data, dict) else []
    present = [rows for rows in parts if rows is not None]
    if not present or not all(isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
                              for rows in present):
        raise bp.ResultsError(f"{path}: expected an object with a 'step_time' and/or 'bytes' "
                              "list of objects (experiments/benchmark_quantization.py --out)")
    return data


def _number(value: Any, fmt: str) -> str:
    return fmt.format(value) if bp.is_number(value) else MISSING


def _load_text(row: Mapping[str, Any]) -> str:
    before, after = (bp.get_path(row, f"load_average.{k}") for k in ("before", "after"))
    if isinstance(before, list) and isinstance(after, list) and before and after:
        return f"{before[0]:.1f} → {after[0]:.1f}"
    return MISSING


def _step_time_table(rows: Sequence[Mapping[str, Any]]) -> str:
    table = [[str(r.get("model", MISSING)), str(r.get("dataset", MISSING)),
              _number(r.get("batch_size"), "{:,.0f}"), _number(r.get("steps"), "{:,.0f}"),
              *(_number(bp.get_path(r, f"ms_median.{v}"), "{:.3f}") for v in BENCHMARK_VARIANTS),
              *(_number(bp.get_path(r, f"ratio_to_float.{v}"), "{:.2f}×")
                for v in BENCHMARK_VARIANTS[1:]),
              str(r.get("device", MISSING)), _load_text(r)] for r in rows]
    headers = ["model", "data", "batch", "timed steps",
               *(f"{v} ms/step" for v in BENCHMARK_VARIANTS),
               *(f"{v} / float" for v in BENCHMARK_VARIANTS[1:]), "device", "load before → after"]
    return bp.markdown_table(headers, table)


def _bytes_table(rows: Sequence[Mapping[str, Any]]) -> str:
    def weights(r: Mapping[str, Any]) -> str:
        if r.get("bits") == 32 or r.get("scheme") == "float32":
            return "float32"
        return f"{r.get('bits', MISSING)} bit ({r.get('scheme', MISSING)})"

    def per_param(r: Mapping[str, Any]) -> str:
        b, n = r.get("bytes_file"), r.get("params")
        return f"{8 * b / n:.3f}" if bp.is_number(b) and bp.is_number(n) and n else MISSING

    table = [[str(r.get("model", MISSING)), weights(r), _number(r.get("params"), "{:,.0f}"),
              _number(r.get("bytes_file"), "{:,.0f}"), _number(r.get("bytes_formula"), "{:,.0f}"),
              _number(r.get("bytes_payload"), "{:,.0f}"), _number(r.get("bytes_header"), "{:,.0f}"),
              _number(None if not bp.is_number(v := r.get("file_vs_formula")) else 100 * v,
                      "{:+.2f} %"),
              per_param(r), ", ".join(map(str, r.get("index") or [])) or MISSING] for r in rows]
    headers = ["model", "weights", "params", "file bytes", "formula bytes", "payload bytes",
               "header bytes", "file vs formula", "bits/param (file)", "index layout"]
    return bp.markdown_table(headers, table)


def _stage_bits(rows: Sequence[Mapping[str, Any]], variant: str) -> str:
    """The bit widths of one benchmark variant's compression stages, as the rows record them."""
    bits = sorted({stage["bits"] for r in rows
                   for stage in (bp.get_path(r, "stages") or {}).get(variant, [])
                   if isinstance(stage, Mapping) and bp.is_number(stage.get("bits"))})
    return "/".join(f"{b:g}" for b in bits) if bits else MISSING


def _benchmark_part(inputs: bp.ReportInputs, groups: Mapping[str, Group],
                    refs: bp.References) -> str:
    del groups, refs
    path = (inputs.results_dir / BENCHMARK_DIR / BENCHMARK_FILE
            if inputs.results_dir is not None else None)
    path_text = path.as_posix() if path is not None else f"{BENCHMARK_DIR}/{BENCHMARK_FILE}"
    data = load_benchmark(path) if path is not None else None
    if data is None:
        return f"Not run yet: `{BENCHMARK_DIR}` (`{_benchmark_command(path_text)}`)."
    meta = ", ".join(f"{k} {data[k]}" for k in ("device", "cpu_count", "jax")
                     if data.get(k) not in (None, ""))
    command = data.get("command")
    source = (f"`{command}`" if isinstance(command, str) and command.strip() else
              f"`{_benchmark_command(path_text)}` (the file does not record the flags it ran "
              "with)")
    parts = [f"From `{path_text}`" + (f" ({meta})" if meta else "") + f", written by {source}."]
    step_rows = data.get("step_time")
    if step_rows:
        bits = {v: _stage_bits(step_rows, v) for v in BENCHMARK_VARIANTS[1:]}
        parts.append(
            f"Step time: the driver's whole train loop per step, float against QAT with "
            f"{bits['qat']}-bit weights (`qat`) and with {bits['qat+act']}-bit weights and "
            "layer inputs (`qat+act`), the same model, data and steps, repetitions "
            "interleaved; ms/step are medians over the repetitions and a ratio above 1 means "
            "the quantized step is slower.")
        parts.append(_step_time_table(step_rows))
    else:
        parts.append("Not run yet: the step-time part (`--parts=step_time`).")
    byte_rows = data.get("bytes")
    if byte_rows:
        parts.append(
            "Bytes: the quantized export of randomly initialized weights (bytes do not depend "
            "on training) on disk, beside the formula (packed codes + 4 bytes per scale, zero "
            "point and codebook entry + 4 bytes per float parameter) and the tensors' payload; "
            "the header is the safetensors container's.")
        parts.append(_bytes_table(byte_rows))
    else:
        parts.append("Not run yet: the bytes part (`--parts=bytes`).")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------
# The section.


def quantization_section(inputs: bp.ReportInputs) -> str:
    """Li et al. 2016 and Courbariaux et al. 2015 on our Fashion-MNIST runs, the
    bit-width sweeps (PTQ against QAT) on the LeNets and the char Transformer,
    and the QAT step-time benchmark."""
    groups = inputs.groups
    refs = bp.References()
    parts = [
        "As in the pruning section, the LeNet and MLP runs are Fashion-MNIST and the papers "
        "report MNIST, so each paper is compared by its claim (the gap to full precision, "
        "the ordering), not by its absolute numbers. Accuracies are test accuracy in %, "
        "mean ± sample std where there are several seeds (the run column says how many). "
        "Bytes exported are the packed export on disk (codes, scales, float biases and the "
        "header), bits/weight = 8 · bytes / params_total and the ratio is dense fp32 bytes "
        "over exported bytes.",
    ]
    parts += [f"### {title}\n\n" + part(inputs, groups, refs) for title, part in (
        ("Ternary and binary weights on LeNet-5 (Li et al. 2016)", _twn_part),
        ("BinaryConnect on an MLP (Courbariaux et al. 2015)", _bc_part),
        ("Bit-width sweep: post-training quantization vs quantization-aware training",
         _sweeps_part),
        ("The char Transformer at 8 and 4 bits", _lm_part),
        ("Cost of quantization-aware training and size of the export", _benchmark_part),
    )]
    if refs.markdown():
        parts.append("References:\n\n" + refs.markdown())
    return "\n\n".join(parts)
