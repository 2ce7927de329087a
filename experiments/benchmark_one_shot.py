"""Seconds per layer of the one-shot solvers (SparseGPT, GPTQ) at GPT-2-small's layer shapes.

    python -m experiments.benchmark_one_shot [--repeats=3] [--rows=4096] [--out=FILE]

The papers report the cost of a whole model (SparseGPT: OPT-175B in under 4.5
hours on one A100; GPTQ: about four GPU hours); this times the solve of one
layer of each shape GPT-2 small has (Radford et al. 2019: width 768, FFN
3072): a query/key/value or attention-output kernel (768 inputs x 768
outputs), the FFN's first (768 x 3072) and second (3072 x 768) kernels, on
random weights and the X^T X of `rows` random calibration rows (a solve's
cost does not depend on the values). SparseGPT at 50 % (block 128) and GPTQ
at 4 bits with groups of 128, each the median of `repeats` solves, on the
host in float64 as the lab's solvers run (compression/sparsegpt.py,
compression/gptq.py; an accelerator does not change them). The model's total
is the per-layer seconds times the layers GPT-2 small has of each shape (12
blocks: 4 attention kernels and the 2 FFN kernels each).
"""
from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from absl import app, flags

from compression import gptq, sparsegpt

FLAGS = flags.FLAGS
# (name, d_in, d_out, how many GPT-2 small has)
SHAPES = (("attention (768 x 768)", 768, 768, 48), ("ffn_in (768 x 3072)", 768, 3072, 12),
          ("ffn_out (3072 x 768)", 3072, 768, 12))
SOLVERS = {"sparsegpt 50 %": lambda w, h: sparsegpt.prune_layer(w, h, 0.5, block_size=128),
           "gptq 4 bits, groups of 128": lambda w, h: gptq.quantize_layer(w, h, 4, group_size=128, block_size=128)}


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_integer("repeats", 3, "Solves timed per solver and shape (their median is reported).")
    flags.DEFINE_integer("rows", 4096, "Calibration rows behind X^T X (SparseGPT's 128 x 2048 tokens is 262,144; "
                                       "the solve's cost does not depend on it).")
    flags.DEFINE_string("out", "", "Write every number as JSON here.")


def time_solver(solve: Any, d_in: int, d_out: int, rows: int, repeats: int, seed: int = 0) -> list[float]:
    """Seconds of `repeats` solves of one random (d_in, d_out) layer with the X^T X of `rows` random rows."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d_in, d_out))
    x = rng.normal(size=(rows, d_in))
    xtx = x.T @ x
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        solve(w, xtx)
        times.append(time.perf_counter() - start)
    return times


def benchmark(repeats: int, rows: int) -> list[dict]:
    """One row per (solver, shape): the seconds of each solve, their median, and GPT-2 small's total."""
    out = []
    for solver, solve in SOLVERS.items():
        for name, d_in, d_out, count in SHAPES:
            times = time_solver(solve, d_in, d_out, rows, repeats)
            median = statistics.median(times)
            out.append({"solver": solver, "layer": name, "d_in": d_in, "d_out": d_out, "seconds": times,
                        "median_s": median, "layers_in_gpt2_small": count, "gpt2_small_s": median * count})
            print(f"{solver:28s} {name:22s} {median:8.2f} s per layer  x {count:2d} = {median * count:8.1f} s")
    return out


def main(argv: list[str]) -> None:
    del argv
    from experiments import benchmark_step

    rows = benchmark(FLAGS.repeats, FLAGS.rows)
    for solver in SOLVERS:
        total = sum(r["gpt2_small_s"] for r in rows if r["solver"] == solver)
        print(f"{solver}: GPT-2 small's 72 kernels in {total:.0f} s")
    if FLAGS.out:
        benchmark_step.write_rows(FLAGS.out, rows)


if __name__ == "__main__":
    define_flags()
    app.run(main)
