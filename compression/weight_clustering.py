"""k-means weight sharing (Deep Compression, Han, Mao & Dally 2016): each layer's weights share 2^b values.

Each selected kernel's weights are clustered into k = 2^b centroids by
one-dimensional k-means (Lloyd's iterations) from a linear initialisation,
the centroids spaced evenly between the layer's smallest and largest weight,
which the paper found best (it keeps the rare large weights, which matter
most, their own centroids). Each weight then stores only its b-bit cluster
index; the layer stores the k centroids once.

Fine-tuning keeps the assignments and trains the centroids: the model sees
W = centroids[assignments], so the gradient of a centroid is the sum of the
gradients of the weights assigned to it (the paper's Figure 3), which is
what autodiff of the gather gives. Weights that are exactly zero (pruned by
an earlier run, the paper's pipeline) belong to no cluster and stay zero;
`keep_zeros=False` clusters them with the rest.

The trainable holds the centroids under "centroids" ({path: float32[k]}) in
place of the kernels; the state holds the assignments ({path: {"assignments":
int32, -1 where a pruned weight stays zero}}). The export writes each kernel
with the `packed` codec's codebook form (b-bit codes and the k centroids; the
pruned positions as a bitmap or relative indices where that is smaller), and
`huffman=True` entropy-codes the codes and the indices (`compression.huffman`).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from compression.export import Coded
from compression.registry import register
from compression.selection import leaves_by_path, nest_paths, selected_paths
from compression.transform import PARAMS, Transform, no_update

CENTROIDS = "centroids"
MAX_BITS = 8


def check_bits(bits: Any) -> int:
    """`bits` as an int in [1, MAX_BITS], or a ValueError naming the setting."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"cluster.bits {bits!r} must be an integer from 1 to {MAX_BITS} (2^bits centroids per layer)")
    return int(bits)


def linear_centroids(values: np.ndarray, k: int) -> np.ndarray:
    """k centroids spaced evenly over [min, max] of `values` (Han et al. 2016's linear initialisation)."""
    values = np.asarray(values, np.float64)
    return np.linspace(values.min(), values.max(), k)


def nearest(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The index of each value's nearest centroid (a value halfway between two goes to the smaller centroid).

    On the sorted centroids, the nearest one is found by bisecting the
    midpoints between neighbours: O(n log k) time and O(n) memory, where a
    distance matrix would take n x k (hundreds of MB for a large layer at
    8 bits).
    """
    values = np.asarray(values, np.float64).reshape(-1)
    centroids = np.asarray(centroids, np.float64)
    order = np.argsort(centroids, kind="stable")
    ranked = centroids[order]
    return order[np.searchsorted((ranked[1:] + ranked[:-1]) / 2, values, side="left")]


def kmeans_1d(values: Any, k: int, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """(centroids float64[k], assignments int[n]) of Lloyd's k-means on scalars from a linear initialisation.

    Stops early when the assignments no longer change. A cluster left empty
    keeps its centroid (it costs nothing and keeps 2^b entries in the
    codebook).
    """
    values = np.asarray(values, np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("k-means needs at least one value to cluster")
    centroids = linear_centroids(values, k)
    assignments = nearest(values, centroids)
    for _ in range(iterations):
        sums = np.bincount(assignments, weights=values, minlength=k)
        counts = np.bincount(assignments, minlength=k)
        centroids = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        new = nearest(values, centroids)
        if np.array_equal(new, assignments):
            break
        assignments = new
    return centroids, assignments


@register("cluster")
def cluster(select: Any = ".*kernel", *, bits: Any = 4, iterations: int = 30, keep_zeros: bool = True,
            huffman: bool = False) -> Transform:
    """Weight sharing by k-means (Han et al. 2016): 2^bits centroids per selected kernel (module docstring)."""
    bits = check_bits(bits)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise ValueError(f"cluster.iterations {iterations!r} must be an integer >= 0 (Lloyd iterations)")
    k = 2 ** bits

    def init(params, key=None, batches=None):
        del key, batches
        paths = selected_paths(params, select, what="cluster.select")
        flat = dict(leaves_by_path(params))
        centroids, state = {}, {}
        for p in paths:
            w = np.asarray(flat.pop(p), np.float64)
            clustered = (w != 0) if keep_zeros else np.ones(w.shape, bool)
            if not clustered.any():
                raise ValueError(f"cluster: every weight of {p} is zero (pruned), so there is nothing to cluster; "
                                 f"narrow cluster.select")
            c, a = kmeans_1d(w[clustered], k, iterations)
            assignments = np.full(w.shape, -1, np.int32)
            assignments[clustered] = a
            centroids[p] = jnp.asarray(c, jnp.float32)
            state[p] = {"assignments": jnp.asarray(assignments)}
        return {PARAMS: nest_paths(flat), CENTROIDS: centroids}, state

    def apply(trainable, state):
        flat = dict(leaves_by_path(trainable[PARAMS]))
        for p, st in state.items():
            a = st["assignments"]
            flat[p] = jnp.where(a >= 0, trainable[CENTROIDS][p][jnp.maximum(a, 0)], 0.0)
        return nest_paths(flat)

    def encode(params, state):
        flat = dict(leaves_by_path(params))
        for p, st in state.items():
            w = np.asarray(flat[p], np.float32)
            a = np.asarray(st["assignments"])
            centroids = _codebook(w, a, k)
            flat[p] = Coded(w, "packed", {"codes": np.maximum(a, 0).astype(np.uint32), "bits": bits,
                                          "codebook": centroids, "huffman": huffman})
        return nest_paths(flat)

    return Transform(init, apply, no_update, encode=encode, name="cluster")


def _codebook(w: np.ndarray, assignments: np.ndarray, k: int) -> np.ndarray:
    # The centroids as the model sees them, read back from W = centroids[assignments]: the
    # export receives the effective params, and a cluster no weight uses keeps the value 0.
    codebook = np.zeros(k, np.float32)
    used = assignments >= 0
    codebook[assignments[used]] = w[used]
    return codebook
