"""The report's Factorization and sharing section: Deep Compression, ALBERT, DRONE, MobileNet.

A family module of experiments/report (see builder.py). Each table reads the
runs of one configuration (configs/han2016_deep_compression_*.py,
lan2020_albert_char_transformer.py, chen2021_drone_char_transformer.py,
howard2017_mobilenet_cnn.py): bytes on disk and accuracy stage by stage for
Deep Compression; parameters and validation loss for ALBERT's sharing and
factorized embeddings; DRONE against truncated SVD at each rank; full against
separable convolutions, the DRONE and MobileNet exports timed side by side
by experiments/benchmark_inference.py (its --out JSON at
RESULTS/drone_latency/latency.json and RESULTS/mobilenet_latency/latency.json).
Verdicts by common.compare (the separation rule); faster or slower by the
timing repetitions' ranges (common.speed_class).
"""

from __future__ import annotations

from typing import Mapping

from experiments.report.common import (MISSING, TRANSFORMER_BASELINE, Comparison, Group, References, ReportInputs,
                                       accuracy_percents, column, compare, format_stat, format_wall_time, latency_table,
                                       loss_text, markdown_table, mean_or_none, not_run_yet, published_text,
                                       recorded_commands, selection_summary, transformer_baseline_loss, val_losses,
                                       within)

SECTION = "Factorization and sharing"
RESULTS_NAME = "factorization and sharing"
DEEP_COMPRESSION = "han2016_deep_compression"
ALBERT = "lan2020_albert_char_transformer"
DRONE = "chen2021_drone_char_transformer"
MOBILENET = "howard2017_mobilenet_cnn"
PREFIXES = (f"{DEEP_COMPRESSION}_", f"{ALBERT}_", f"{DRONE}_", f"{MOBILENET}_")
DRONE_RANKS = (8, 16, 32, 48)
# Issue 19's aim for the Huffman-coded export against the dense one: at least this much smaller
# (bytes on disk), within this many points of its accuracy.
DEEP_COMPRESSION_AIM_RATIO = 35.0
DEEP_COMPRESSION_AIM_POINTS = 1.0
# RESULTS/<dir>/latency.json, written by experiments/benchmark_inference.py --out.
DRONE_LATENCY = "drone_latency"
MOBILENET_LATENCY = "mobilenet_latency"
INTRO = (
    "Reparameterizations whose export stores only what they need: k-means centroids and "
    "Huffman-coded indices (Deep Compression), one copy of a shared layer (ALBERT), two thin "
    "factors (SVD, DRONE), a depthwise and a pointwise convolution (MobileNet). Bytes are the "
    "export file's size on disk; accuracy and loss are mean ± sample std over the seeds.",
)


def _bytes(members: Group) -> float | None:
    return mean_or_none(column(members, "compression.bytes_exported"))


def deep_compression_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Han et al. 2016's stage-by-stage table: dense, pruned, clustered, Huffman-coded."""
    out, shown = [], []
    for model in ("lenet300", "lenet5"):
        stages = (("dense (SGD)", f"han2015_{model}_sgd_dense"), ("pruned", f"{DEEP_COMPRESSION}_{model}_pruned"),
                  ("+ k-means sharing", f"{DEEP_COMPRESSION}_{model}_clustered"),
                  ("+ Huffman coding", f"{DEEP_COMPRESSION}_{model}_huffman"))
        dense = _bytes(groups.get(stages[0][1], []))
        rows = []
        for label, name in stages:
            members = groups.get(name, [])
            shown.append(members)
            size = _bytes(members)
            rows.append([label, f"`{name}` ({len(members)})" if members else MISSING,
                         format_stat(accuracy_percents(members)),
                         format_stat(column(members, "compression.bytes_exported"), "{:,.0f}", collapse_equal=True),
                         f"{dense / size:.1f}×" if dense and size else MISSING])
        label = "LeNet-300-100" if model == "lenet300" else "LeNet-5"
        out += [f"**{label}** (Fashion-MNIST):",
                markdown_table(["stage", "runs", "test accuracy (%)", "bytes", "against dense"], rows),
                _deep_compression_aim(label, groups.get(stages[0][1], []), groups.get(stages[-1][1], [])),
                *(selection_summary(inputs, f"{DEEP_COMPRESSION}_{model}_{kind}") or
                  f"The {what} is not chosen on the selection split yet (`paper/selection/"
                  f"{DEEP_COMPRESSION}_{model}_{kind}.json`; its command is in configs/{DEEP_COMPRESSION}_{model}.py)."
                  for kind, what in (("pruned", "pruning rate"), ("huffman", "bit width"))),
                "Published (MNIST): " + published_text(inputs, refs, f"han2016_{model}_dense_size",
                                              f"han2016_{model}_compressed_size", f"han2016_{model}_compression",
                                              f"han2016_{model}_pq_compression") + "."]
    if not any(shown):
        return (f"Not run yet: `python -m experiments.reproduce --configs={DEEP_COMPRESSION}_lenet300:pruned,"
                f"{DEEP_COMPRESSION}_lenet300:clustered,{DEEP_COMPRESSION}_lenet300:huffman --seeds=0,1,2`, "
                "and the same for LeNet-5.")
    return "\n\n".join([part for part in out if part] + [recorded_commands([m for m in shown if m])])


def _deep_compression_aim(label: str, dense: Group, coded: Group) -> str:
    """Whether the Huffman-coded export is DEEP_COMPRESSION_AIM_RATIO times smaller than the dense one
    and within DEEP_COMPRESSION_AIM_POINTS of its accuracy (common.within, over seeds); "" until both ran."""
    dense_bytes, coded_bytes = _bytes(dense), _bytes(coded)
    check = within(accuracy_percents(coded), accuracy_percents(dense), DEEP_COMPRESSION_AIM_POINTS)
    if not dense_bytes or not coded_bytes or check is None:
        return ""
    ratio = dense_bytes / coded_bytes
    size = (f"{ratio:.1f}× smaller (at least {DEEP_COMPRESSION_AIM_RATIO:.0f}×: "
            f"{'holds' if ratio >= DEEP_COMPRESSION_AIM_RATIO else 'fails'})")
    return (f"Aim on {label}: the Huffman-coded export is {size}; its accuracy against the dense model's is "
            f"{check.text()}.")


ALBERT_ROWS = (("none", "not shared"), ("all", "all shared"), ("attention", "attention shared"),
               ("ffn", "FFN shared"))
EMBED_ROWS = (("embed_128", "E = 128 (= width, not factorized)"), ("embed_64", "E = 64"), ("embed_32", "E = 32"))


def albert_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """ALBERT's Table 4 on the character Transformer, and the factorized embeddings at word level."""
    runs = {v: groups.get(f"{ALBERT}_{v}", []) for v, _ in ALBERT_ROWS + EMBED_ROWS}
    if not any(runs.values()):
        return not_run_yet(ALBERT, [v for v, _ in ALBERT_ROWS + EMBED_ROWS], groups)

    def row(variant, label):
        members = runs[variant]
        c = compare(val_losses(members), val_losses(runs["none"]), "nats") if variant in ("all", "attention",
                                                                                          "ffn") else None
        return [label, format_stat(column(members, "compression.params_exported"), "{:,.0f}", collapse_equal=True),
                loss_text(members) if members else MISSING, str(len(members)),
                format_wall_time(members), c.verdict("worse", "better") if c else ""]
    # Issue 19 asks every row's steps (the same in each, said below the tables) and wall time.
    costs = ["runs", "wall time"]
    return "\n\n".join(part for part in [
        "Cross-layer sharing (character level, 4 blocks):",
        markdown_table(["sharing", "parameters", "val loss (nats)", *costs, "against not shared"],
                       [row(v, label) for v, label in ALBERT_ROWS]),
        "Factorized, tied embeddings (word level, 8,193 tokens, no sharing):",
        markdown_table(["embedding", "parameters", "val loss (nats)", *costs, ""],
                       [row(v, label) for v, label in EMBED_ROWS]),
        _same_steps(runs, ALBERT_ROWS, "sharing"), _same_steps(runs, EMBED_ROWS, "embedding"),
        "Wall time: each run's `timing.wall_s` (mean ± std over its seeds) on the machine that trained it, "
        "which may have run other jobs beside it; a run whose timing misses an interrupted invocation is left out.",
        "Published (ALBERT-base, E = 768, average of its downstream tasks): " + published_text(
            inputs, refs, "lan2020_albert_e768_not_shared", "lan2020_albert_e768_all_shared",
            "lan2020_albert_e768_attention_shared", "lan2020_albert_e768_ffn_shared") + ".",
        not_run_yet(ALBERT, [v for v, _ in ALBERT_ROWS + EMBED_ROWS], groups),
        recorded_commands([m for m in runs.values() if m])] if part)


def _same_steps(runs: Mapping[str, Group], rows: tuple, table: str) -> str:
    """Whether every run of one ALBERT table trained the same number of steps (the issue's condition)."""
    steps = {int(v) for variant, _ in rows for v in column(runs[variant], "config.train.num_steps")}
    if len(steps) > 1:
        return (f"The {table} rows trained different numbers of steps ({', '.join(f'{n:,}' for n in sorted(steps))}):"
                f" their losses are not comparable until they match.")
    return f"Every {table} row trained {steps.pop():,} steps." if steps else ""


def drone_claim(plain: list[tuple[int, Comparison]], tuned: list[tuple[int, Comparison]]) -> str:
    """Chen et al.'s claim, DRONE no worse than SVD at every rank, judged on the ranks with results, without and
    with the fine-tune: fails where DRONE is worse (separated), else holds (the separation rule)."""
    def judged(pairs: list[tuple[int, Comparison]], what: str) -> str:
        worse = [rank for rank, c in pairs if c.sign > 0]
        level = [rank for rank, c in pairs if not c.separated]
        notes = [f"{word} at rank {', '.join(map(str, ranks))}"
                 for word, ranks in (("worse", worse), ("not separated", level)) if ranks]
        return (f"{what} it **{'fails' if worse else 'holds'}** on the {len(pairs)} ranks with results"
                + (f" ({'; '.join(notes)})" if notes else ""))
    parts = [judged(pairs, what) for pairs, what in ((plain, "without fine-tuning"), (tuned, "after the fine-tune"))
             if pairs]
    if not parts:
        return ""
    return "The published claim, DRONE no worse than SVD at every rank: " + "; ".join(parts) + "."


def drone_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """DRONE against SVD at each rank, without and with the fine-tune."""
    rows, shown = [], []
    against_svd: dict[str, list[tuple[int, Comparison]]] = {"": [], "_ft": []}
    for rank in DRONE_RANKS:
        cells = [str(rank)]
        for suffix in ("", "_ft"):
            svd, drone = (groups.get(f"{DRONE}_{m}_{rank}{suffix}", []) for m in ("svd", "drone"))
            shown += [svd, drone]
            c = compare(val_losses(drone), val_losses(svd), "nats")
            cells += [loss_text(svd) if svd else MISSING, loss_text(drone) if drone else MISSING,
                      c.verdict("worse", "better") if c else MISSING]
            if c:
                against_svd[suffix].append((rank, c))
        members = next((m for m in shown[-4:] if m), [])
        cells.append(format_stat(column(members, "compression.params_exported"), "{:,.0f}", collapse_equal=True))
        rows.append(cells)
    variants = [f"{m}_{r}{s}" for r in DRONE_RANKS for s in ("", "_ft") for m in ("svd", "drone")]
    if not any(shown):
        return not_run_yet(DRONE, variants, groups, total=len(variants))
    dense = transformer_baseline_loss(groups)
    return "\n\n".join(part for part in [
        f"Validation loss (nats; the unfactored model: {dense}) with every attention projection and FFN matrix at "
        "rank r, without fine-tuning and after it (`_ft`); DRONE against SVD:",
        markdown_table(["rank", "SVD", "DRONE", "DRONE against SVD", "SVD, fine-tuned", "DRONE, fine-tuned",
                        "DRONE against SVD", "parameters"], rows),
        "Latency of the factored export (x·U·V, two thin matmuls per matrix; SVD and DRONE exports of one "
        "rank have the same shapes, so one of them is timed) beside the unfactored one:",
        latency_table(inputs, DRONE_LATENCY, [("unfactored", [TRANSFORMER_BASELINE])] + [
            (f"rank {r}", [f"{DRONE}_{m}_{r}{s}" for s in ("_ft", "") for m in ("drone", "svd")])
            for r in DRONE_RANKS], groups),
        drone_claim(against_svd[""], against_svd["_ft"]),
        "Published: " + published_text(inputs, refs, "chen2021_mrpc_speedup", "chen2021_mrpc_accuracy_drop") + ".",
        not_run_yet(DRONE, variants, groups, total=len(variants)),
        recorded_commands([m for m in shown if m])] if part)


def mobilenet_part(inputs: ReportInputs, groups: Mapping[str, Group], refs: References) -> str:
    """Full against depthwise-separable convolutions, and a trained model converted."""
    rows_spec = (("full", "full 3x3 convolutions"), ("separable", "depthwise-separable, from scratch"),
                 ("converted", "full, converted to separable pairs and fine-tuned"))
    runs = {k: groups.get(f"{MOBILENET}_{k}", []) for k, _ in rows_spec}
    if not any(runs.values()):
        return not_run_yet(MOBILENET, [k for k, _ in rows_spec], groups)
    rows = []
    for kind, label in rows_spec:
        members = runs[kind]
        c = compare(accuracy_percents(members), accuracy_percents(runs["full"]), "points") if kind != "full" else None
        rows.append([label, format_stat(accuracy_percents(members)),
                     format_stat(column(members, "compression.params_exported"), "{:,.0f}", collapse_equal=True),
                     format_stat([v / 1e6 for v in column(members, "compression.flops_per_example") if v is not None],
                                 "{:.2f}", collapse_equal=True),
                     c.verdict("above", "below") if c else ""])
    return "\n\n".join(part for part in [
        markdown_table(["model", "test accuracy (%)", "parameters", "MFLOPs per image", "against full"], rows),
        "Latency of the exports, side by side:",
        latency_table(inputs, MOBILENET_LATENCY, [(label, [f"{MOBILENET}_{k}"]) for k, label in rows_spec], groups),
        "Published (ImageNet): " + published_text(inputs, refs, "howard2017_full_accuracy", "howard2017_separable_accuracy",
                                         "howard2017_full_params", "howard2017_separable_params") + ".",
        not_run_yet(MOBILENET, [k for k, _ in rows_spec], groups),
        recorded_commands([m for m in runs.values() if m])] if part)


PARTS = (("Deep Compression: pruning, k-means sharing, Huffman coding", deep_compression_part),
         ("ALBERT: cross-layer sharing and factorized embeddings", albert_part),
         ("DRONE against SVD", drone_part),
         ("MobileNet: depthwise-separable convolutions", mobilenet_part))
