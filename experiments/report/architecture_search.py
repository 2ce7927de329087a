"""The report's Architecture search section: HAT's SuperTransformer, latency model and evolutionary search.

A family module of experiments/report (see builder.py). The search run
(`wang2020_hat_char_transformer_search`, one per seed) records its latency
model, its searches at each budget (evolution and the random-search control)
and the models it exported; the `retrain_*` runs train each exported model
from scratch. The claims: the searched model beats the best hand-scaled
baseline of its budget (fewer layers, or uniformly narrower) at two of three
budgets, after the same retraining; evolution beats random search at the same
evaluation count; the inherited-weight loss ranks architectures as retraining
does (Kendall's tau). Verdicts by common.compare (the separation rule).
"""

from __future__ import annotations

import itertools
from typing import Mapping, Sequence

from matplotlib.figure import Figure

from experiments.report.common import (MISSING, Group, References, ReportInputs, column, compare, config_text,
                                       finish_line_figure, format_seconds, format_stat, is_number,
                                       latency_by_group, latency_ms, latency_table, loss_text, markdown_table,
                                       mean_or_none, published_text, read_latency, recorded_commands, split_seed,
                                       val_losses)

SECTION = "Architecture search"
RESULTS_NAME = "architecture-search"
HAT = "wang2020_hat_char_transformer"
SEARCH = f"{HAT}_search"
PREFIXES = (f"{HAT}_",)
BUDGETS = ("25", "50", "75")
KINDS = (("evolution", "searched"), ("layers", "fewer layers"), ("narrow", "narrower"))
FIGURE = "architecture_search_hat.png"
# RESULTS/hat_latency/latency.json, written by experiments/benchmark_inference.py --out: the found models
# timed beside the supernet's full-size slice (`found_largest`).
HAT_LATENCY = "hat_latency"
FIGURE_BATCH = 128  # the figure's measured latency: at batch 1 a small model's call is mostly fixed overhead
PUBLISHED = ("wang2020_speedup", "wang2020_size_reduction", "wang2020_search_cost_reduction")
INTRO = (
    "A SuperTransformer at the baseline Transformer's size is trained once, sampling a "
    "sub-architecture every step; every sub-architecture is a slice of its weights "
    "(`compression/supernet.py`). Latencies measured on this machine fit a cost model the "
    "search reads instead of the clock; evolution and random search score candidates by "
    "their loss with inherited weights on the selection works; the models found, and the "
    "hand-scaled baselines of the same budget, are then retrained from scratch the same way "
    "(`configs/wang2020_hat_char_transformer.py`). Validation loss in nats per character.",
)


def _search_runs(groups: Mapping[str, Group]) -> Group:
    return groups.get(SEARCH, [])


def _retrained(groups: Mapping[str, Group], name: str) -> Group:
    return groups.get(f"{HAT}_retrain_{name}", [])


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a of two equally long sequences: (concordant - discordant) pairs over all pairs."""
    pairs = list(itertools.combinations(range(len(a)), 2))
    if not pairs:
        raise ValueError("Kendall's tau needs at least two values")
    sign = lambda x: (x > 0) - (x < 0)
    return sum(sign(a[i] - a[j]) * sign(b[i] - b[j]) for i, j in pairs) / len(pairs)


def _exported(searches: Group, name: str) -> bool:
    """Whether any search exported model `name` (a hand-scaled kind that no model fits is not exported)."""
    return any(isinstance(r.get("exports"), Mapping) and name in r["exports"] for _, r in searches)


def _of_seed(members: Group, seed: int | None) -> Group:
    """The runs of `members` with seed `seed`: each seed's search finds, and retrains, its own architectures."""
    return [(n, r) for n, r in members if split_seed(n)[1] == seed]


def loss_of_timed(members: Group, row: Mapping[str, object]) -> float | None:
    """The retrained loss of the seed whose export a latency row timed (None when that seed is not retrained).

    Each seed's search finds its own architecture, so a measured latency pairs with that seed's loss alone,
    not the mean over seeds.
    """
    return mean_or_none(val_losses(_of_seed(members, split_seed(str(row["run"]))[1])))


def budget_share(search: Mapping[str, object], name: str) -> float | None:
    """Export `name` of a search run as a percentage of the largest model on the measure its budgets were set
    on (`budget.by`): the cost model's predicted latency, or exact FLOPs or parameters."""
    budget, entry = search.get("budget"), (search.get("exports") or {}).get(name)
    if not isinstance(budget, Mapping) or not isinstance(entry, Mapping) or not is_number(budget.get("reference")):
        return None
    value = entry.get("predicted_latency_ms" if budget.get("by") == "latency" else str(budget.get("by")))
    return 100.0 * value / budget["reference"] if is_number(value) else None


def budgets_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Per budget: the searched model and the two hand-scaled baselines, retrained; the verdict."""
    searches = _search_runs(groups)
    if not searches:
        return f"No search yet: `python -m experiments.reproduce --configs={HAT}:search --seeds=0,1,2`."
    timed = latency_by_group(read_latency(inputs, HAT_LATENCY)[1])
    rows, wins, decided, shown = [], 0, 0, []
    points = {"measured": [], "share": []}  # (x, loss, label) for the figure: measured ms, or budget share
    for budget in BUDGETS:
        cells = []
        arms = {}
        for kind, label in KINDS:
            members = _retrained(groups, f"{budget}_{kind}")
            shown.append(members)
            # Each seed retrains its own search's export: the shares of the searches whose export was retrained.
            shares = [v for n, r in searches if (not members or _of_seed(members, split_seed(n)[1]))
                      and (v := budget_share(r, f"{budget}_{kind}")) is not None]
            arms[kind] = val_losses(members)
            if not members and not _exported(searches, f"{budget}_{kind}"):
                cells.append("none fits")
                continue
            cells.append(f"{loss_text(members) if members else MISSING} "
                         f"({format_stat(shares, '{:.0f}', collapse_equal=True)} %)")
            if not members:
                continue
            loss = mean_or_none(val_losses(members))
            row = next((timed[g] for g in (f"{HAT}_found_{budget}_{kind}", f"{HAT}_retrain_{budget}_{kind}")
                        if g in timed), None)
            timed_loss = loss_of_timed(members, row) if row else None
            if (ms := latency_ms(row, FIGURE_BATCH)) is not None and timed_loss is not None:
                points["measured"].append((ms, timed_loss, label))
            if (share := mean_or_none(shares)) is not None:
                points["share"].append((share, loss, label))
        best_baseline = min((k for k in ("layers", "narrow") if arms[k]),
                            key=lambda k: mean_or_none(arms[k]), default=None)
        c = compare(arms["evolution"], arms[best_baseline], "nats") if best_baseline else None
        if c:
            decided += 1
            wins += c.sign < 0
        rows.append([f"{budget} %", *cells, f"against {dict(KINDS)[best_baseline]}: {c.verdict('worse', 'better')}"
                     if c else MISSING])
    claim = (f"The searched model beats the best hand-scaled baseline at {wins} of {decided} budgets with results "
             f"(the claim: at least 2 of 3): {'holds' if wins >= 2 else 'fails' if decided == 3 else 'open'}.")
    by = ", ".join(sorted({str(v) for v in column(searches, "budget.by") if v}))
    figure = (_figure(inputs, points["measured"], f"measured latency at batch {FIGURE_BATCH} (ms)")
              if points["measured"] else _figure(inputs, points["share"], f"share of the largest model's {by} (%)"))
    published = published_text(inputs, refs, *PUBLISHED)
    retrained = [m for m in shown if m]
    return "\n\n".join(part for part in [
        f"Validation loss after retraining from scratch ({_recipe(retrained)}; mean ± std over seeds, each seed "
        "its own search); in brackets each model's share "
        f"of the largest model on the measure the budgets were set on, here {by} (the cost model's predicted "
        "latency where its held-out error is at most 10 %, else exact FLOPs: see below); a budget is such a "
        "share, and \"none fits\" where no model of that kind is within it:",
        markdown_table(["budget", "searched", "fewer layers", "narrower", "searched against the best baseline"],
                       rows),
        claim, figure,
        "Measured latency of the found models (the exports of seed 0's search; a retrained model has the "
        "same shapes) beside the supernet at full size:",
        latency_table(inputs, HAT_LATENCY, [("largest: the supernet at full size", [f"{HAT}_found_largest"])] + [
            (f"{budget} %, {label}", [f"{HAT}_found_{budget}_{kind}", f"{HAT}_retrain_{budget}_{kind}"])
            for budget in BUDGETS for kind, label in KINDS if _exported(searches, f"{budget}_{kind}")], groups),
        f"Published: {published}." if published else "",
        recorded_commands(retrained + [searches])] if part)


def _recipe(groups: Sequence[Group]) -> str:
    """The retraining the runs in `groups` share: steps and batch size, as their configs record them."""
    return f"{config_text(groups, 'train.num_steps')} steps of batch {config_text(groups, 'train.batch_size')}"


def _figure(inputs: ReportInputs, points: list[tuple[float, float, str]], xlabel: str) -> str:
    if not points:
        return ""
    fig = Figure(figsize=(6.0, 3.8))
    ax = fig.add_subplot()
    for label in dict.fromkeys(p[2] for p in points):
        mine = sorted(p for p in points if p[2] == label)
        ax.plot([p[0] for p in mine], [p[1] for p in mine], marker="o", linestyle="", label=label)
    front, best = [], float("inf")
    for lat, loss, _ in sorted(points):
        if loss < best:
            front.append((lat, loss))
            best = loss
    ax.plot([p[0] for p in front], [p[1] for p in front], color="black", linewidth=1, label="Pareto front")
    finish_line_figure(fig, ax, xlabel, "validation loss (nats)",
                       "HAT on Shakespeare: loss against cost", inputs.figures_dir / FIGURE)
    return f"![Loss against cost, with the Pareto front]({inputs.figure_link(FIGURE)})"


def search_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Evolution against random search (inherited loss), the latency model's error, and the search's cost."""
    searches = _search_runs(groups)
    if not searches:
        return ""
    rows = []
    for budget in BUDGETS:
        evolved = [r["searches"][budget]["evolution"]["inherited_loss"] for _, r in searches
                   if budget in r.get("searches", {})]
        sampled = [r["searches"][budget]["random"]["inherited_loss"] for _, r in searches
                   if budget in r.get("searches", {})]
        count = column(searches, f"searches.{budget}.evolution.evaluations")
        c = compare(evolved, sampled, "nats")
        # Both searches of a seed read one supernet, so each seed's pair is shown too; the verdict stays the
        # separation rule's, over the seeds' means.
        lower = sum(e < r for e, r in zip(evolved, sampled))
        rows.append([f"{budget} %", format_stat(evolved, "{:.3f}"), format_stat(sampled, "{:.3f}"),
                     format_stat(count, "{:.0f}", collapse_equal=True), f"{lower} of {len(evolved)}",
                     c.verdict("worse", "better") if c else MISSING])
    cost = markdown_table(
        ["what", "on this machine"],
        [["device", ", ".join(sorted({str(v) for v in column(searches, "latency.device_kind")}))],
         ["latency measurements", format_stat(column(searches, "latency.measurements"), "{:.0f}", collapse_equal=True)],
         ["cost model's held-out error (MAPE)", format_stat([100 * v for v in column(searches, "latency.heldout_mape")
                                                              if is_number(v)], "{:.1f}", collapse_equal=True) + " %"],
         ["the same architecture measured again: spread (max - min) / median", _spread_text(searches)],
         ["budgets measured by", ", ".join(sorted({str(v) for v in column(searches, "budget.by")}))],
         ["supernet training", format_seconds(column(searches, "timing.supernet_s"))],
         ["latency table", format_seconds(column(searches, "timing.latency_s"))],
         ["searches (3 budgets, evolution and random)", format_seconds(column(searches, "timing.search_s"))],
         ["the whole search", format_seconds(column(searches, "timing.wall_s"))]])
    nas = lambda key: config_text([searches], f"nas.{key}")
    return "\n\n".join([
        "Best inherited-weight loss on the selection works, evolution against random search with as many "
        f"evaluations, one search per seed. Evolution: a population of {nas('population')}, "
        f"{nas('generations')} generations, each keeping the {nas('parents')} best and adding "
        f"{nas('mutations')} mutants, the rest crossovers; each candidate scored on {nas('score_batches')} "
        "batches of the selection works. An evaluation is a distinct architecture scored (a repeat is not "
        "scored again); random search samples as many within the budget:",
        markdown_table(["budget", "evolution", "random", "evaluations", "searches where evolution is lower",
                        "evolution against random"], rows),
        cost])


def _spread_text(searches: Group) -> str:
    """The latency table's noise (`nas.repeat_spread`): median and largest spread of a repeated architecture."""
    median, most = ([100 * v for v in column(searches, f"latency.repeat_spread.{k}") if is_number(v)]
                    for k in ("median", "max"))
    if not median:
        return f"{MISSING} (not recorded by this search)"
    # Searches from before nas.repeat_spread was recorded say nothing; the text says how many it covers.
    part = f" ({len(median)} of {len(searches)} searches recorded it)" if len(median) < len(searches) else ""
    return (f"{format_stat(median, '{:.0f}', collapse_equal=True)} % median, "
            f"{format_stat(most, '{:.0f}', collapse_equal=True)} % at most{part}")


def rank_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Kendall's tau between inherited-weight and retrained losses of the sampled architectures."""
    searches = _search_runs(groups)
    taus, used = [], []
    for run, result in searches:
        samples = sorted(k for k in result.get("exports", {}) if k.startswith("sample_"))
        inherited, retrained = [], []
        seed = split_seed(run)[1]
        for name in samples:
            members = _retrained(groups, name) if seed is None else _of_seed(_retrained(groups, name), seed)
            if members and is_number(loss := members[0][1]["metrics"].get("val_loss_nats")):
                inherited.append(result["exports"][name]["inherited_loss"])
                retrained.append(loss)
                used.append(members[:1])
        if len(inherited) >= 2:
            taus.append((kendall_tau(inherited, retrained), len(inherited), seed))
    if not taus:
        return (f"Not run yet: the sampled architectures' retraining (`python -m experiments.reproduce "
                f"--configs={HAT}:retrain_sample_0,... --seeds=0,1,2`).")
    return (f"Kendall's tau between each sampled architecture's inherited-weight loss and its loss once "
            f"retrained from scratch ({_recipe(used)}; 1: the same ranking): "
            + "; ".join(f"{t:.2f} over {n} architectures" + (f" (seed {seed}'s search)" if seed is not None else "")
                        for t, n, seed in taus) + ".")


PARTS = (("Searched against hand-scaled models", budgets_part),
         ("The search and its cost", search_part),
         ("Inherited weights against retraining", rank_part))
