"""The report's Pruning section, third part: pruning a pretrained Transformer.

A family module of experiments/report (see builder.py): Gordon et al. 2020
(global magnitude), Michel et al. 2019 (attention heads) and Sajjad et al.
2020 (top layers) on our char Transformer. All start from the trained
`baseline_char_transformer`; a run named NAME evaluates the pruned model as
is, NAME_ft after a short fine-tune.

"Weights kept" counts what each paper counts, the matrices its technique
prunes, read from each run's recorded config and its model's parameter
shapes (common.language_model_shapes), not the results.json totals over
every matrix (those include the never-pruned position embedding and the
(heads, head_dim) attention biases):
  Gordon   the matrices the prune stage's `select` matches (every kernel and
           the token embedding); kept = weights_nonzero minus the matrices
           outside `select`, which no run prunes;
  Michel   the attention projection kernels (query, key, value, output) of
           the stage's head groups; the heads removed are read from the
           export's size (params_total - params_exported, per head);
  Sajjad   the kernels of the Transformer blocks the stage may drop; the
           blocks removed are read from the export's size.
Verdicts (worse, better, ≈) come from common.compare in nats.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Mapping, Sequence

from matplotlib.figure import Figure

from experiments.report.common import (CLAIM_EPS, MISSING, Group, References, ReportInputs,
                                       column, compare, finish_line_figure, format_stat,
                                       get_path, is_number, kept_text, language_model_shapes,
                                       loss_change, loss_text, markdown_table, mean_or_none,
                                       mean_std, signed_nats, val_losses)

SECTION = "Pruning"
RESULTS_NAME = "pruning"

TRANSFORMER_DENSE_GROUP = "baseline_char_transformer"
FINETUNE_SUFFIX = "_ft"

GORDON_PREFIX = "gordon2020_char_transformer_"
GORDON_SPARSITIES = tuple(range(0, 100, 10))
# The fine-tune alone moves the loss: fine-tuned runs are set against the same
# fine-tune of the unpruned model (0 % sparsity), not against the dense model.
GORDON_FT_CONTROL = f"{GORDON_PREFIX}0_ft"
GORDON_REFERENCES = ("gordon2020_bert_harmless_pruning_low",
                     "gordon2020_bert_harmless_pruning_high")
PRUNING_GORDON_FIGURE = "pruning_gordon2020_char_transformer.png"


@dataclasses.dataclass(frozen=True)
class StructuredStudy:
    """Removing whole heads or layers: K of the model's `unit` gone per run."""
    title: str          # `Michel et al. 2019`, for the no-results line
    prefix: str         # run names are PREFIX + K (+ `_ft`)
    levels: tuple[int, ...]
    unit: str           # `heads` or `layers`: also how the total is read
    default_total: int  # the configs' 16 heads / 4 layers, when a config lacks them
    references: tuple[str, ...]
    suffix: str = ""    # after the level and `_ft`: `_l1` names the weight-norm ablation runs


MICHEL = StructuredStudy("Michel et al. 2019", "michel2019_char_transformer_",
                         (2, 4, 8, 12), "heads", 16,
                         ("michel2019_wmt_prunable_heads", "michel2019_bert_prunable_heads"))
MICHEL_L1 = dataclasses.replace(MICHEL, title="Michel et al. 2019, weight-norm ablation", suffix="_l1")
SAJJAD = StructuredStudy("Sajjad et al. 2020", "sajjad2020_char_transformer_",
                         (1, 2, 3), "layers", 4,
                         ("sajjad2020_bert_layers_dropped", "sajjad2020_bert_size_reduction",
                          "sajjad2020_bert_performance_kept"))

TRANSFORMER_PREFIXES = (GORDON_PREFIX, MICHEL.prefix, SAJJAD.prefix)
PREFIXES = TRANSFORMER_PREFIXES
INTRO = (
    "The Transformer runs prune our trained character-level Shakespeare "
    f"Transformer (`{TRANSFORMER_DENSE_GROUP}`) after training, as the papers prune "
    "pretrained BERT or WMT models; each is evaluated as is (`NAME`) and after a "
    f"short fine-tune (`NAME{FINETUNE_SUFFIX}`). Quality is validation loss in "
    "nats per character (lower is better); a change is the pruned minus the dense "
    "loss, so positive is worse. The papers measure task scores, so again the "
    "claim is compared, not the numbers.",
)

# (without fine-tuning, fine-tuned): the groups of one level, either may be empty.
FtPair = tuple[Group, Group]


def _ft_pairs(groups: Mapping[str, Group], prefix: str,
              levels: Sequence[int], suffix: str = "") -> dict[int, FtPair]:
    """{level: (PREFIX+level+SUFFIX members, PREFIX+level_ft+SUFFIX members)} for levels with either."""
    found: dict[int, FtPair] = {}
    for level in levels:
        plain = groups.get(f"{prefix}{level}{suffix}", [])
        tuned = groups.get(f"{prefix}{level}{FINETUNE_SUFFIX}{suffix}", [])
        if plain or tuned:
            found[level] = (plain, tuned)
    return found


def _not_run_line(groups: Mapping[str, Group], prefix: str, levels: Sequence[int], last: str = "") -> str:
    """One line naming the runs (without / with fine-tuning) that have no results; '' if none."""
    names = [f"{level}{suffix}{last}" for level in levels for suffix in ("", FINETUNE_SUFFIX)]
    missing = [n for n in names if f"{prefix}{n}" not in groups]
    if not missing:
        return ""
    return (f"Not run yet: {len(missing)} of {len(names)} runs (after `{prefix}`: "
            + ", ".join(f"`{n}`" for n in missing) + ").")


def _gain_kept(members: Group, dense: float | None, entropy: float | None) -> float | None:
    """% of the dense model's loss reduction below the unigram entropy the run keeps:
    100 (H - L) / (H - L_dense); 100 is the dense model, 0 no better than unigram."""
    loss = mean_or_none(val_losses(members))
    if loss is None or dense is None or entropy is None or entropy - dense <= 0:
        return None
    return 100.0 * (entropy - loss) / (entropy - dense)


def _percent(value: float | None) -> str:
    return MISSING if value is None else f"{value:.1f}"


def _counts_of(pair: FtPair) -> Group:
    """The run whose sizes a row shows: fine-tuning keeps the pruned structure,
    so the run without it, else the fine-tuned one."""
    return pair[0] or pair[1]


# --------------------------------------------------------------------------
# Weights kept, counted as the papers count them (see the module docstring).

Shapes = Mapping[str, tuple[int, ...]]
# (the counted matrices' total, the run's kept count) from its shapes and results; None: uncountable.
Counter = Callable[[Shapes, Mapping[str, Any]], "tuple[int, Any] | None"]


def _matrices(shapes: Shapes) -> dict[str, int]:
    """Sizes of the leaves with two or more axes (accounting.weight_matrices' selection)."""
    return {path: math.prod(shape) for path, shape in shapes.items() if len(shape) >= 2}


def _stages(result: Mapping[str, Any], technique: str) -> list[Mapping[str, Any]]:
    stages = get_path(result, "config.compression.stages") or []
    return [st for st in stages if isinstance(st, Mapping) and st.get("technique") == technique]


def _selected_matrices(shapes: Shapes, result: Mapping[str, Any]) -> dict[str, int] | None:
    """The matrices the run's prune stages select (full-match regexes, as compression.selection)."""
    patterns: list[str] = []
    for stage in _stages(result, "prune"):
        select = stage.get("select")
        patterns += [select] if isinstance(select, str) else list(select or [])
    if not patterns:
        return None
    compiled = [re.compile(p) for p in patterns]
    return {path: n for path, n in _matrices(shapes).items()
            if any(c.fullmatch(path) for c in compiled)}


def _gordon_counter(shapes: Shapes, result: Mapping[str, Any]) -> tuple[int, Any] | None:
    """Kept = nonzeros of all matrices minus the matrices outside `select` (never pruned)."""
    selected = _selected_matrices(shapes, result)
    matrices = _matrices(shapes)
    nonzero = get_path(result, "compression.weights_nonzero")
    recorded = get_path(result, "compression.weights_total")
    if not selected or not is_number(nonzero) or recorded != sum(matrices.values()):
        return None
    never_pruned = sum(matrices.values()) - sum(selected.values())
    return sum(selected.values()), nonzero - never_pruned


def _removed_units(result: Mapping[str, Any], unit_params: int, units: int) -> Any:
    """How many units (heads, blocks) of `unit_params` parameters the export lacks, None when
    that is no whole number (a dirty run's count keeps its mark)."""
    total = get_path(result, "compression.params_total")
    exported = get_path(result, "compression.params_exported")
    if not is_number(total) or not is_number(exported) or unit_params <= 0:
        return None
    removed = (total - exported) / unit_params
    return removed if float(removed).is_integer() and 0 <= removed <= units else None


def _michel_counter(shapes: Shapes, result: Mapping[str, Any]) -> tuple[int, Any] | None:
    """The head groups' projection kernels; heads removed from the export's size."""
    per_head: set[tuple[float, float]] = set()
    counted = heads = 0
    for stage in _stages(result, "structured_prune"):
        for group in stage.get("groups") or []:
            members = [(path, axis) for path, axis in group.get("members", []) if path in shapes]
            if not members:
                return None
            params = sum(math.prod(shapes[p]) / shapes[p][a] for p, a in members)
            kernels = sum(math.prod(shapes[p]) / shapes[p][a] for p, a in members
                          if p.endswith("kernel"))
            per_head.add((params, kernels))
            heads += shapes[members[0][0]][members[0][1]]
            counted += sum(math.prod(shapes[p]) for p, _ in members if p.endswith("kernel"))
    if len(per_head) != 1:
        return None
    ((head_params, head_kernels),) = per_head
    removed = _removed_units(result, int(head_params), heads)
    return None if removed is None else (counted, counted - removed * int(head_kernels))


def _sajjad_counter(shapes: Shapes, result: Mapping[str, Any]) -> tuple[int, Any] | None:
    """The kernels of the blocks the stage may drop; blocks removed from the export's size."""
    layers = [layer for stage in _stages(result, "layer_drop") for layer in stage.get("layers") or []]
    if not layers:
        return None
    per_block: set[tuple[int, int]] = set()
    for layer in layers:
        inside = {p: math.prod(sh) for p, sh in shapes.items() if p.startswith(f"{layer}/")}
        per_block.add((sum(inside.values()), sum(n for p, n in inside.items()
                                                 if p.endswith("kernel") and len(shapes[p]) >= 2)))
    if len(per_block) != 1:
        return None
    ((block_params, block_kernels),) = per_block
    removed = _removed_units(result, block_params, len(layers))
    counted = block_kernels * len(layers)
    return None if removed is None else (counted, counted - removed * block_kernels)


def _counted(members: Group, counter: Counter) -> tuple[list[Any], list[Any]]:
    """(kept, total) per run of `members`; runs that cannot be counted are left out."""
    kept, totals = [], []
    for _, result in members:
        shapes = language_model_shapes(result)
        found = counter(shapes, result) if shapes is not None else None
        if found is not None:
            totals.append(found[0])
            kept.append(found[1])
    return kept, totals


def _counted_text(members: Group, counter: Counter) -> str:
    return kept_text(*_counted(members, counter))


def _counted_total(found: Mapping[int, "FtPair"], counter: Counter) -> str:
    """`851,968`: the counted matrices' size, for the text (the first countable run's)."""
    for pair in found.values():
        _, totals = _counted(_counts_of(pair), counter)
        if totals:
            return f"{totals[0]:,}"
    return MISSING


def _change_verdict(members: Group, reference: Group) -> str:
    """`worse, one seed`, `≈, not separated`: a loss against its reference, by common.compare."""
    c = compare(val_losses(members), val_losses(reference), unit="nats")
    return MISSING if c is None else c.brief("worse", "better")


def _transformer_dense(groups: Mapping[str, Group]) -> tuple[float | None, float | None, str]:
    """(dense val loss, unigram entropy, a sentence naming them) for the Transformer studies."""
    dense_members = groups.get(TRANSFORMER_DENSE_GROUP, [])
    dense = mean_or_none(val_losses(dense_members))
    entropy_runs = dense_members or [m for g, ms in groups.items()
                                     if g.startswith(TRANSFORMER_PREFIXES) for m in ms]
    entropy = mean_or_none(column(entropy_runs, "metrics.unigram_entropy_nats"))
    if dense is None:
        text = (f"The dense reference `{TRANSFORMER_DENSE_GROUP}` is not run yet, "
                "so no change against it is shown.")
    else:
        text = (f"The dense model (`{TRANSFORMER_DENSE_GROUP}`) scores "
                f"{loss_text(dense_members)} nats/char")
        text += (f"; the unigram entropy is {entropy:.3f} nats/char." if entropy is not None
                 else ".")
    return dense, entropy, text


def _gordon_chart(inputs: ReportInputs, found: Mapping[int, FtPair],
                  dense: float | None, entropy: float | None) -> bool:
    """Val loss vs sparsity, without and with fine-tuning; dense and unigram as lines."""
    fig = Figure(figsize=(6.5, 4.0))
    ax = fig.add_subplot()
    drawn = False
    for index, label, colour, marker in [(0, "pruned, no fine-tuning", "tab:orange", "s"),
                                         (1, "pruned, fine-tuned", "tab:blue", "o")]:
        xs, ys, errs = [], [], []
        for s in sorted(found):
            losses = [float(v) for v in val_losses(found[s][index]) if is_number(v)]
            if losses:
                mean, std = mean_std(losses)
                xs.append(s)
                ys.append(mean)
                errs.append(std or 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=errs if any(errs) else None, color=colour,
                        marker=marker, capsize=3, label=label)
            drawn = True
    if not drawn:
        return False
    if dense is not None:
        ax.axhline(dense, color="black", linestyle="--", linewidth=1,
                   label=f"dense {dense:.3f} nats")
    if entropy is not None:
        ax.axhline(entropy, color="gray", linestyle=":", linewidth=1,
                   label=f"unigram entropy {entropy:.3f} nats")
    ax.set_xticks(GORDON_SPARSITIES, [f"{s}" for s in GORDON_SPARSITIES])
    ax.set_xlim(GORDON_SPARSITIES[0] - 5, GORDON_SPARSITIES[-1] + 5)
    finish_line_figure(fig, ax, "sparsity (% of weights removed, one global magnitude threshold)",
                       "validation loss (nats/char)", "Gordon et al. 2020 on the char Transformer (Shakespeare)",
                       inputs.figures_dir / PRUNING_GORDON_FIGURE)
    return True


def _gordon_claim(inputs: ReportInputs, found: Mapping[int, FtPair], dense_members: Group,
                  control: Group, cite: str) -> str:
    low, high = (inputs.published_by_id(i) for i in GORDON_REFERENCES)

    def change(members: Group, reference: Group) -> str | None:
        ref = mean_or_none(val_losses(reference))
        delta = loss_change(members, ref)
        if delta is None:
            return None
        relative = f"{100.0 * delta / ref:+.1f} %; " if ref else ""
        return f"{delta:+.3f} nats ({relative}{_change_verdict(members, reference)})"

    def at(s: int) -> str:
        if s not in found:
            return f"{s} %: not run"
        plain, tuned = found[s]
        texts = []
        for members, reference, how in [(plain, dense_members, "without fine-tuning"),
                                        (tuned, control, "fine-tuned")]:
            text = change(members, reference)
            if text is not None:
                texts.append(f"{text} {how}")
        return f"{s} %: " + (", ".join(texts) if texts else MISSING)

    levels = [int(low["value"]), int(high["value"]), GORDON_SPARSITIES[-1]]
    return (f"The claim ({cite}, BERT on {low.get('dataset', MISSING)}): pruning "
            f"{low['value']:g}–{high['value']:g} % of the pretrained weights barely changes "
            f"the model; heavier pruning hurts. Measured change in validation loss (relative "
            f"change and verdict in brackets), without fine-tuning against our dense model, "
            f"fine-tuned against the 0 % fine-tuned control: "
            + "; ".join(at(s) for s in levels) + ".")


def _gordon_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    found = _ft_pairs(groups, GORDON_PREFIX, GORDON_SPARSITIES)
    if not found:
        return (f"No Gordon et al. 2020 results (`{GORDON_PREFIX}S` and `{GORDON_PREFIX}S_ft` "
                f"for S in {', '.join(map(str, GORDON_SPARSITIES))}) yet.")
    cite = "; ".join(sorted({refs.cite(inputs.published_by_id(i)) for i in GORDON_REFERENCES}))
    dense, entropy, dense_text = _transformer_dense(groups)
    control = groups.get(GORDON_FT_CONTROL, [])
    control_loss = mean_or_none(val_losses(control))
    rows = []
    for s, (plain, tuned) in sorted(found.items()):
        counts = _counts_of((plain, tuned))
        rows.append([
            f"{s}",
            loss_text(plain),
            loss_text(tuned),
            signed_nats(loss_change(plain, dense)),
            signed_nats(loss_change(tuned, control_loss)),
            _counted_text(counts, _gordon_counter),
            format_stat(column(counts, "compression.bytes_exported"), "{:,.0f}",
                        collapse_equal=True),
        ])
    headers = ["sparsity (%)", "val loss, no fine-tuning (nats)", "val loss, fine-tuned (nats)",
               "change vs dense, no fine-tuning", "change vs 0 % fine-tuned, fine-tuned",
               "weights kept", "bytes exported"]
    patterns = sorted({p for pair in found.values() for _, r in _counts_of(pair)
                       for st in _stages(r, "prune")
                       for p in ([st["select"]] if isinstance(st.get("select"), str)
                                 else st.get("select") or [])})
    select = ", ".join(f"`{p}`" for p in patterns) or MISSING
    if control_loss is None:
        control_text = (f"The fine-tuned runs' control `{GORDON_FT_CONTROL}` (the same fine-tune "
                        "at 0 %) is not run yet, so no fine-tuned change is shown.")
    else:
        moved = loss_change(control, dense)
        control_text = (f"A fine-tuned run's change is taken against the 0 % fine-tuned control "
                        f"`{GORDON_FT_CONTROL}` ({loss_text(control)} nats/char), not against the "
                        f"dense model: the fine-tune alone moves the loss"
                        + (f" ({signed_nats(moved)} nats from the dense model)"
                           if moved is not None else "") + ".")
    parts = [
        "All weight matrices of the trained Transformer (kernels and the embedding) "
        "pruned to S % with one global magnitude threshold, then evaluated as is and "
        f"after a short fine-tune with the mask fixed. {dense_text} {control_text} Weights "
        f"kept count the matrices the runs prune, those their `select` names ({select}: "
        f"{_counted_total(found, _gordon_counter)} weights), as the paper counts the pruned "
        "weights: the position embedding and the attention biases, never pruned, are left "
        "out. Bytes are the sparse export.",
        markdown_table(headers, rows),
        _gordon_claim(inputs, found, groups.get(TRANSFORMER_DENSE_GROUP, []), control, cite),
    ]
    missing = _not_run_line(groups, GORDON_PREFIX, GORDON_SPARSITIES)
    if missing:
        parts.append(missing)
    if _gordon_chart(inputs, found, dense, entropy):
        parts.append(f"![Gordon et al. 2020: validation loss vs sparsity]"
                     f"({inputs.figure_link(PRUNING_GORDON_FIGURE)})")
    return "\n\n".join(parts)


def _structure_total(study: StructuredStudy, members: Group) -> int:
    """Heads (summed over layers) or layers of the model the runs pruned, from their config."""
    for _, r in members:
        layers = get_path(r, "config.model.num_layers")
        if study.unit == "layers" and is_number(layers):
            return int(layers)
        heads = get_path(r, "config.model.num_heads")
        if study.unit == "heads":
            if isinstance(heads, list) and heads and all(is_number(h) for h in heads):
                return int(sum(heads))
            if is_number(heads) and is_number(layers):
                return int(heads * layers)
    return study.default_total


def _around(target: float, levels: Sequence[tuple[int, float]]) -> list[int]:
    """The levels nearest `target` % from below and from above (one if exact)."""
    below = [(p, k) for k, p in levels if p <= target + CLAIM_EPS]
    above = [(p, k) for k, p in levels if p >= target - CLAIM_EPS]
    picked = {max(below)[1]} if below else set()
    if above:
        picked.add(min(above)[1])
    return sorted(picked)


def _structured_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References,
                     study: StructuredStudy, intro: str, counted: str, counted_note: str,
                     counter: Counter,
                     claim: Callable[[Mapping[int, FtPair], Mapping[int, str]], str],
                     targets: Sequence[float]) -> str:
    found = _ft_pairs(groups, study.prefix, study.levels, study.suffix)
    if not found:
        return (f"No {study.title} results (`{study.prefix}K{study.suffix}` and "
                f"`{study.prefix}K_ft{study.suffix}` for K "
                f"in {', '.join(map(str, study.levels))}) yet.")
    dense, entropy, dense_text = _transformer_dense(groups)
    dense_members = groups.get(TRANSFORMER_DENSE_GROUP, [])
    labels: dict[int, str] = {}
    pcts: dict[int, float] = {}
    rows = []
    for k, pair in sorted(found.items()):
        plain, tuned = pair
        total = _structure_total(study, [*plain, *tuned])
        labels[k], pcts[k] = f"{k} of {total}", 100.0 * k / total
        rows.append([
            labels[k],
            f"{pcts[k]:.1f}",
            loss_text(plain),
            loss_text(tuned),
            signed_nats(loss_change(plain, dense)),
            signed_nats(loss_change(tuned, dense)),
            f"{_percent(_gain_kept(plain, dense, entropy))} / "
            f"{_percent(_gain_kept(tuned, dense, entropy))}",
            format_stat(column(_counts_of(pair), "compression.params_exported"), "{:,.0f}",
                        collapse_equal=True),
            _counted_text(_counts_of(pair), counter),
        ])
    headers = [f"{study.unit} removed", f"% of {study.unit}",
               "val loss, no fine-tuning (nats)", "val loss, fine-tuned (nats)",
               "change vs dense, no fine-tuning", "change vs dense, fine-tuned",
               "dense gain kept, no fine-tuning / fine-tuned (%)", "params exported",
               "weights kept"]

    def ours(k: int) -> str:
        texts = []
        for members, how in [(found[k][0], "without fine-tuning"), (found[k][1], "fine-tuned")]:
            change = loss_change(members, dense)
            if change is not None:
                texts.append(f"{change:+.3f} nats ({_percent(_gain_kept(members, dense, entropy))}"
                             f" % of the gain kept; {_change_verdict(members, dense_members)}) "
                             f"{how}")
        return f"{labels[k]} ({pcts[k]:.1f} %): " + (", ".join(texts) if texts else MISSING)

    levels = [(k, pcts[k]) for k in sorted(found)]
    picked = sorted({k for t in targets for k in _around(t, levels)})
    nearest = (f"Ours nearest {' and '.join(f'{t:g} %' for t in targets)}, change in "
               f"validation loss against our dense model (verdict by the separation rule): "
               + "; ".join(map(ours, picked)))
    parts = [
        f"{intro} {dense_text} \"Dense gain kept\" is 100 (H − L) / (H − L_dense) with H the "
        "unigram entropy: the share of the dense model's improvement over unigram "
        "statistics that the pruned model keeps, our nearest analogue of a task score "
        "kept. Params exported count the smaller model written to disk. Weights kept count "
        f"{counted} ({_counted_total(found, counter)} weights), the matrices "
        f"{'head pruning' if study.unit == 'heads' else 'layer dropping'} removes, as the paper "
        f"counts what it prunes{counted_note}; the {study.unit} removed are read from the "
        "export's size.",
        markdown_table(headers, rows),
        f"{claim(found, labels)} {nearest}.",
    ]
    missing = _not_run_line(groups, study.prefix, study.levels, study.suffix)
    if missing:
        parts.append(missing)
    return "\n\n".join(parts)


def _cite(inputs: ReportInputs, refs: References, study: StructuredStudy) -> str:
    return "; ".join(sorted({refs.cite(inputs.published_by_id(i)) for i in study.references}))


def _michel_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    wmt, bert = (inputs.published_by_id(i) for i in MICHEL.references)

    def claim(found: Mapping[int, FtPair], labels: Mapping[int, str]) -> str:
        return (f"The paper ({_cite(inputs, refs, MICHEL)}): {wmt['value']:g} % of the heads "
                f"({wmt.get('dataset', MISSING)} Transformer) to {bert['value']:g} % "
                f"(BERT on {bert.get('dataset', MISSING)}) can be pruned at test time "
                "with little loss.")

    counted = "the attention projection matrices, the query, key, value and output kernels of every layer"
    main = _structured_part(
        inputs, groups, refs, MICHEL,
        intro="The paper's recipe: the K attention heads of least importance I_h (the mean over "
              "calibration windows of |dL/dxi_h|, xi_h a mask on head h's output, read as the sum "
              "of W_out[h] * dL/dW_out[h]; normalised by each layer's l2 norm; ranked over all "
              "layers, one head per round, re-estimated after each, at least one kept per layer) "
              "removed; the export is the smaller model itself, with fewer heads per layer.",
        counted=counted, counted_note="",
        counter=_michel_counter, claim=claim, targets=[wmt["value"], bert["value"]])
    ablation = _structured_part(
        inputs, groups, refs, MICHEL_L1,
        intro="Ablation: the K heads with the smallest weight norms (L1 of their query, key, value "
              "and output slices, ranked over all layers, at least one kept per layer) removed "
              "instead, in one shot.",
        counted=counted, counted_note="",
        counter=_michel_counter, claim=claim, targets=[wmt["value"], bert["value"]])
    return main + "\n\n" + ablation


def _sajjad_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    dropped, smaller, kept = (inputs.published_by_id(i) for i in SAJJAD.references)

    def claim(found: Mapping[int, FtPair], labels: Mapping[int, str]) -> str:
        text = (f"The paper ({_cite(inputs, refs, SAJJAD)}): dropping the top "
                f"{dropped.get('layers', MISSING)} layers of BERT ({dropped['value']:g} % of the "
                f"layers; the model about {smaller['value']:g} % smaller in parameters, as the "
                f"embeddings stay) keeps up to {kept['value']:g} % of its performance "
                f"({dropped.get('dataset', MISSING)}), on par with DistilBERT.")
        half = [k for k in found if abs(100.0 * k / _structure_total(SAJJAD, [
            *found[k][0], *found[k][1]]) - dropped["value"]) < CLAIM_EPS]
        for k in half:
            members = _counts_of(found[k])
            fewer = [100.0 * (1.0 - e / t) for e, t in zip(
                column(members, "compression.params_exported"),
                column(members, "compression.params_total"))
                if is_number(e) and is_number(t) and t]
            if fewer:
                text += (f" Ours at the same share of the layers, {labels[k]}: the export has "
                         f"{format_stat(fewer, '{:.1f}', collapse_equal=True)} % fewer "
                         f"parameters than the dense model (the paper's {smaller['value']:g} %).")
        return text

    return _structured_part(
        inputs, groups, refs, SAJJAD,
        intro="The top K Transformer blocks dropped; the export is the shallower model.",
        counted="the Transformer blocks' weight matrices, their attention and FFN kernels",
        counted_note=" (the embeddings and the output head stay in every run)",
        counter=_sajjad_counter, claim=claim, targets=[dropped["value"]])


PARTS = (
    ("Magnitude pruning of a pretrained Transformer (Gordon et al. 2020)", _gordon_part),
    ("Attention-head pruning (Michel et al. 2019)", _michel_part),
    ("Dropping the top layers (Sajjad et al. 2020)", _sajjad_part),
)
