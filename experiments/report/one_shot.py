"""The report's One-shot section: compressing a trained model without retraining, and LayerDrop.

A family module of experiments/report (see builder.py). SparseGPT (Frantar &
Alistarh 2023), Wanda (Sun et al. 2024) and magnitude pruning, GPTQ (Frantar
et al. 2023) against round-to-nearest, each applied once to a trained model
from a few calibration batches (configs/one_shot_common.py); the seeds of a
Transformer row are samples of calibration batches of one trained model, those
of a LeNet-300-100 row also three trained models. Orderings and verdicts are
common.ordering / common.compare (the separation rule of DESIGN.md). LayerDrop
(Fan et al. 2020): layers removed from a model trained with LayerDrop, against
the same layers removed from the baseline and a model of the pruned depth
trained from scratch.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

from configs import baseline_char_transformer
from configs import fan2020_layerdrop_char_transformer as layerdrop_config

from experiments.report.common import (MISSING, Comparison, Group, References, ReportInputs, accuracy_percents, column,
                                       compare, format_seconds, format_stat, is_number,
                                       loss_text, markdown_table, not_run_yet, ordering, published_text,
                                       read_json, read_selection, recorded_commands, reported_values, selection_summary,
                                       transformer_baseline_loss, val_losses)

SECTION = "One-shot compression"
RESULTS_NAME = "one-shot"
SPARSEGPT = "frantar2023_sparsegpt_char_transformer"
WANDA = "sun2024_wanda_char_transformer"
GPTQ = "frantar2023_gptq_char_transformer"
LAYERDROP = "fan2020_layerdrop_char_transformer"
PREFIXES = (f"{SPARSEGPT}_", f"{WANDA}_", f"{GPTQ}_", f"{LAYERDROP}_")
LENET300_DENSE = "baseline_lenet300"
LEVELS = (("50", "50 %"), ("60", "60 %"), ("70", "70 %"), ("80", "80 %"), ("2of4", "2:4"))
# (label, config, variant method)
PRUNERS = (("SparseGPT", SPARSEGPT, "sparsegpt"), ("Wanda", WANDA, "wanda"), ("magnitude", SPARSEGPT, "magnitude"))
GPTQ_SETTINGS = (("4", "pc", "4 bits, per channel"), ("4", "g32", "4 bits, groups of 32"),
                 ("3", "pc", "3 bits, per channel"), ("3", "g32", "3 bits, groups of 32"))
INTRO = (
    "Each run compresses a trained model once, from 8 training batches of calibration data "
    "(32,768 character positions for the Transformer, 1,024 images for LeNet-300-100), and "
    "trains no step: the solvers run layer by layer, each layer on the inputs the already "
    "compressed layers before it produce (`compression/one_shot.py`). Every block's attention "
    "and FFN kernels are compressed; the embeddings and the output head stay dense, as the "
    "papers keep them. Validation loss in nats per character (lower is better), mean ± sample "
    "std over the seeds; a Transformer row's seeds draw different calibration batches for the "
    "one trained model, a LeNet-300-100 row's also start from that seed's trained model.",
)


def _name(config: str, variant: str) -> str:
    return f"{config}_{variant}"


def _pruning_table(groups: Mapping[str, Group], suffix: str, values: Callable[[Group], list], fmt: str,
                   unit: str, sign: float) -> tuple[str, list[Group]]:
    rows, shown = [], []
    beats = {"SparseGPT": [0, 0, 0], "Wanda": [0, 0, 0]}  # levels it is better, not separated, worse than magnitude
    for level, label in LEVELS:
        arms, cells = [], []
        for name, config, method in PRUNERS:
            members = groups.get(_name(config, f"{method}_{level}{suffix}"), [])
            shown.append(members)
            cells.append(f"{format_stat(values(members), fmt)} ({len(members)})" if members else MISSING)
            arms.append((name, [sign * v for v in values(members) if is_number(v)]))
        rows.append([label, *cells, ordering(arms, unit)])
        scores = dict(arms)
        for name in beats:
            c = compare(scores[name], scores["magnitude"], unit)
            if c:
                beats[name][1 - c.sign] += 1
    table = markdown_table(["pruned", *(p[0] for p in PRUNERS), "ordering (best first)"], rows)
    if any(sum(counts) for counts in beats.values()):
        table += ("\n\nThe published claim, each one-shot method better than magnitude pruning: " + "; ".join(
            f"{name} better at {better}, not separated at {tied}, worse at {worse} of {better + tied + worse} levels "
            f"({'holds' if better == better + tied + worse else 'fails' if worse else 'not separated'})"
            for name, (better, tied, worse) in beats.items() if better + tied + worse) + ".")
    return table, shown


def pruning_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """SparseGPT, Wanda and magnitude pruning side by side at each level, on both models."""
    transformer, shown = _pruning_table(groups, "", val_losses, "{:.3f}", "nats", -1.0)
    lenet, shown_lenet = _pruning_table(groups, "_lenet300", accuracy_percents, "{:.2f}", "points", 1.0)
    if not any(shown + shown_lenet):
        return (f"No runs yet: `python -m experiments.reproduce --configs={SPARSEGPT}:sparsegpt_50,"
                f"{WANDA}:wanda_50,{SPARSEGPT}:magnitude_50 --seeds=0,1,2` (and the other levels).")
    published = published_text(inputs, refs, "frantar2023_sparsegpt_sparsity", *(
        f"wanda2024_llama2_7b_{m}_ppl" for m in ("dense", "magnitude_50", "sparsegpt_50", "wanda_50", "magnitude_2of4",
                                                 "sparsegpt_2of4", "wanda_2of4")))
    dense_lenet = format_stat(accuracy_percents(groups.get(LENET300_DENSE, [])), "{:.2f}")
    return "\n\n".join([
        f"The Shakespeare Transformer (dense: {transformer_baseline_loss(groups)} nats), validation loss, "
        "runs in brackets:", transformer,
        f"LeNet-300-100 on Fashion-MNIST (dense: {dense_lenet} %), test accuracy in %:", lenet,
        f"Published (perplexity: LLaMA-2-7B on WikiText): {published}. "
        "SparseGPT updates the weights it keeps; Wanda and magnitude only choose which to drop. "
        "Wanda compares weights within each output, magnitude pruning within each layer; at 2:4 "
        "both choose 2 of every 4 consecutive inputs of each output.",
        recorded_commands([m for m in shown + shown_lenet if m])])


def gptq_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """GPTQ against round-to-nearest on the same grid: loss, verdict, exported bytes."""
    rows, shown = [], []
    for bits, group, label in GPTQ_SETTINGS:
        gptq, rtn = (groups.get(_name(GPTQ, f"{m}_{bits}_{group}"), []) for m in ("gptq", "rtn"))
        act = groups.get(_name(GPTQ, f"gptq_{bits}_{group}_act"), [])
        shown += [gptq, rtn, act]
        c = compare(val_losses(gptq), val_losses(rtn), "nats")
        rows.append([label, loss_text(gptq) if gptq else MISSING, loss_text(act) if act else MISSING,
                     loss_text(rtn) if rtn else MISSING,
                     c.verdict("worse", "better") if c else MISSING,
                     format_stat(column(gptq, "compression.bytes_exported"), "{:,.0f}", collapse_equal=True),
                     format_stat(column(gptq, "compression.bits_per_weight"), "{:.2f}", collapse_equal=True)])
    if not any(shown):
        return f"No runs yet: `python -m experiments.reproduce --configs={GPTQ}:gptq_4_pc,{GPTQ}:rtn_4_pc --seeds=0,1,2`."
    published = published_text(inputs, refs, "frantar2023_gptq_bits")
    return "\n\n".join([
        f"Validation loss of the Transformer (dense: {transformer_baseline_loss(groups)} nats) with every block "
        "kernel at the given width, asymmetric min-max codes per output or per group of 32 inputs; "
        "GPTQ in column order and in activation order (`act`), RTN rounding each weight to nearest on "
        "the same grid. Bytes: the whole export (codes at their width, scales once per group, the "
        "dense embeddings and head); bits per weight over every parameter.",
        markdown_table(["weights", "GPTQ", "GPTQ, act order", "RTN", "GPTQ against RTN", "bytes (GPTQ)",
                        "bits/weight"], rows),
        f"Published: {published}.",
        recorded_commands([m for m in shown if m])])


COST_RUNS = (("SparseGPT, 50 %", SPARSEGPT, "sparsegpt_50"), ("Wanda, 50 %", WANDA, "wanda_50"),
             ("magnitude, 50 %", SPARSEGPT, "magnitude_50"), ("GPTQ, 4 bits, groups of 32", GPTQ, "gptq_4_g32"),
             ("RTN, 4 bits, groups of 32", GPTQ, "rtn_4_g32"))


def cost_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Calibration batches, the compression init's wall time and the statistics' peak bytes per method."""
    rows, shown = [], []
    for label, config, variant in COST_RUNS:
        members = groups.get(_name(config, variant), [])
        shown.append(members)
        rows.append([label, format_stat(column(members, "calibration.batches"), "{:.0f}", collapse_equal=True),
                     format_seconds(column(members, "calibration.init_s")),
                     format_stat([v / 1024 for v in column(members, "calibration.statistics_peak_bytes")
                                  if is_number(v)], "{:,.0f}", collapse_equal=True)])
    if not any(shown):
        return "No runs yet."
    published = published_text(inputs, refs, "frantar2023_sparsegpt_hours", "frantar2023_gptq_gpu_hours")
    return "\n\n".join([
        "On this machine's CPU (results.json `calibration`): the init's wall time includes gathering "
        "the statistics, one forward pass over the calibration batches per block, and the solve; the "
        "peak is the largest set of statistics held at once (one block's X^T X for SparseGPT and GPTQ, "
        "its inputs' squared norms for Wanda). Magnitude pruning reads no data (no statistics); RTN runs "
        "through the GPTQ stage with error feedback off, so it still gathers X^T X, unused.",
        markdown_table(["method", "batches", "init wall time", "statistics peak (KiB)"], rows),
        _solver_timing(inputs),
        f"Published, on GPUs at the scale of 175 billion parameters: {published}.",
        recorded_commands([m for m in shown if m])])


SOLVER_BENCHMARK = "benchmark_one_shot/benchmark.json"


def _solver_timing(inputs: ReportInputs) -> str:
    """The solvers' seconds per layer at GPT-2 small's shapes (experiments/benchmark_one_shot.py), if measured."""
    if inputs.results_dir is None or not (inputs.results_dir / SOLVER_BENCHMARK).exists():
        return ("The solvers' seconds per layer at GPT-2 small's shapes have not been measured yet "
                "(`python -m experiments.benchmark_one_shot --out=paper/results/" + SOLVER_BENCHMARK + "`).")
    bench = read_json(inputs.results_dir / SOLVER_BENCHMARK)
    rows = [[r["solver"], r["layer"], f"{r['median_s']:.2f}", str(r["layers_in_gpt2_small"]), f"{r['gpt2_small_s']:.0f}"]
            for r in bench["results"]]
    totals = {}
    for r in bench["results"]:
        totals[r["solver"]] = totals.get(r["solver"], 0.0) + r["gpt2_small_s"]
    return "\n\n".join([
        f"The solvers alone, on random layers of GPT-2 small's shapes (device: {bench['device']}; "
        "`experiments/benchmark_one_shot.py`, median of 3 solves, the Cholesky factor on the host in float64 and "
        "the column loop jitted):",
        markdown_table(["solver", "layer", "s per layer", "layers in GPT-2 small", "s in all"], rows),
        "GPT-2 small's 72 kernels: " + "; ".join(f"{k} {v:.0f} s" for k, v in totals.items()) + "."])


# The config's depth and the layers each of its KEEP variants drops, so the labels say what was run.
LAYERDROP_DEPTH = baseline_char_transformer.get_config().model.num_layers
SHALLOW_DEPTH = layerdrop_config.get_config("shallow").model.num_layers
# experiments.select's choice of the subset, made on the selection works (command in the config's docstring).
LAYERDROP_SELECTION = f"{LAYERDROP}_layerdrop_even"


def kept_layers(dropped: Iterable[int]) -> tuple[int, ...]:
    dropped = set(dropped)
    return tuple(i for i in range(LAYERDROP_DEPTH) if i not in dropped)


def layers_text(kept: tuple[int, ...]) -> str:
    return " and ".join(map(str, kept)) if len(kept) <= 2 else ", ".join(map(str, kept))


LAYERDROP_KEPT = {keep: kept_layers(dropped) for keep, dropped in layerdrop_config.DROPPED.items() if dropped}
LAYERDROP_ROWS = (
    ("layerdrop_all", f"LayerDrop (p = {layerdrop_config.RATE:g}), all {LAYERDROP_DEPTH} layers"),
    *((f"layerdrop_{k}", f"LayerDrop, layers {layers_text(kept)} kept") for k, kept in LAYERDROP_KEPT.items()),
    ("baseline_all", f"baseline, all {LAYERDROP_DEPTH} layers"),
    *((f"baseline_{k}", f"baseline, layers {layers_text(kept)} kept") for k, kept in LAYERDROP_KEPT.items()),
    ("shallow", f"{SHALLOW_DEPTH} layers, trained from scratch"))


def chosen_layers(inputs: ReportInputs) -> tuple[tuple[int, ...], list[Any]] | None:
    """The layers kept by the subset experiments.select chose on the selection works, and that
    point's per-seed validation losses (select keeps each point's reported-split metrics); None
    before the choice is made."""
    sweep = read_selection(inputs, LAYERDROP_SELECTION)
    if sweep is None:
        return None
    point = next(p for p in sweep["points"] if p["point"] == sweep["chosen"])
    return kept_layers(sweep["chosen"]["compression.stages.0.drop"]), reported_values(point, "val_loss_nats")


def layerdrop_steps(groups: Mapping[str, Group]) -> str:
    """`, each trained 4,000 steps` when the LayerDrop and 2-layer trainings agree on their steps, else nothing."""
    steps = sorted({v for variant in ("train", "shallow")
                    for v in column(groups.get(_name(LAYERDROP, variant), []), "config.train.num_steps")})
    if len(steps) != 1 or not is_number(steps[0]):
        return ""
    return f", each trained {steps[0]:,} steps"


def layerdrop_claim(against_scratch: list[Comparison]) -> str:
    """Fan et al.'s claim, that layers pruned from a LayerDrop model match or beat a model of that depth trained
    from scratch, judged on every kept subset with results: fails where one is worse (separated), else holds."""
    if not against_scratch:
        return ""
    worse = sum(c.sign > 0 for c in against_scratch)
    verdict = "fails" if worse else "holds"
    return (f"Fan et al.'s claim that a LayerDrop model pruned to a depth matches or beats a model of that depth "
            f"trained from scratch **{verdict}** here: worse at {worse} of the {len(against_scratch)} kept subsets "
            f"above (the separation rule).")


def layerdrop_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """LayerDrop: layers removed without fine-tuning, against the baseline and a shallow model, and
    the subset chosen on the selection works."""
    members = {v: groups.get(_name(LAYERDROP, v), []) for v, _ in LAYERDROP_ROWS}
    if not any(members.values()):
        return not_run_yet(LAYERDROP, [v for v, _ in LAYERDROP_ROWS] + ["train"], groups)
    rows = [[label, loss_text(members[v]) if members[v] else MISSING, str(len(members[v]))]
            for v, label in LAYERDROP_ROWS]
    # (label, per-seed losses, the baseline row with the same layers removed, if there is one)
    arms = [(f"LayerDrop with layers {layers_text(kept)} kept", val_losses(members[f"layerdrop_{keep}"]),
             f"baseline_{keep}") for keep, kept in LAYERDROP_KEPT.items()]
    chosen = chosen_layers(inputs)
    if chosen is not None:
        kept, losses = chosen
        rows.append([f"LayerDrop, layers {layers_text(kept)} kept: the subset chosen on the selection works",
                     format_stat(losses, "{:.3f}"), str(len(losses))])
        if kept not in LAYERDROP_KEPT.values():  # a subset the rows above already compare is not counted twice
            arms.append((f"LayerDrop with the chosen layers ({layers_text(kept)}) kept", losses, None))
    verdicts, against_scratch = [], []
    for label, losses, baseline in arms:
        for other, what in (("shallow", f"the {SHALLOW_DEPTH}-layer model trained from scratch"),
                            (baseline, "the baseline with the same layers removed")):
            c = compare(losses, val_losses(members[other]), "nats") if other else None
            if c:
                relation = f"{c.verdict('worse', 'better')} than" if c.separated else "not separated from"
                verdicts.append(f"{label} is {relation} {what} ({c.mean_a:.3f} against {c.mean_b:.3f} nats)")
                if other == "shallow":
                    against_scratch.append(c)
    published = published_text(inputs, refs, "fan2020_layerdrop_rate")
    return "\n\n".join(part for part in [
        f"Validation loss (nats) of {SHALLOW_DEPTH}-layer models cut from {LAYERDROP_DEPTH}-layer ones with no "
        f"training step, beside the {LAYERDROP_DEPTH}-layer models and a {SHALLOW_DEPTH}-layer model trained alone"
        + layerdrop_steps(groups) + f". The LayerDrop model and the {SHALLOW_DEPTH}-layer one hold out the selection "
        "works; the baseline was trained on them too.",
        markdown_table(["model", "val loss", "runs"], rows),
        ("; ".join(verdicts) + ".") if verdicts else "",
        layerdrop_claim(against_scratch),
        selection_summary(inputs, LAYERDROP_SELECTION) or
        (f"The subset chosen on the selection works: not chosen yet (the `experiments.select` command in "
         f"configs/{LAYERDROP}.py's docstring)."),
        f"Published: {published}.",
        not_run_yet(LAYERDROP, [v for v, _ in LAYERDROP_ROWS], groups),
        recorded_commands([m for m in [groups.get(_name(LAYERDROP, "train"), []), *members.values()] if m])]
        if part)


PARTS = (("SparseGPT, Wanda and magnitude pruning", pruning_part),
         ("GPTQ against round-to-nearest", gptq_part),
         ("Calibration cost", cost_part),
         ("LayerDrop", layerdrop_part))
