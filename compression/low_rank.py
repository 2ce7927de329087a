"""Low-rank factorization of dense kernels: truncated SVD, and data-aware DRONE.

A kernel W, viewed as a (d_in, d_out) matrix, is stored as two factors
u (d_in, r) and v (r, d_out) with W ~ u v: (d_in + d_out) r parameters and
multiply-adds per row instead of d_in d_out. Attention's kernels are viewed
as matrices over their input and output features: query/key/value
(width, heads, head_dim) as (width, heads * head_dim), the output projection
(heads, head_dim, width) as (heads * head_dim, width); u and v keep those
shapes' input and output axes, (*in, r) and (r, *out).

- SVD (Eckart & Young 1936; Denton et al. 2014, Sainath et al. 2013 for
  network layers): the rank-r truncation minimises ||W - u v||_F, and its
  squared error is the sum of the discarded squared singular values.
- DRONE (Chen et al. 2021, "DRONE: Data-aware Low-rank Compression for Large
  NLP Models"): minimises the layer's output error ||X W - X u v||_F over
  calibration inputs X instead. With C = X^T X = S^2 (S its symmetric square
  root), ||X A||_F = ||S A||_F, so the best rank-r product is S^+ [S W]_r
  ([.]_r the truncated SVD): the columns of [S W]_r lie in S's range, where
  S S^+ is the identity. It reads C from the calibration statistics
  (`compression.calibration`, "xtx"); with C the identity it is the SVD.

The rank of each layer is given one of four ways: `rank` (every selected
layer), `ratio` (each layer's factors hold that fraction of its dense
parameters), `energy` (each layer keeps the smallest rank whose squared
singular values reach that fraction of its total: of W's for SVD, of S W's
for DRONE, so the energy is that of the layer's outputs), or `budget` (the
selected layers together hold that fraction of their dense parameters, the
singular values taken greedily by squared value per parameter they cost).

The factors are the trainable, so a fine-tune trains them; `apply` hands
the model W = u v. The export stores the factors and names them in the model
config's `low_rank` ({module path: rank}), which the models read to run two
thin products (`experiments.models.LowRankDense`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional

import jax.numpy as jnp
import numpy as np

from compression.export import Coded
from compression.pruning_masks import kernel_io_shapes
from compression.registry import register
from compression.selection import kernel_module, leaves_by_path, nest_paths, selected_paths
from compression.transform import PARAMS, Transform, join_factors, no_update, require_statistics

METHODS = ("svd", "drone")
RANK_SETTINGS = ("rank", "ratio", "energy", "budget")
# Eigenvalues of X^T X below this fraction of the largest are taken as zero in S^+: directions
# the calibration inputs never take, on which DRONE keeps nothing.
EIGENVALUE_CUTOFF = 1e-10


def matrix_shapes(shape: tuple[int, ...], path: str = "") -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, output shape) of a dense kernel viewed as a (d_in, d_out) matrix (`kernel_io_shapes`).

    Dense (in, out); query/key/value (width, heads, head_dim), recognised by
    the path: in (width,), out (heads, head_dim); the attention output
    projection (heads, head_dim, width): in (heads, head_dim), out (width,).
    Convolution kernels and vectors are refused.
    """
    if len(tuple(shape)) not in (2, 3):
        raise ValueError(f"low_rank factorizes dense kernels (a matrix, or an attention projection); "
                         f"{path or 'a leaf'} has shape {tuple(shape)}: narrow low_rank.select to dense kernels "
                         f"(e.g. 'Dense_.*/kernel'); convolutions are factorized by depthwise-separable "
                         f"splitting, not here")
    return kernel_io_shapes(shape, path)


def as_matrix(w: Any, path: str = "") -> np.ndarray:
    """The kernel as a float64 (d_in, d_out) matrix (see `matrix_shapes`)."""
    in_shape, _ = matrix_shapes(np.shape(w), path)
    return np.asarray(w, np.float64).reshape(math.prod(in_shape), -1)


def _split(left: np.ndarray, s: np.ndarray, right: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray]:
    # The singular values split evenly between the factors (u = P sqrt(s), v = sqrt(s) R^T), so
    # neither factor's scale dwarfs the other's when a fine-tune trains both.
    root = np.sqrt(s[:rank])
    return left[:, :rank] * root, root[:, None] * right[:rank]


class Decomposition(NamedTuple):
    """The SVD a layer's ranks and factors are read from: of W (SVD), or of S W with S^+ to map back (DRONE)."""

    left: np.ndarray
    singular_values: np.ndarray
    right: np.ndarray
    back: Optional[np.ndarray] = None  # S^+ for DRONE; None for the plain SVD

    def factors(self, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """(u, v) at `rank`: the best rank-`rank` u v for this decomposition's objective."""
        u, v = _split(self.left, self.singular_values, self.right, rank)
        return (u if self.back is None else self.back @ u), v


def decompose(matrix: Any, xtx: Optional[Any] = None, dampening: float = 0.0) -> Decomposition:
    """The SVD of `matrix` (d_in, d_out), or, given X^T X, of S matrix with S^+ (DRONE's closed form)."""
    m = np.asarray(matrix, np.float64)
    back = None
    if xtx is not None:
        s_root, back = whitening(xtx, dampening)
        m = s_root @ m
    left, s, right = np.linalg.svd(m, full_matrices=False)
    return Decomposition(left, s, right, back)


def truncated_svd(matrix: Any, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Factors (u, v) of the best rank-`rank` approximation u v of `matrix` in Frobenius norm (Eckart-Young)."""
    return decompose(matrix).factors(rank)


def whitening(xtx: Any, dampening: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """(S, S^+) with S the symmetric square root of X^T X (+ dampening * its mean diagonal * I)."""
    c = np.asarray(xtx, np.float64)
    c = (c + c.T) / 2
    if dampening:
        c = c + dampening * np.mean(np.diag(c)) * np.eye(len(c))
    eigenvalues, q = np.linalg.eigh(c)
    kept = eigenvalues > EIGENVALUE_CUTOFF * max(eigenvalues.max(), 0.0)
    root = np.sqrt(np.where(kept, eigenvalues, 0.0))
    inverse_root = np.where(kept, 1.0 / np.where(kept, root, 1.0), 0.0)
    return (q * root) @ q.T, (q * inverse_root) @ q.T


def drone_factors(matrix: Any, xtx: Any, rank: int, dampening: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Factors (u, v) minimising ||X matrix - X u v||_F for X^T X = `xtx` at rank `rank` (DRONE, Chen et al. 2021)."""
    return decompose(matrix, xtx, dampening).factors(rank)


def output_error(matrix: Any, u: Any, v: Any, xtx: Optional[Any] = None) -> float:
    """||X (matrix - u v)||_F^2 from X^T X = `xtx`; without xtx, ||matrix - u v||_F^2 (X the identity)."""
    e = np.asarray(matrix, np.float64) - np.asarray(u, np.float64) @ np.asarray(v, np.float64)
    if xtx is None:
        return float(np.sum(e * e))
    return float(np.sum(e * (np.asarray(xtx, np.float64) @ e)))


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"low_rank.{name} {value!r} must be a fraction in (0, 1]")
    return float(value)


def check_rank_setting(rank: Any = None, ratio: Any = None, energy: Any = None,
                       budget: Any = None) -> tuple[str, Any]:
    """(which, value): the one rank setting given, validated; a ValueError if none or several are."""
    given = {k: v for k, v in zip(RANK_SETTINGS, (rank, ratio, energy, budget)) if v is not None}
    if len(given) != 1:
        raise ValueError(f"low_rank needs exactly one of {list(RANK_SETTINGS)}, got {sorted(given) or 'none'}")
    (which, value), = given.items()
    if which == "rank":
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"low_rank.rank {value!r} must be a positive integer")
        return which, int(value)
    return which, _check_fraction(which, value)


def choose_ranks(spectra: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, int]],
                 which: str, value: Any) -> dict[str, int]:
    """{path: rank} for each layer, from its singular values and its (d_in, d_out), by one rank setting.

    rank: that rank everywhere (above min(d_in, d_out) is refused, naming the
    layer); ratio: floor(ratio d_in d_out / (d_in + d_out)), at least 1; energy:
    the smallest r with sum_{i<=r} s_i^2 >= energy * sum s_i^2; budget: every
    layer at rank 1, then the remaining singular values in decreasing order of
    s_i^2 / (d_in + d_out) while the total stays within budget * sum d_in d_out.
    """
    ranks = {}
    if which == "rank":
        for path, (d_in, d_out) in shapes.items():
            if value > min(d_in, d_out):
                raise ValueError(f"low_rank.rank {value} exceeds min(d_in, d_out) = {min(d_in, d_out)} of {path} "
                                 f"({d_in} x {d_out}); choose rank <= {min(d_in, d_out)} or narrow low_rank.select")
            ranks[path] = value
        return ranks
    if which == "ratio":
        return {p: max(1, min(min(d), int(math.floor(value * d[0] * d[1] / (d[0] + d[1]) + 1e-9))))
                for p, d in shapes.items()}
    if which == "energy":
        for path, s in spectra.items():
            share = np.cumsum(np.square(s)) / max(float(np.sum(np.square(s))), np.finfo(np.float64).tiny)
            ranks[path] = int(min(len(s), np.searchsorted(share, value - 1e-12) + 1))
        return ranks
    allowed = value * sum(d_in * d_out for d_in, d_out in shapes.values())
    ranks = {p: 1 for p in shapes}
    used = sum(d_in + d_out for d_in, d_out in shapes.values())
    if used > allowed:
        raise ValueError(f"low_rank.budget {value} allows {allowed:.0f} parameters, fewer than rank 1 in every "
                         f"selected layer needs ({used}); raise the budget or select fewer layers")
    candidates = sorted(((float(s[i]) ** 2 / sum(shapes[p]), p) for p, s in spectra.items()
                         for i in range(1, len(s))), key=lambda c: -c[0])
    for _, path in candidates:
        cost = sum(shapes[path])
        if used + cost <= allowed:
            ranks[path] += 1
            used += cost
    return ranks


@register("low_rank")
def low_rank(select: Any = ".*kernel", *, method: str = "svd", rank: Any = None, ratio: Any = None,
             energy: Any = None, budget: Any = None, dampening: float = 0.0) -> Transform:
    """Dense kernels stored as rank-r factors {u, v} (the module docstring; Chen et al. 2021 for `drone`).

    `select` picks the kernels (dense or attention projections); `method`
    "svd" factors W, "drone" factors W for its calibration inputs (it needs
    config.compression.init_batches > 0); one of `rank`, `ratio`, `energy`,
    `budget` sets the ranks; `dampening` adds that multiple of X^T X's mean
    diagonal to it before DRONE whitens (0: the paper's closed form).

    Trainable: each selected kernel's path holds {"u", "v"}; state:
    {path: {"rank": int32}}. The export re-factors the trained W = u v at the
    same rank (exact up to float rounding: W has that rank) and names the
    factored modules in the model config's `low_rank`.
    """
    if method not in METHODS:
        raise ValueError(f"low_rank.method {method!r} is not one of {list(METHODS)}")
    which, value = check_rank_setting(rank, ratio, energy, budget)
    if isinstance(dampening, bool) or not isinstance(dampening, (int, float)) or dampening < 0:
        raise ValueError(f"low_rank.dampening {dampening!r} must be a number >= 0")

    def init(params, key=None, batches=None):
        del key
        paths = selected_paths(params, select, what="low_rank.select")
        flat = dict(leaves_by_path(params))
        matrices = {p: as_matrix(flat[p], p) for p in paths}
        xtx = {}
        if method == "drone":
            batches = require_statistics(batches, "low_rank (method 'drone'), which reads the layers' inputs,",
                                         " (method 'svd' needs none)")
            modules = {kernel_module(p, "low_rank.select"): p for p in paths}
            for module, stats in batches.statistics(params, list(modules), ("xtx",), one_at_a_time=True):
                xtx[modules[module]] = np.asarray(stats["xtx"], np.float64)
        # One decomposition per layer gives both its spectrum (the rank) and its factors.
        decompositions = {p: decompose(m, xtx.get(p), dampening) for p, m in matrices.items()}
        ranks = choose_ranks({p: d.singular_values for p, d in decompositions.items()},
                             {p: m.shape for p, m in matrices.items()}, which, value)
        state = {}
        for p, d in decompositions.items():
            r = ranks[p]
            u, v = d.factors(r)
            in_shape, out_shape = matrix_shapes(np.shape(flat[p]), p)
            dtype = flat[p].dtype
            flat[p + "/u"] = jnp.asarray(u.reshape(in_shape + (r,)), dtype)
            flat[p + "/v"] = jnp.asarray(v.reshape((r,) + out_shape), dtype)
            del flat[p]
            state[p] = {"rank": jnp.asarray(r, jnp.int32)}
        return {PARAMS: nest_paths(flat)}, state

    def apply(trainable, state):
        return join_factors(trainable[PARAMS], state, ("u", "v"), lambda u, v: jnp.tensordot(u, v, axes=1))

    def export(params, state, model_config):
        flat = dict(leaves_by_path(params))
        config = dict(model_config)
        factored = dict(config.get("low_rank") or {})
        for p, st in state.items():
            w = flat.pop(p)
            if isinstance(w, Coded):
                raise ValueError(f"{p} is encoded by an earlier stage ({w.codec}) and cannot be stored as factors; "
                                 f"quantize the factors instead (put the quantize stage before low_rank)")
            in_shape, out_shape = matrix_shapes(np.shape(w), p)
            # An earlier structural export (fewer units) may leave W smaller than the rank; its
            # rank is then at most min(d_in, d_out), so the factors stay exact.
            r = min(int(np.asarray(st["rank"])), math.prod(in_shape), math.prod(out_shape))
            u, v = truncated_svd(as_matrix(w, p), r)
            module = kernel_module(p, "low_rank.select")
            flat[module + "/u"] = u.reshape(in_shape + (r,)).astype(np.float32)
            flat[module + "/v"] = v.reshape((r,) + out_shape).astype(np.float32)
            factored[module] = r
        config["low_rank"] = dict(sorted(factored.items()))
        return nest_paths(flat), config

    return Transform(init, apply, no_update, export=export, name="low_rank")
