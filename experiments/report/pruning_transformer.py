"""The report's Pruning section, third part: pruning a pretrained Transformer.

A family module of experiments/report (see builder.py): Gordon et al. 2020
(global magnitude), Michel et al. 2019 (attention heads) and Sajjad et al.
2020 (top layers) on our char Transformer. All start from the trained
`baseline_char_transformer`; a run named NAME evaluates the pruned model as
is, NAME_ft after a short fine-tune.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from experiments.report.common import (CLAIM_EPS, MISSING, Group, References, ReportInputs,
                                       column, finish_line_figure, format_stat, get_path,
                                       is_number, loss_change, loss_text, markdown_table,
                                       mean_or_none, mean_std, signed_nats, val_losses,
                                       weights_kept)

SECTION = "Pruning"
RESULTS_NAME = "pruning"

TRANSFORMER_DENSE_GROUP = "baseline_char_transformer"
FINETUNE_SUFFIX = "_ft"

GORDON_PREFIX = "gordon2020_char_transformer_"
GORDON_SPARSITIES = tuple(range(0, 100, 10))
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


MICHEL = StructuredStudy("Michel et al. 2019", "michel2019_char_transformer_",
                         (2, 4, 8, 12), "heads", 16,
                         ("michel2019_wmt_prunable_heads", "michel2019_bert_prunable_heads"))
SAJJAD = StructuredStudy("Sajjad et al. 2020", "sajjad2020_char_transformer_",
                         (1, 2, 3), "layers", 4,
                         ("sajjad2020_bert_layers_dropped", "sajjad2020_bert_performance_kept"))

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
              levels: Sequence[int]) -> dict[int, FtPair]:
    """{level: (PREFIX+level members, PREFIX+level_ft members)} for levels with either."""
    found: dict[int, FtPair] = {}
    for level in levels:
        plain = groups.get(f"{prefix}{level}", [])
        tuned = groups.get(f"{prefix}{level}{FINETUNE_SUFFIX}", [])
        if plain or tuned:
            found[level] = (plain, tuned)
    return found


def _not_run_line(groups: Mapping[str, Group], prefix: str, levels: Sequence[int]) -> str:
    """One line naming the runs (without / with fine-tuning) that have no results; '' if none."""
    names = [f"{level}{suffix}" for level in levels for suffix in ("", FINETUNE_SUFFIX)]
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


def _gordon_claim(inputs: ReportInputs, found: Mapping[int, FtPair],
                  dense: float | None, cite: str) -> str:
    low, high = (inputs.published_by_id(i) for i in GORDON_REFERENCES)

    def at(s: int) -> str:
        if s not in found:
            return f"{s} %: not run"
        plain, tuned = found[s]
        texts = []
        for members, how in [(plain, "without fine-tuning"), (tuned, "fine-tuned")]:
            change = loss_change(members, dense)
            if change is None:
                continue
            relative = f" ({100.0 * change / dense:+.1f} %)" if dense else ""
            texts.append(f"{change:+.3f} nats{relative} {how}")
        return f"{s} %: " + (", ".join(texts) if texts else MISSING)

    levels = [int(low["value"]), int(high["value"]), GORDON_SPARSITIES[-1]]
    return (f"The claim ({cite}, BERT on {low.get('dataset', MISSING)}): pruning "
            f"{low['value']:g}–{high['value']:g} % of the pretrained weights barely changes "
            f"the model; heavier pruning hurts. Measured change in validation loss against "
            f"our dense model (relative change in brackets): "
            + "; ".join(at(s) for s in levels) + ".")


def _gordon_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    found = _ft_pairs(groups, GORDON_PREFIX, GORDON_SPARSITIES)
    if not found:
        return (f"No Gordon et al. 2020 results (`{GORDON_PREFIX}S` and `{GORDON_PREFIX}S_ft` "
                f"for S in {', '.join(map(str, GORDON_SPARSITIES))}) yet.")
    cite = "; ".join(sorted({refs.cite(inputs.published_by_id(i)) for i in GORDON_REFERENCES}))
    dense, entropy, dense_text = _transformer_dense(groups)
    rows = []
    for s, (plain, tuned) in sorted(found.items()):
        counts = _counts_of((plain, tuned))
        rows.append([
            f"{s}",
            loss_text(plain),
            loss_text(tuned),
            signed_nats(loss_change(plain, dense)),
            signed_nats(loss_change(tuned, dense)),
            weights_kept(counts),
            format_stat(column(counts, "compression.bytes_exported"), "{:,.0f}",
                        collapse_equal=True),
        ])
    headers = ["sparsity (%)", "val loss, no fine-tuning (nats)", "val loss, fine-tuned (nats)",
               "change vs dense, no fine-tuning", "change vs dense, fine-tuned",
               "weights kept", "bytes exported"]
    parts = [
        "All weight matrices of the trained Transformer (kernels and the embedding) "
        "pruned to S % with one global magnitude threshold, then evaluated as is and "
        f"after a short fine-tune with the mask fixed. {dense_text} Weights kept are "
        "nonzeros of the weight matrices over their size; bytes are the sparse export.",
        markdown_table(headers, rows),
        _gordon_claim(inputs, found, dense, cite),
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
                     study: StructuredStudy, intro: str, claim: str,
                     targets: Sequence[float]) -> str:
    found = _ft_pairs(groups, study.prefix, study.levels)
    if not found:
        return (f"No {study.title} results (`{study.prefix}K` and `{study.prefix}K_ft` for K "
                f"in {', '.join(map(str, study.levels))}) yet.")
    dense, entropy, dense_text = _transformer_dense(groups)
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
        ])
    headers = [f"{study.unit} removed", f"% of {study.unit}",
               "val loss, no fine-tuning (nats)", "val loss, fine-tuned (nats)",
               "change vs dense, no fine-tuning", "change vs dense, fine-tuned",
               "dense gain kept, no fine-tuning / fine-tuned (%)", "params exported"]

    def ours(k: int) -> str:
        texts = []
        for members, how in [(found[k][0], "without fine-tuning"), (found[k][1], "fine-tuned")]:
            change = loss_change(members, dense)
            if change is not None:
                texts.append(f"{change:+.3f} nats ({_percent(_gain_kept(members, dense, entropy))}"
                             f" % of the gain kept) {how}")
        return f"{labels[k]} ({pcts[k]:.1f} %): " + (", ".join(texts) if texts else MISSING)

    levels = [(k, pcts[k]) for k in sorted(found)]
    picked = sorted({k for t in targets for k in _around(t, levels)})
    nearest = (f"Ours nearest {' and '.join(f'{t:g} %' for t in targets)}, change in "
               f"validation loss against our dense model: " + "; ".join(map(ours, picked)))
    cite = "; ".join(sorted({refs.cite(inputs.published_by_id(i)) for i in study.references}))
    parts = [
        f"{intro} {dense_text} \"Dense gain kept\" is 100 (H − L) / (H − L_dense) with H the "
        "unigram entropy: the share of the dense model's improvement over unigram "
        "statistics that the pruned model keeps, our nearest analogue of a task score "
        "kept. Params exported count the smaller model written to disk.",
        markdown_table(headers, rows),
        f"{claim.format(cite=cite)} {nearest}.",
    ]
    missing = _not_run_line(groups, study.prefix, study.levels)
    if missing:
        parts.append(missing)
    return "\n\n".join(parts)


def _michel_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    wmt, bert = (inputs.published_by_id(i) for i in MICHEL.references)
    return _structured_part(
        inputs, groups, refs, MICHEL,
        intro="The K attention heads with the smallest weight norms (query, key, value and "
              "output slices, ranked over all layers, at least one kept per layer) removed; "
              "the export is the smaller model itself, with fewer heads per layer.",
        claim=(f"The paper ({{cite}}): {wmt['value']:g} % of the heads "
               f"({wmt.get('dataset', MISSING)} Transformer) to {bert['value']:g} % "
               f"(BERT on {bert.get('dataset', MISSING)}) can be pruned at test time "
               "with little loss."),
        targets=[wmt["value"], bert["value"]])


def _sajjad_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    dropped, kept = (inputs.published_by_id(i) for i in SAJJAD.references)
    return _structured_part(
        inputs, groups, refs, SAJJAD,
        intro="The top K Transformer blocks dropped; the export is the shallower model.",
        claim=(f"The paper ({{cite}}): dropping the top {dropped['value']:g} % of BERT's "
               f"layers keeps {kept['value']:g} % of its performance "
               f"({dropped.get('dataset', MISSING)})."),
        targets=[dropped["value"]])


PARTS = (
    ("Magnitude pruning of a pretrained Transformer (Gordon et al. 2020)", _gordon_part),
    ("Attention-head pruning (Michel et al. 2019)", _michel_part),
    ("Dropping the top layers (Sajjad et al. 2020)", _sajjad_part),
)
