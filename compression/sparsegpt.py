"""SparseGPT (Frantar & Alistarh 2023): one-shot pruning of a trained layer with weight reconstruction.

For a layer y = x W (Flax's kernel W is (d_in, d_out)) and calibration
inputs X, SparseGPT removes weights and updates the remaining ones so that
||X W - X W_hat||^2 stays small, as Optimal Brain Surgeon would, at the cost
of one Cholesky factorization per layer. With H = X^T X (+ dampening) and U
the upper Cholesky factor of H^-1 (H^-1 = U^T U), the input columns are
processed in order; each output's weight on input i is pruned or kept, and
its error (w - w_hat) / U_ii is spread over the inputs not yet processed
through row i of U (the OBS update restricted to the remaining inputs). The
mask is chosen adaptively, per block of `block_size` inputs (128 in the
paper), as the entries with the smallest w^2 / U_ii^2 over the block, from
the weights as updated so far; with n:m, n of every m consecutive inputs of
each output are pruned instead.

`prune_layer` is the solver on one layer: the Cholesky factor in float64 on
the host, the column loop (the cost) jitted on the default device in JAX's
default float (float32; float64 with jax_enable_x64); the
`sparsegpt` transform runs it over a model with sequential calibration (each
block solved on the inputs the already pruned blocks produce), from the
calibration statistics (`compression.calibration`, "xtx") the driver gathers.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import jax

import jax.numpy as jnp
import numpy as np

from compression.calibration import inverse_hessian_factor
from compression.one_shot import solve_kernels
from compression.pruning import keep_unpruned, zero_pruned
from compression.registry import register
from compression.selection import leaves_by_path
from compression.transform import PARAMS, Transform


def _check(sparsity: float, n: int, m: int, block_size: int) -> None:
    if n or m:
        if not (isinstance(n, int) and isinstance(m, int) and 1 <= n < m):
            raise ValueError(f"sparsegpt n:m needs integers 1 <= n < m (got n={n!r}, m={m!r})")
        if block_size % m:
            raise ValueError(f"sparsegpt.block_size {block_size} must be a multiple of m={m}")
    elif not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsegpt.sparsity {sparsity!r} must be in [0, 1)")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"sparsegpt.block_size {block_size!r} must be a positive integer")


def prune_layer(kernel: Any, xtx: Any, sparsity: float = 0.5, *, n: int = 0, m: int = 0, block_size: int = 128,
                dampening: float = 0.01,
                quantize: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
    """(updated kernel, keep mask), both (d_in, d_out): SparseGPT on one layer (module docstring).

    `sparsity` is the fraction pruned in each block (ignored with n:m, which
    prunes n of every m consecutive inputs of each output). `quantize`, if
    given, maps one input's column of kept weights (d_out,) to its quantized
    values (a jnp function: it runs inside the jitted loop; a fixed function
    object, as it is a static argument), for joint sparsification and
    quantization (the paper's Section 3.5).
    Inputs that no calibration row reached (a zero diagonal of X^T X) are
    pruned: no output can depend on them.
    """
    _check(sparsity, n, m, block_size)
    w = np.array(np.asarray(kernel, np.float64).T)  # (d_out, d_in): a row per output, a column per input
    u, dead = inverse_hessian_factor(xtx, dampening)
    w[:, dead] = 0.0
    d_in = w.shape[1]
    if (n or m) and d_in % m:
        raise ValueError(f"sparsegpt n:m prunes groups of m={m} inputs; this layer has {d_in} inputs, not a "
                         f"multiple of {m}: leave it out of sparsegpt.select")
    new, keep = _prune_columns(w, u, ~dead, sparsity=float(sparsity), n=n, m=m, block_size=block_size,
                               quantize=quantize)
    new, keep = np.asarray(new, np.float64), np.asarray(keep, bool)
    new[~keep] = 0.0
    return new.T, keep.T


def _prune_columns(w, u, alive, *, sparsity: float, n: int, m: int, block_size: int, quantize):
    """(updated weights, keep mask), both (d_out, d_in): SparseGPT's column loop on the device, one block at a
    time (`_prune_block`, jitted once per block shape), each block's errors then fed to the later ones at once."""
    dtype = jnp.result_type(float)
    w, u = jnp.asarray(w, dtype), jnp.asarray(u, dtype)
    d_in = w.shape[1]
    keeps = []
    for start in range(0, d_in, block_size):
        end = min(start + block_size, d_in)
        block, errors, block_keep = _prune_block(w[:, start:end], u[start:end, start:end], sparsity=sparsity,
                                                 n=n, m=m, quantize=quantize)
        w = w.at[:, start:end].set(block).at[:, end:].add(-errors @ u[start:end, end:])
        keeps.append(block_keep)
    keep = jnp.concatenate(keeps, axis=1) & jnp.asarray(alive)[None, :]
    return jnp.where(keep, w, 0.0), keep


@functools.partial(jax.jit, static_argnames=("sparsity", "n", "m", "quantize"))
def _prune_block(block, u_block, *, sparsity: float, n: int, m: int, quantize):
    diag = jnp.diag(u_block)
    block_keep = jnp.ones(block.shape, bool)
    if not (n or m):
        # The block's mask from the weights as updated so far: its lowest w^2 / U_ii^2.
        saliency = (block ** 2 / diag[None, :] ** 2).reshape(-1)
        lowest = jnp.argsort(saliency, stable=True)[:int(round(saliency.size * sparsity))]
        block_keep = block_keep.reshape(-1).at[lowest].set(False).reshape(block.shape)

    def column(i, carry):
        block, errors, block_keep = carry
        if n or m:
            def choose(mask):  # at a group's first input: its n lowest w^2 / U_ii^2 per output pruned
                group = jax.lax.dynamic_slice_in_dim(block, i, m, axis=1) ** 2 \
                    / jax.lax.dynamic_slice_in_dim(diag, i, m)[None, :] ** 2
                ranks = jnp.argsort(jnp.argsort(group, axis=1, stable=True), axis=1)
                return jax.lax.dynamic_update_slice_in_dim(mask, ranks >= n, i, axis=1)
            block_keep = jax.lax.cond(i % m == 0, choose, lambda mask: mask, block_keep)
        col = block[:, i]
        new = jnp.where(block_keep[:, i], col, 0.0)
        if quantize is not None:
            new = jnp.where(block_keep[:, i], quantize(new), 0.0)
        error = (col - new) / u_block[i, i]
        # Row i of the upper-triangular U is zero left of i: the update reaches columns i.. only.
        block = (block - jnp.outer(error, u_block[i])).at[:, i].set(new)
        return block, errors.at[:, i].set(error), block_keep

    return jax.lax.fori_loop(0, block.shape[1], column, (block, jnp.zeros_like(block), block_keep))


@register("sparsegpt")
def sparsegpt(select: Any = ".*kernel", sparsity: float = 0.5, *, n: int = 0, m: int = 0, block_size: int = 128,
              dampening: float = 0.01) -> Transform:
    """SparseGPT (Frantar & Alistarh 2023) on the selected kernels, one-shot, with sequential calibration.

    At init, the kernels are solved group by group
    (`one_shot.solve_kernels`): each group's X^T X is gathered over the init
    batches with the earlier groups already pruned and reconstructed, then
    `prune_layer` solves each of its kernels. Needs config.compression.init_batches > 0. The masks are
    kept in the state: `apply` and `project` hold the pruned weights at zero
    and `keep` drops their optimizer state, so a fine-tune keeps the sparsity.
    Dense and attention kernels only: a convolution's inputs are patches,
    whose statistics the driver does not gather.
    """
    _check(sparsity if not (n or m) else 0.0, n, m, block_size)

    def init(params, key=None, batches=None):
        del key

        def solve(path, matrix, xtx):
            return prune_layer(matrix, xtx, sparsity, n=n, m=m, block_size=block_size, dampening=dampening)

        solved, keeps = solve_kernels(params, select, batches, solve, technique="sparsegpt",
                                      without_data=" (prune with criterion='magnitude' needs none)")
        shapes = {p: np.shape(w) for p, w in leaves_by_path(solved).items() if p in keeps}
        return {PARAMS: solved}, {"masks": {p: jnp.asarray(k.reshape(shapes[p])) for p, k in keeps.items()}}

    def project(trainable, state):
        return dict(trainable, **{PARAMS: zero_pruned(trainable[PARAMS], state["masks"], "sparsegpt")})

    def apply(trainable, state):
        return project(trainable, state)[PARAMS]

    def update(trainable, state, grads, step):
        del grads, step
        return project(trainable, state), state

    def keep(trainable, state):
        return keep_unpruned(trainable, state["masks"], "sparsegpt")

    return Transform(init, apply, update, project, keep, name="sparsegpt")
