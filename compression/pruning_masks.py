"""From importance scores to pruning masks: the array-level pieces every pruning kind shares.

A score array says how much each weight (or unit) matters; a mask is a
**bool** array of the same shape, True = keep, False = prune (multiply a
weight by `mask.astype(w.dtype)` or use `jnp.where(mask, w, 0)`). Every
function here is pure jnp and jittable; shapes never depend on data, and the
`sparsity` arguments may be traced float scalars, so one compiled function
serves every sparsity of a schedule.

The exact-count rule, shared by `layerwise_mask`, `global_masks` and
`unit_mask`: of n candidates, exactly k = round(sparsity * n) are pruned
(computed in float32, round half to even as `jnp.round`), the k with the lowest
scores. Ties are broken deterministically by flat index: among equal scores
the lower index is pruned first. A concrete sparsity outside [0, 1) is a
ValueError; a traced one is clipped to [0, 1].
"""
from __future__ import annotations

from typing import Any

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


def unit_norms(w: jnp.ndarray, unit_axis: int, ord: int = 1) -> jnp.ndarray:
    """The L1 (`ord=1`) or L2 (`ord=2`) norm of each slice of `w` along
    `unit_axis`, taken over all other axes: a vector of length
    `w.shape[unit_axis]` scoring whole units for structured pruning. For a
    Dense kernel (in, out) `unit_axis=-1` scores output neurons; for a Conv
    kernel (h, w, in, out) `unit_axis=-1` scores filters (the L1 filter norm of
    Li et al. 2017, "Pruning Filters for Efficient ConvNets"); for an attention
    kernel (width, heads, head_dim) `unit_axis=1` scores heads.
    """
    w = jnp.asarray(w)
    axis = _normalize_axis(unit_axis, w.ndim, "unit_axis")
    if ord not in (1, 2) or isinstance(ord, bool):
        raise ValueError(f"ord must be 1 or 2, got {ord!r}")
    others = tuple(a for a in range(w.ndim) if a != axis)
    if ord == 1:
        return jnp.sum(jnp.abs(w), axis=others)
    return jnp.sqrt(jnp.sum(jnp.square(w), axis=others))


def _keep_flat(flat: jnp.ndarray, sparsity: Any) -> jnp.ndarray:
    """Bool keep-vector for a 1-D score vector under the exact-count rule."""
    n = flat.shape[0]
    s = jnp.clip(jnp.asarray(sparsity, jnp.float32), 0.0, 1.0)
    k = jnp.round(s * jnp.float32(n)).astype(jnp.int32)
    order = jnp.argsort(flat, stable=True)  # ties: lower index first, so pruned first
    ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return ranks >= k


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


def global_masks(scores: Any, sparsity: Any) -> Any:
    """One ranking across every array of `scores` (a dict of arrays, or any
    pytree of them): exactly round(sparsity * total) entries are pruned
    overall, the lowest-scoring ones, so layers may end with different
    sparsities (global magnitude pruning). Returns bool masks in the same
    structure and shapes. Ties are broken by position in the concatenation of
    the flattened arrays in pytree order (sorted dict keys), lower pruned
    first. Scores of different layers are compared as they are, so normalize
    them beforehand if their scales differ.
    """
    leaves, treedef = jax.tree_util.tree_flatten(scores)
    if not leaves:
        raise ValueError("global_masks needs at least one score array, got an empty tree")
    _check_concrete_sparsity(sparsity)
    leaves = [jnp.asarray(x) for x in leaves]
    if sum(x.size for x in leaves) == 0:
        return jax.tree_util.tree_unflatten(treedef, [jnp.ones(x.shape, bool) for x in leaves])
    keep = _keep_flat(jnp.concatenate([x.reshape(-1) for x in leaves]), sparsity)
    masks, start = [], 0
    for x in leaves:
        masks.append(keep[start:start + x.size].reshape(x.shape))
        start += x.size
    return jax.tree_util.tree_unflatten(treedef, masks)


def nm_mask(scores: jnp.ndarray, n: int, m: int, axis: int = 0) -> jnp.ndarray:
    """N:M semi-structured sparsity (Mishra et al. 2021, "Accelerating Sparse
    Deep Neural Networks"; NVIDIA Ampere 2:4): in every group of `m`
    consecutive entries along `axis` keep the `n` with the largest scores.
    For a Dense kernel (in, out) the groups run along axis 0, the input
    dimension that the sparse tensor cores reduce over. Ties within a group:
    lower index pruned first. `n` and `m` are Python ints (they fix the
    structure); 0 <= n <= m (n == m keeps everything) and the axis length
    must be divisible by `m`. Returns a bool mask of `scores`' shape.
    """
    scores = jnp.asarray(scores)
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{name} must be an integer, got {v!r}")
    if m < 1:
        raise ValueError(f"m must be >= 1, got m={m}")
    if not 0 <= n <= m:
        raise ValueError(f"n must be in [0, m], got n={n}, m={m}")
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


def unit_mask(unit_scores: jnp.ndarray, sparsity: Any) -> jnp.ndarray:
    """Bool vector over units (neurons, channels, filters, heads) pruning
    exactly round(sparsity * units) of the lowest-scoring ones (ties: lower
    index first) — structured pruning's counterpart of `layerwise_mask`.
    `unit_scores` is 1-D, e.g. from `unit_norms`."""
    unit_scores = jnp.asarray(unit_scores)
    if unit_scores.ndim != 1:
        raise ValueError(f"unit_scores must be 1-D, got shape {unit_scores.shape}")
    return layerwise_mask(unit_scores, sparsity)


def expand_unit_mask(unit_mask: jnp.ndarray, shape: tuple[int, ...],
                     unit_axis: int) -> jnp.ndarray:
    """Broadcasts a per-unit bool vector of length `shape[unit_axis]` to a
    weight mask of `shape`: every entry of a pruned unit's slice is pruned."""
    unit_mask = jnp.asarray(unit_mask)
    shape = tuple(shape)
    ax = _normalize_axis(unit_axis, len(shape), "unit_axis")
    if unit_mask.shape != (shape[ax],):
        raise ValueError(f"unit_mask must have shape ({shape[ax]},) to match axis {unit_axis} "
                         f"of shape {shape}, got {unit_mask.shape}")
    view = [1] * len(shape)
    view[ax] = shape[ax]
    return jnp.broadcast_to(unit_mask.reshape(view), shape)
