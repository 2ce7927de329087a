"""From importance scores to pruning masks: the array-level pieces every pruning kind shares.

A score array says how much each weight (or unit) matters; a mask is a
**bool** array of the same shape, True = keep, False = prune (multiply a
weight by `mask.astype(w.dtype)` or use `jnp.where(mask, w, 0)`). Every
function here is pure jnp and jittable; shapes never depend on data, and the
`sparsity` arguments may be traced float scalars, so one compiled function
serves every sparsity of a schedule.

The exact-count rule, shared by `layerwise_mask`, `global_masks` and
`unit_mask`: of n candidates, exactly k = round(sparsity * n) are pruned
(computed in float32, round half to even as `jnp.round`; `pruned_count`),
the k with the lowest scores, never more than a cap where one is given.
Ties are broken deterministically by flat index: among equal scores the
lower index is pruned first. A concrete sparsity outside [0, 1) is a
ValueError; a traced one is clipped to [0, 1].

Structured pruning scores and masks whole units (`unit_norms`, `unit_mask`,
`expand_unit_mask`); a unit may be periodic along its axis (`period`: unit u
is every index i with i % period == u, the rows of a Dense kernel reading a
flattened conv feature map with channels fastest).
"""
from __future__ import annotations

import math
import re
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from compression.sparsity_schedules import check_sparsity


def _check_concrete_sparsity(sparsity: Any) -> None:
    """Validates sparsity when its value is known; a traced value cannot be checked."""
    if isinstance(sparsity, jax.core.Tracer):
        return
    if np.ndim(sparsity) != 0:
        raise ValueError(f"sparsity must be a scalar, got shape {np.shape(sparsity)}")
    check_sparsity(sparsity)


def _normalize_axis(axis: int, ndim: int, name: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of rank {ndim}")
    return int(axis) % ndim


def magnitude_scores(w: jnp.ndarray) -> jnp.ndarray:
    """|w|, the weight-magnitude importance of Han et al. 2015 ("Learning both
    Weights and Connections for Efficient Neural Networks"). Same shape as `w`."""
    return jnp.abs(w)


def random_scores(key: jax.Array, shape: tuple[int, ...]) -> jnp.ndarray:
    """Uniform [0, 1) float32 scores of `shape`: random pruning, the control
    every importance criterion must beat."""
    return jax.random.uniform(key, shape, jnp.float32)


def unit_norms(w: jnp.ndarray, unit_axis: int, ord: int = 1, period: Optional[int] = None) -> jnp.ndarray:
    """The L1 (`ord=1`) or L2 (`ord=2`) norm of each unit's slice of `w`, in float32.

    Without `period`, unit u is the slice u along `unit_axis` (taken over all
    other axes): a vector of length `w.shape[unit_axis]` scoring whole units
    for structured pruning. For a Dense kernel (in, out) `unit_axis=-1`
    scores output neurons; for a Conv kernel (h, w, in, out) `unit_axis=-1`
    scores filters (the L1 filter norm of Li et al. 2017, "Pruning Filters
    for Efficient ConvNets"); for an attention kernel (width, heads,
    head_dim) `unit_axis=1` scores heads. With `period`, unit u is every
    index i along `unit_axis` with i % period == u (a vector of length
    `period`, which must divide the axis).
    """
    w = jnp.asarray(w, jnp.float32)
    axis = _normalize_axis(unit_axis, w.ndim, "unit_axis")
    if ord not in (1, 2) or isinstance(ord, bool):
        raise ValueError(f"ord must be 1 or 2, got {ord!r}")
    w = jnp.moveaxis(w, axis, 0)
    if period is None:
        rows = w.reshape((w.shape[0], -1))
    else:  # index i = q * period + u along the axis: reshape to (q, u, ...), unit axis first
        _check_period(period, w.shape[0], "unit_axis", unit_axis)
        rows = jnp.moveaxis(w.reshape((w.shape[0] // period, period) + w.shape[1:]), 1, 0)
        rows = rows.reshape((period, -1))
    if ord == 1:
        return jnp.sum(jnp.abs(rows), axis=1)
    return jnp.sqrt(jnp.sum(jnp.square(rows), axis=1))


def _check_period(period: Any, length: int, name: str, axis: int) -> None:
    if isinstance(period, bool) or not isinstance(period, (int, np.integer)) or period < 1:
        raise ValueError(f"period must be an integer >= 1, got {period!r}")
    if length % period:
        raise ValueError(f"period {period} does not divide the length {length} of {name} {axis}")


def pruned_count(sparsity: Any, n: int, max_pruned: Any = None) -> jnp.ndarray:
    """The exact-count rule's k of n candidates: round(sparsity * n) in float32 (sparsity clipped to
    [0, 1]), at most `max_pruned` when given. An int32 scalar; `sparsity` may be traced."""
    s = jnp.clip(jnp.asarray(sparsity, jnp.float32), 0.0, 1.0)
    k = jnp.round(s * jnp.float32(n)).astype(jnp.int32)
    return k if max_pruned is None else jnp.clip(k, 0, max_pruned)


def _keep_ranked(flat: jnp.ndarray, k: Any) -> jnp.ndarray:
    """Bool keep-vector for a 1-D score vector pruning its k lowest scores (ties: lower index first)."""
    n = flat.shape[0]
    order = jnp.argsort(flat, stable=True)  # ties: lower index first, so pruned first
    ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return ranks >= k


def _keep_flat(flat: jnp.ndarray, sparsity: Any, max_pruned: Any = None) -> jnp.ndarray:
    """Bool keep-vector for a 1-D score vector under the exact-count rule."""
    return _keep_ranked(flat, pruned_count(sparsity, flat.shape[0], max_pruned))


def layerwise_mask(scores: jnp.ndarray, sparsity: Any) -> jnp.ndarray:
    """Bool mask of `scores`' shape that prunes exactly round(sparsity * n) of
    its n entries, those with the lowest scores (ties: lower flat index pruned
    first). `sparsity` is a float in [0, 1) or a traced float scalar. With
    magnitude scores this is layer-wise magnitude pruning (Han et al. 2015).
    """
    scores = jnp.asarray(scores)
    _check_concrete_sparsity(sparsity)
    if scores.size == 0:
        return jnp.ones(scores.shape, bool)
    return _keep_flat(scores.reshape(-1), sparsity).reshape(scores.shape)


def global_masks(scores: Any, sparsity: Any, *, keep_best_of_each: bool = False) -> Any:
    """One ranking across every array of `scores` (a dict of arrays, or any
    pytree of them): exactly round(sparsity * total) entries are pruned
    overall, the lowest-scoring ones, so layers may end with different
    sparsities (global magnitude pruning). Returns bool masks in the same
    structure and shapes. Ties are broken by position in the concatenation of
    the flattened arrays in pytree order (sorted dict keys; list order), lower
    pruned first. Scores of different layers are compared as they are, so
    normalize them beforehand if their scales differ.

    `keep_best_of_each=True` keeps the highest-scoring entry of every array
    (the first of equal ones), so at most total - arrays are pruned: global
    structured pruning, where an empty layer would disconnect the network.
    """
    leaves, treedef = jax.tree_util.tree_flatten(scores)
    if not leaves:
        raise ValueError("global_masks needs at least one score array, got an empty tree")
    _check_concrete_sparsity(sparsity)
    leaves = [jnp.asarray(x) for x in leaves]
    total = sum(x.size for x in leaves)
    if total == 0:
        return jax.tree_util.tree_unflatten(treedef, [jnp.ones(x.shape, bool) for x in leaves])
    cap = None
    if keep_best_of_each:
        # The best entry of each array ranks above everything (+inf), and at most total - arrays go.
        leaves = [x.reshape(-1).at[jnp.argmax(x)].set(jnp.inf).reshape(x.shape) if x.size else x for x in leaves]
        cap = total - sum(1 for x in leaves if x.size)
    keep = _keep_flat(jnp.concatenate([x.reshape(-1) for x in leaves]), sparsity, cap)
    masks, start = [], 0
    for x in leaves:
        masks.append(keep[start:start + x.size].reshape(x.shape))
        start += x.size
    return jax.tree_util.tree_unflatten(treedef, masks)


# A kernel that projects its input onto heads, nn.DenseGeneral((heads, head_dim)) as the attention
# query/key/value of experiments/models.py: (width, heads, head_dim), reduced over width (axis 0). Its
# shape cannot tell it from a 1-D conv kernel (width, in, out), so it is recognized by its path.
HEAD_PROJECTION_KERNEL = re.compile(r"(^|.*/)(query|key|value)/kernel")


def reduction_axis(shape: tuple[int, ...], path: str = "") -> int:
    """The input-feature (reduction) axis of a kernel of `shape`: the axis N:M groups run along.

    A layer sums its input times the kernel over the input features; the
    2:4 sparse tensor cores (Mishra et al. 2021, "Accelerating Sparse Deep
    Neural Networks"; NVIDIA's ASP tooling) skip the zeros of that sum, so the
    groups of m consecutive weights run along the input features:

    - rank 1: axis 0;
    - rank >= 2: axis ndim - 2, the input features of every Flax kernel that
      ends (..., in, out): Dense (in, out) -> 0, Conv HWIO (h, w, in, out)
      -> 2 (the input channels, not the kernel's height; a 3x3 conv groups
      its `in` channels), 1-D conv (w, in, out) -> 1; the attention output
      projection (heads, head_dim, width) -> 1, head_dim. That kernel reduces
      over (heads, head_dim) together; groups along head_dim are groups of m
      consecutive entries of the flattened heads * head_dim input (row-major)
      that never straddle two heads, and they are the same groups whenever m
      divides head_dim;
    - a query/key/value kernel (width, heads, head_dim), whose `path` ends
      in query/kernel, key/kernel or value/kernel: axis 0, width (its input
      features; heads and head_dim are outputs). Without a path a rank-3
      kernel takes the rank rule (axis 1).
    """
    ndim = len(tuple(shape))
    if ndim < 1:
        raise ValueError(f"a scalar{f' ({path})' if path else ''} has no reduction axis to group along")
    if ndim == 1:
        return 0
    if ndim == 3 and path and HEAD_PROJECTION_KERNEL.fullmatch(path):
        return 0
    return ndim - 2


def kernel_io_shapes(shape: tuple[int, ...], path: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, output shape) of a kernel viewed as a (d_in, d_out) matrix: what one output sums over.

    Dense (in, out) -> ((in,), (out,)); a query/key/value kernel (width,
    heads, head_dim), recognized by its path as in `reduction_axis` ->
    ((width,), (heads, head_dim)); any other rank-3 kernel (the attention
    output projection (heads, head_dim, width)) -> ((heads, head_dim),
    (width,)); a conv (h, w, in, out) -> ((h, w, in), (out,)); a vector is
    refused.
    """
    shape = tuple(shape)
    if len(shape) < 2:
        raise ValueError(f"{path or 'a parameter'} of shape {shape} is not a kernel: it has no inputs and outputs")
    if len(shape) == 3 and path and HEAD_PROJECTION_KERNEL.fullmatch(path):
        return shape[:1], shape[1:]
    return shape[:-1], shape[-1:]


def per_output_mask(scores: jnp.ndarray, sparsity: Any, path: str = "") -> jnp.ndarray:
    """Bool mask pruning exactly round(sparsity * d_in) of each output's d_in inputs, its lowest scores.

    Outputs and inputs as `kernel_io_shapes` views the kernel; ties as in
    `layerwise_mask`. The comparison group of Wanda (Sun et al. 2024): each
    output keeps the same number of inputs.
    """
    scores = jnp.asarray(scores)
    _check_concrete_sparsity(sparsity)
    in_shape, _ = kernel_io_shapes(scores.shape, path)
    d_in = math.prod(in_shape)
    columns = scores.reshape(d_in, -1).T  # (d_out, d_in): one row per output
    keep = jax.vmap(lambda row: _keep_flat(row, sparsity))(columns)
    return keep.T.reshape(scores.shape)


def nm_mask(scores: jnp.ndarray, n: int, m: int, axis: Optional[int] = None) -> jnp.ndarray:
    """N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse
    Deep Neural Networks"; NVIDIA Ampere 2:4): in every group of `m`
    consecutive entries along `axis` keep the `n` with the largest scores.
    `axis` None is `reduction_axis(scores.shape)`, the input-feature axis the
    sparse tensor cores reduce over: axis 0 of a Dense kernel (in, out), axis
    2 of a Conv kernel (h, w, in, out) (a query/key/value kernel needs its
    path: `reduction_axis(shape, path)`). Ties within a group: lower index
    pruned first. `n` and `m` are Python ints (they fix the structure);
    0 <= n <= m (n == m keeps everything) and the axis length must be
    divisible by `m`. Returns a bool mask of `scores`' shape. (The `prune`
    technique refuses both ends, n = 0 and n = m, when it is built.)
    """
    scores = jnp.asarray(scores)
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    if not 0 <= n <= m:
        raise ValueError(f"n must be in [0, m], got n={n}, m={m}")
    if axis is None:
        axis = reduction_axis(scores.shape)
    ax = _normalize_axis(axis, scores.ndim, "axis")
    length = scores.shape[ax]
    if length % m:
        raise ValueError(f"the length of axis {axis} ({length}) must be divisible by m={m}; "
                         f"scores shape {scores.shape}")
    moved = jnp.moveaxis(scores, ax, -1)
    groups = moved.reshape(moved.shape[:-1] + (length // m, m))
    order = jnp.argsort(groups, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)  # rank of each entry within its group
    keep = (ranks >= m - n).reshape(moved.shape)
    return jnp.moveaxis(keep, -1, ax)


def unit_mask(unit_scores: jnp.ndarray, sparsity: Any, *, max_pruned: Any = None,
              multiple_of: int = 1) -> jnp.ndarray:
    """Bool vector over units (neurons, channels, filters, heads) pruning
    exactly round(sparsity * units) of the lowest-scoring ones (ties: lower
    index first) — structured pruning's counterpart of `layerwise_mask`.
    `unit_scores` is 1-D, e.g. from `unit_norms`. At most `max_pruned` units
    go when it is given (structured pruning keeps one unit of every layer:
    max_pruned = units - 1); `multiple_of` > 1 then rounds the kept count up
    to a multiple of it, never above the number of units (hardware-friendly
    widths)."""
    unit_scores = jnp.asarray(unit_scores)
    if unit_scores.ndim != 1:
        raise ValueError(f"unit_scores must be 1-D, got shape {unit_scores.shape}")
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, (int, np.integer)) or multiple_of < 1:
        raise ValueError(f"multiple_of must be an integer >= 1, got {multiple_of!r}")
    _check_concrete_sparsity(sparsity)
    n = unit_scores.shape[0]
    if n == 0:
        return jnp.ones((0,), bool)
    k = pruned_count(sparsity, n, max_pruned)
    if multiple_of > 1:
        kept = jnp.minimum(-((k - n) // multiple_of) * multiple_of, n)  # ceil to a multiple
        k = n - kept
    return _keep_ranked(unit_scores, k)


def expand_unit_mask(unit_mask: jnp.ndarray, shape: tuple[int, ...], unit_axis: int,
                     period: Optional[int] = None) -> jnp.ndarray:
    """Broadcasts a per-unit bool vector to a weight mask of `shape`: every
    entry of a pruned unit's slice is pruned. The vector has length
    `shape[unit_axis]`, or `period` for a periodic unit (unit u covers every
    index i along the axis with i % period == u)."""
    unit_mask = jnp.asarray(unit_mask)
    shape = tuple(shape)
    ax = _normalize_axis(unit_axis, len(shape), "unit_axis")
    units = shape[ax] if period is None else period
    if period is not None:
        _check_period(period, shape[ax], "unit_axis", unit_axis)
    if unit_mask.shape != (units,):
        raise ValueError(f"unit_mask must have shape ({units},) to match axis {unit_axis} of shape {shape}"
                         f"{'' if period is None else f' with period {period}'}, got {unit_mask.shape}")
    if period is not None:
        unit_mask = jnp.tile(unit_mask, shape[ax] // period)
    view = [1] * len(shape)
    view[ax] = shape[ax]
    return jnp.broadcast_to(unit_mask.reshape(view), shape)
