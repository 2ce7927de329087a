"""Calibration statistics: what data-aware techniques read about each layer's inputs.

For a layer y = x W with inputs x of `features` columns, accumulated over a
stream of calibration batches (rows = examples, or examples x positions):

- `xtx`: X^T X (float32, features x features): the Hessian of the layer's
  squared reconstruction error ||X W - X W'||^2 up to a factor 2, which
  OBS-style solvers (SparseGPT, Frantar & Alistarh 2023; GPTQ, Frantar et al.
  2023) and data-aware low rank (DRONE, Chen et al. 2021) read;
- `sq_norm`: the sum over rows of x_j^2 per input feature, whose square
  root is Wanda's ||X_j||_2 (Sun et al. 2024);
- `min`, `max`: per feature (min-max activation calibration);
- `count`: the number of rows;
- `inputs`: the rows themselves (percentile and MSE calibration need
  samples, not moments); kept only when asked, as they grow with the data.

Every function is pure jnp and jittable except `concat_inputs`; the driver
(`experiments.models.module_statistics`) reaches the layers' inputs through
the same module-call interception as the activation quantizers, inside one
jitted function per batch, so with a batch sharded over the data axis the
sums are reduced across devices by XLA. `sequential` runs a layer-by-layer
solver where each block is calibrated on the inputs that the already
compressed blocks before it produce.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

KINDS = ("xtx", "sq_norm", "min", "max", "count", "inputs")
MOMENTS = ("xtx", "sq_norm", "min", "max", "count")


def check_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The requested statistic kinds as a tuple, or a ValueError listing the known ones."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"calibration statistics {list(kinds)}: choose one or more of {list(KINDS)}")
    return kinds


def as_rows(x: Any) -> jnp.ndarray:
    """The inputs as float32 rows (-1, features): every leading axis (batch, positions) becomes rows."""
    x = jnp.asarray(x)
    return x.reshape((-1, x.shape[-1])).astype(jnp.float32)


def batch_statistics(x: Any, kinds: Sequence[str]) -> dict[str, jnp.ndarray]:
    """The moments `kinds` asks for of one batch of inputs (no `inputs`: see `concat_inputs`)."""
    rows = as_rows(x)
    out = {}
    if "xtx" in kinds:
        out["xtx"] = rows.T @ rows
    if "sq_norm" in kinds:
        out["sq_norm"] = jnp.sum(jnp.square(rows), axis=0)
    if "min" in kinds:
        out["min"] = jnp.min(rows, axis=0)
    if "max" in kinds:
        out["max"] = jnp.max(rows, axis=0)
    if "count" in kinds:
        out["count"] = jnp.asarray(rows.shape[0], jnp.float32)
    return out


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The statistics of two streams together: sums add, minima and maxima combine."""
    out = {}
    for kind, value in b.items():
        if kind not in a:
            out[kind] = value
        elif kind == "min":
            out[kind] = jnp.minimum(a[kind], value)
        elif kind == "max":
            out[kind] = jnp.maximum(a[kind], value)
        else:
            out[kind] = a[kind] + value
    return out


def concat_inputs(batches: Sequence[Any]) -> np.ndarray:
    """The rows of every batch of inputs, concatenated on the host (the `inputs` statistic)."""
    return np.concatenate([np.asarray(b).reshape((-1,) + np.shape(b)[-1:]) for b in batches])


def column_norms(stats: Mapping[str, Any]) -> jnp.ndarray:
    """||X_j||_2 per input feature, from `sq_norm` (Wanda's activation norm)."""
    return jnp.sqrt(stats["sq_norm"])


def sequential(params: Any, blocks: Sequence[Sequence[str]],
               statistics: Callable[[Any, Sequence[str]], Mapping[str, Any]],
               solve: Callable[[Any, Sequence[str], Mapping[str, Any]], Any]) -> Any:
    """Sequential layer-wise calibration: each block solved on inputs the solved blocks before it produce.

    For each block (a list of module paths) in order: stats =
    statistics(params, block), computed with the current params (so the
    earlier blocks are already compressed), then params = solve(params,
    block, stats). Only one block's statistics are alive at a time. This is
    the loop of SparseGPT and GPTQ (Frantar et al. 2023) over a model's layers.
    """
    for block in blocks:
        stats = statistics(params, list(block))
        params = solve(params, list(block), stats)
        del stats
    return params


def inverse_hessian_factor(xtx: Any, dampening: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """(U, dead): U upper triangular with (H + damp)^-1 = U^T U for H = X^T X, and the inputs no row reached.

    The factor the OBS-style solvers (SparseGPT, Frantar & Alistarh 2023;
    GPTQ, Frantar et al. 2023) read row by row. `dampening` adds that
    fraction of H's mean diagonal to its diagonal (their 1 %), so a
    rank-deficient H still factors; a dead input (zero diagonal: every
    calibration row is 0 there) gets diagonal 1 and is reported in `dead`.
    """
    h = np.array(np.asarray(xtx, np.float64))
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"X^T X must be a square matrix, got shape {h.shape}")
    if not dampening >= 0:
        raise ValueError(f"dampening {dampening!r} must be >= 0")
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    h += dampening * np.mean(np.diag(h)) * np.eye(len(h))
    try:
        inverse = np.linalg.inv(h)
        return np.linalg.cholesky((inverse + inverse.T) / 2).T, dead
    except np.linalg.LinAlgError as e:
        raise ValueError(f"X^T X (+ dampening {dampening}) is not positive definite ({e}): raise the dampening "
                         f"or calibrate on more batches") from e
