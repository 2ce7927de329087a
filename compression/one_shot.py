"""The layer-by-layer loop the one-shot solvers share (SparseGPT, GPTQ): select, calibrate in order, solve.

Frantar & Alistarh 2023 and Frantar et al. 2023 compress a trained model
without retraining, one layer at a time, each layer on the inputs the
already compressed layers before it produce (`calibration.sequential`).
`solve_kernels` is that loop over a parameter tree: the selected kernels,
grouped by top-level module in call order (`sequential_groups`), each
viewed as the (d_in, d_out) matrix of the layer y = x W (an attention
kernel's input or output axes flattened, `pruning_masks.kernel_io_shapes`)
and handed with its X^T X to a solver that returns the new matrix and
whatever the stage keeps about it (a mask, a quantization grid).
"""
from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

from compression.calibration import sequential
from compression.pruning_masks import kernel_io_shapes
from compression.selection import kernel_module, leaves_by_path, nest_paths, selected_paths
from compression.transform import require_statistics

# solve(path, matrix (d_in, d_out) float64, xtx (d_in, d_in)) -> (new matrix, what the stage keeps)
Solver = Callable[[str, np.ndarray, np.ndarray], tuple[np.ndarray, Any]]


def natural_key(path: str) -> list:
    """Sort key that orders block_2 before block_10 (digit runs compared as numbers)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def sequential_groups(paths: Sequence[str]) -> list[list[str]]:
    """The kernels grouped by their top-level module (a Transformer block, a Dense layer), in natural order.

    Sequential calibration solves one group on the inputs that the already
    solved groups before it produce; natural order is the models' call order
    (Dense_0, Dense_1, ...; block_0, ..., block_3, then head).
    """
    groups: dict[str, list[str]] = {}
    for p in paths:
        groups.setdefault(p.split("/")[0], []).append(p)
    return [sorted(groups[k], key=natural_key) for k in sorted(groups, key=natural_key)]


def matrix_shape(shape: Sequence[int], path: str) -> tuple[int, int]:
    """(d_in, d_out) of a dense or attention kernel of `shape`: its input and output axes flattened."""
    in_shape, out_shape = kernel_io_shapes(tuple(shape), path)
    return math.prod(in_shape), math.prod(out_shape)


def solve_kernels(params: Any, select: Any, batches: Any, solve: Solver, *, technique: str,
                  without_data: str = "") -> tuple[Any, dict[str, Any]]:
    """(params with every selected kernel solved, {path: what `solve` kept}), solved layer by layer.

    Each group's X^T X is gathered over the init `batches` with the earlier
    groups already solved (`calibration.sequential`); one group's statistics
    are alive at a time. Dense and attention kernels only: a convolution's
    inputs are patches, whose statistics the driver does not gather.
    `without_data` completes the error a run without init batches gets
    (what to use instead).
    """
    batches = require_statistics(batches, f"{technique}, which reads each layer's inputs,", without_data)
    paths = selected_paths(params, select, what=f"{technique}.select")
    modules = {p: kernel_module(p, f"{technique}.select") for p in paths}
    for p, w in leaves_by_path(params).items():
        if p in modules and np.ndim(w) not in (2, 3):
            raise ValueError(f"{technique} solves dense and attention kernels; {p} of shape {np.shape(w)} is not "
                             f"one: narrow {technique}.select")
    kept: dict[str, Any] = {}

    def statistics(current, group):
        return dict(batches.statistics(current, [modules[p] for p in group], ("xtx",), one_at_a_time=True))

    def solve_group(current, group, stats):
        flat = dict(leaves_by_path(current))
        for p in group:
            w = flat[p]
            matrix = np.asarray(w, np.float64).reshape(matrix_shape(np.shape(w), p))
            new, kept[p] = solve(p, matrix, np.asarray(stats[modules[p]]["xtx"]))
            flat[p] = jnp.asarray(np.asarray(new).reshape(np.shape(w)), w.dtype)
        return nest_paths(flat)

    return sequential(params, sequential_groups(paths), statistics, solve_group), kept
