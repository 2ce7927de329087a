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

from typing import Any

import numpy as np

from compression.calibration import inverse_hessian_factor


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
                   block_size: int = 128, dampening: float = 0.01) -> dict[str, np.ndarray]:
    """GPTQ on one layer: {"kernel": dequantized (d_in, d_out), "codes", "scale", "zero_point"} (module docstring).

    codes are uint in [0, 2^bits); scale and zero_point have the kernel's
    shape (each input's value of its group) and the kernel is
    (codes - zero_point) * scale exactly.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"gptq.bits {bits!r} must be an integer from 2 to 8")
    w = np.array(np.asarray(kernel, np.float64).T)  # (d_out, d_in)
    d_out, d_in = w.shape
    if not isinstance(group_size, int) or group_size < 0 or (group_size and d_in % group_size):
        raise ValueError(f"gptq.group_size {group_size!r} must be 0 (one group) or divide the {d_in} inputs")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"gptq.block_size {block_size!r} must be a positive integer")
    h = np.asarray(xtx, np.float64)
    dead = np.diag(h) == 0  # inputs no calibration row reached: no output depends on them
    w[:, dead] = 0.0
    scale, zero = group_grid(w, bits, group_size)
    order = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(d_in)
    w, scale, zero = w[:, order], scale[:, order], zero[:, order]
    u, _ = inverse_hessian_factor(h[np.ix_(order, order)], dampening)
    qmax = 2 ** bits - 1
    codes = np.zeros_like(w)
    for start in range(0, d_in, block_size):
        end = min(start + block_size, d_in)
        block, u_block = w[:, start:end].copy(), u[start:end, start:end]
        errors = np.zeros_like(block)
        for i in range(end - start):
            j = start + i
            column = block[:, i]
            code = np.clip(np.round(column / scale[:, j]) + zero[:, j], 0, qmax)
            q = (code - zero[:, j]) * scale[:, j]
            codes[:, j] = code
            error = (column - q) / u_block[i, i]
            block[:, i:] -= np.outer(error, u_block[i, i:])
            block[:, i] = q
            errors[:, i] = error
        w[:, start:end] = block
        w[:, end:] -= errors @ u[start:end, end:]
    inverse = np.argsort(order)
    codes, scale, zero = codes[:, inverse], scale[:, inverse], zero[:, inverse]
    return {"kernel": ((codes - zero) * scale).T, "codes": codes.T.astype(np.uint32), "scale": scale.T,
            "zero_point": zero.T}
