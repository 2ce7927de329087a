"""GPTQ (Frantar et al. 2023): one-shot quantization of a trained layer with error feedback.

For a layer y = x W (Flax's kernel W is (d_in, d_out)) and calibration
inputs X with H = X^T X (+ dampening) and U the upper Cholesky factor of
H^-1, the input columns are quantized one at a time (b-bit asymmetric
min-max codes per output, or per group of `group_size` inputs per output);
each column's error (w - q) / U_ii is fed back to the inputs not yet
quantized through row i of U, so the layer's outputs on X move as little as
the later weights can make up for (Optimal Brain Quantization). Updates are
applied lazily per block of `block_size` columns, as the paper's; with
`act_order`, columns are processed in decreasing order of H's diagonal (the
inputs with the most energy first). Group scales and zero points are fixed
from the layer's weights before any update (GPTQ's "static groups"), so a
group's columns share them in any order.

`quantize_layer` is the solver on one layer, in float64 on the host.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from compression import quantizers as qz
from compression.calibration import inverse_hessian_factor
from compression.export import Coded
from compression.one_shot import matrix_shape, solve_kernels
from compression.pruning_masks import kernel_io_shapes
from compression.registry import register
from compression.selection import map_at_paths
from compression.transform import PARAMS, Transform, no_update


def _check(bits: Any, group_size: Any, block_size: Any) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"gptq.bits {bits!r} must be an integer from 2 to 16")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 0:
        raise ValueError(f"gptq.group_size {group_size!r} must be 0 (one group per output) or a positive integer")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"gptq.block_size {block_size!r} must be a positive integer")


def _check_groups(group_size: int, d_in: int, where: str = "") -> None:
    if group_size and d_in % group_size:
        raise ValueError(f"gptq.group_size {group_size!r} must be 0 (one group) or divide the {d_in} inputs"
                         f"{where}")


def group_grid(w: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale, zero point), each (d_out, d_in): asymmetric min-max over each output's group of inputs.

    `w` is (d_out, d_in); group_size 0 means one group of every input. The
    range always holds 0 (so a zero weight stays exact), and an all-zero
    group takes [-1, 1] (GPTQ's quantizer).
    """
    d_out, d_in = w.shape
    size = group_size or d_in
    qmax = 2 ** bits - 1
    scale, zero = np.empty_like(w), np.empty_like(w)
    for start in range(0, d_in, size):
        part = w[:, start:start + size]
        lo, hi = np.minimum(part.min(axis=1), 0.0), np.maximum(part.max(axis=1), 0.0)
        flat = lo == hi
        lo, hi = np.where(flat, -1.0, lo), np.where(flat, 1.0, hi)
        s = (hi - lo) / qmax
        scale[:, start:start + size] = s[:, None]
        zero[:, start:start + size] = np.round(-lo / s)[:, None]
    return scale, zero


def quantize_layer(kernel: Any, xtx: Any, bits: int = 4, *, group_size: int = 0, act_order: bool = False,
                   block_size: int = 128, dampening: float = 0.01, error_feedback: bool = True) -> dict[str, np.ndarray]:
    """GPTQ on one layer: {"kernel": dequantized (d_in, d_out), "codes", "scale", "zero_point"} (module docstring).

    codes are uint in [0, 2^bits); scale and zero_point have the kernel's
    shape (each input's value of its group) and the kernel is
    (codes - zero_point) * scale exactly. error_feedback=False rounds every
    weight to nearest on the same grid (the paper's RTN baseline).
    """
    _check(bits, group_size, block_size)
    w = np.array(np.asarray(kernel, np.float64).T)  # (d_out, d_in)
    d_out, d_in = w.shape
    _check_groups(group_size, d_in)
    h = np.asarray(xtx, np.float64)
    dead = np.diag(h) == 0  # inputs no calibration row reached: no output depends on them
    w[:, dead] = 0.0
    kept = w != 0
    scale, zero = group_grid(w, bits, group_size)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(d_in)
    w, scale, zero, kept = w[:, order], scale[:, order], zero[:, order], kept[:, order]
    u, _ = inverse_hessian_factor(h[np.ix_(order, order)], dampening)
    qmax = 2 ** bits - 1
    codes = np.asarray(_quantize_columns(w, u, scale, zero, kept, qmax=qmax, block_size=block_size,
                                         error_feedback=error_feedback), np.float64)
    inverse = np.argsort(order)
    codes, scale, zero = codes[:, inverse], scale[:, inverse], zero[:, inverse]
    return {"kernel": ((codes - zero) * scale).T, "codes": codes.T.astype(np.uint32), "scale": scale.T,
            "zero_point": zero.T}


def _quantize_columns(w, u, scale, zero, kept, *, qmax: int, block_size: int, error_feedback: bool):
    """The codes (d_out, d_in) of GPTQ's column loop, on the device: each column rounded on its grid, its
    error fed back through row i of U to the columns not yet quantized (lazily: within a block by
    `_quantize_block`, jitted once per block shape, then to the later blocks at once)."""
    dtype = jnp.result_type(float)
    w, u, scale, zero, kept = (jnp.asarray(a, t) for a, t in ((w, dtype), (u, dtype), (scale, dtype), (zero, dtype),
                                                               (kept, bool)))
    d_in = w.shape[1]
    codes = []
    for start in range(0, d_in, block_size):
        end = min(start + block_size, d_in)
        block, errors, block_codes = _quantize_block(w[:, start:end], u[start:end, start:end], scale[:, start:end],
                                                     zero[:, start:end], kept[:, start:end], qmax=qmax,
                                                     error_feedback=error_feedback)
        w = w.at[:, end:].add(-errors @ u[start:end, end:])
        codes.append(block_codes)
    return jnp.concatenate(codes, axis=1)


@functools.partial(jax.jit, static_argnames=("qmax", "error_feedback"))
def _quantize_block(block, u_block, s, z, k, *, qmax: int, error_feedback: bool):
    def column(i, carry):
        block, errors, codes = carry
        col = block[:, i]
        code = jnp.where(k[:, i], jnp.clip(jnp.round(col / s[:, i]) + z[:, i], 0, qmax), z[:, i])
        q = (code - z[:, i]) * s[:, i]
        error = (col - q) / u_block[i, i] if error_feedback else jnp.zeros_like(q)
        # Row i of the upper-triangular U is zero left of i: the update reaches columns i.. only.
        block = (block - jnp.outer(error, u_block[i])).at[:, i].set(q)
        return block, errors.at[:, i].set(error), codes.at[:, i].set(code)

    return jax.lax.fori_loop(0, block.shape[1], column, (block, jnp.zeros_like(block), jnp.zeros_like(block)))


def _grouped(w: Any, path: str, groups: int) -> Any:
    # The kernel as (groups, inputs per group, outputs): its input axes flattened, then split into groups.
    d_in, d_out = matrix_shape(np.shape(w), path)
    return w.reshape(groups, d_in // groups, d_out)


def grouped_fake_quantize(w: Any, grid: Mapping[str, Any], path: str, ste: str = "clipped") -> Any:
    """w on its GPTQ grid: (clip(round(w / s) + z, 0, qmax) - z) * s with each group's s and z, straight-through."""
    groups = grid["scale"].shape[0]
    x = _grouped(w, path, groups)
    q = qz.fake_quantize(x, grid["scale"][:, None, :], grid["zero_point"][:, None, :], grid["qmin"], grid["qmax"],
                         ste)
    return q.reshape(np.shape(w))


def _full(a: np.ndarray, shape: tuple, path: str) -> np.ndarray:
    # A per-group (groups, outputs) array at the kernel's shape (each input's value of its group).
    d_in, _ = matrix_shape(shape, path)
    return np.repeat(np.asarray(a), d_in // a.shape[0], axis=0).reshape(shape)


@register("gptq")
def gptq(select: Any = ".*kernel", bits: int = 4, *, group_size: int = 0, act_order: bool = False,
         block_size: int = 128, dampening: float = 0.01, ste: str = "clipped",
         error_feedback: bool = True) -> Transform:
    """GPTQ (Frantar et al. 2023) on the selected kernels, one-shot, with sequential calibration.

    At init the kernels are solved layer by layer (`one_shot.solve_kernels`,
    each on the inputs the already quantized layers produce) by
    `quantize_layer`: `bits`-bit asymmetric codes per output, with one scale
    and zero point per `group_size` consecutive inputs (0: one per output),
    columns in activation order if `act_order`. The state keeps each layer's
    grid, so `apply` holds the weights on it: a fine-tune after the solve
    trains through the rounding with a straight-through gradient (`ste`, as
    the `quantize` stage's) and stays exactly quantized. The export writes the
    integer codes at `bits` bits with the scales once per group (`packed`
    codec, `row_axes`). Needs config.compression.init_batches > 0; dense and
    attention kernels only. error_feedback=False is the paper's baseline,
    round-to-nearest on the same grid (the calibration data then unused).
    """
    _check(bits, group_size, block_size)
    qz.check_ste(ste, "gptq.ste")
    for name, value in (("act_order", act_order), ("error_feedback", error_feedback)):
        if not isinstance(value, bool):
            raise ValueError(f"gptq.{name} must be True or False (got {value!r})")
    if isinstance(dampening, bool) or not isinstance(dampening, (int, float)) or not dampening >= 0:
        raise ValueError(f"gptq.dampening {dampening!r} must be a number >= 0 (the fraction of X^T X's mean "
                         f"diagonal added to it; the paper's 0.01)")
    qmax = 2 ** bits - 1

    def init(params, key=None, batches=None):
        del key

        def solve(path, matrix, xtx):
            _check_groups(group_size, matrix.shape[0], f" of {path}")
            out = quantize_layer(matrix, xtx, bits, group_size=group_size, act_order=act_order,
                                 block_size=block_size, dampening=dampening, error_feedback=error_feedback)
            size = group_size or matrix.shape[0]
            scale, zero = out["scale"][::size].astype(np.float32), out["zero_point"][::size].astype(np.float32)
            # The kernel in float32 arithmetic, as apply computes it, so the solved weights are a fixed point.
            kernel = (out["codes"].astype(np.float32) - np.repeat(zero, size, 0)) * np.repeat(scale, size, 0)
            return kernel, {"scale": jnp.asarray(scale), "zero_point": jnp.asarray(zero)}

        solved, grids = solve_kernels(params, select, batches, solve, technique="gptq",
                                      without_data=" (quantize with its min-max ranges needs none)")
        grid = lambda g: {"bits": jnp.asarray(bits, jnp.int32), "qmin": jnp.float32(0), "qmax": jnp.float32(qmax),
                          **g}
        return {PARAMS: solved}, {p: grid(g) for p, g in grids.items()}

    def apply(trainable, state):
        return map_at_paths(lambda p, w: grouped_fake_quantize(w, state[p], p, ste), trainable[PARAMS], state,
                            what="gptq")

    def encode(params, state):
        def encode_leaf(p, w):
            if isinstance(w, Coded):
                raise ValueError(f"{p} is already encoded by an earlier stage ({w.codec}), whose codes gptq cannot "
                                 f"re-encode; put the gptq stage before it, or select other parameters")
            values = np.asarray(w, np.float32)
            scale, zero = (_full(np.asarray(state[p][k]), values.shape, p) for k in ("scale", "zero_point"))
            codes = (np.round(values.astype(np.float64) / scale) + zero).astype(np.int64)
            in_axes = len(kernel_io_shapes(values.shape, p)[0])
            return Coded(values, "packed", {"codes": codes, "bits": bits, "scale": scale, "zero_point": zero,
                                            "qmin": 0.0, "row_axes": in_axes})

        return map_at_paths(encode_leaf, params, state, what="gptq")

    return Transform(init, apply, no_update, encode=encode, name="gptq")
