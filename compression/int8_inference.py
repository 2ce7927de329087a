"""Integer-arithmetic inference of a dense layer: int8 operands, int32 accumulation.

Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference": with symmetric (zero point 0)
quantization r = s * q, a layer's real product is

    sum_k x_k w_kj = (s_x * s_w,j) * sum_k q_x,k q_w,kj,

so the sum can run on int8 codes with an int32 accumulator, and a single
float rescale per output (here in float32, not the paper's fixed-point
multiplier) plus the bias returns to real values. Codes use the narrow grid
[-127, 127] (`quantizers.integer_grid(8, symmetric=True)`), so a product
of two codes is at most 127^2 = 16129 and int32 holds the sum of
2^31 / 16129 > 133,000 of them: every Dense input width here is far below.

- `quantize_symmetric_int8`: int8 codes and float32 scales, per tensor or
  per channel (`axis` kept).
- `int8_matmul`: `lax.dot_general` on int8 operands with an int32 result
  (contracting the last axis of x with the first of the (in, out) kernel).
- `int8_dense`: the inference path; activations quantized per tensor with
  a dynamic scale max|x| / 127 unless one is given.
- `dequantized_dense`: the reference: the same codes and scales dequantized
  to float32 and multiplied in float32 (at HIGHEST precision, so a GPU's
  TF32 or a TPU's bfloat16 passes cannot stand in for it).

The two paths see identical codes, so they differ only by the float rounding
of the reference's accumulation and of the few float operations around it;
`agreement_tolerance` states that bound (see the comment above it).
Pure jnp functions of arrays.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from compression import quantizers as qz

# ---------------------------------------------------------------- tolerance
#
# The int8 path is exact up to its last four float operations: the int32
# accumulator a = sum_k q_x,k q_w,kj is an exact integer; converting it to
# float32, forming s = s_x * s_w and the product a * s each round once, and
# adding the bias once more. The reference rounds x_q * s_x and w_q * s_w
# (once each), each of its K products once, its K - 1 additions (in any
# order, blocked or pairwise: the standard bound gamma_(K-1), Higham 2002,
# Sec. 3.1), and the bias addition. With u = 2^-24 (float32 round to
# nearest) and S_j = s_x s_w,j sum_k |q_x,k q_w,kj| the sum of the magnitudes
# of the terms (so |y_j| <= S_j + |b_j|), to first order in u the int8 path is
# within 4 u (S_j + |b_j|) of the exact real value and the reference within
# (K + 3) u (S_j + |b_j|), so
#
#     |y_int8 - y_dequantized| <= (K + AGREEMENT_EXTRA_ROUNDINGS) * u * (S_j + |b_j|)
#
# with AGREEMENT_EXTRA_ROUNDINGS = 8: (K + 3) + 4 = K + 7 to first order, and
# one u more for the second-order terms. The bound is relative to S, not to
# |y|: when the terms cancel, |y| can be far smaller than S and a tolerance relative
# to max|y| has no guarantee. For LeNet-300-100's widest layer (K = 784)
# it is 4.7e-5 of S; observed differences are typically ~1e-7 of S, since
# the rounding errors of a sum do not all point the same way.
FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24
AGREEMENT_EXTRA_ROUNDINGS = 8


def quantize_symmetric_int8(x, axis: Optional[int] = None):
    """(codes int8, scale float32) of x on [-127, 127] with zero point 0.

    scale = max|x| / 127 over the whole tensor (axis None, a scalar-shaped
    array of x's rank) or over every axis but `axis` (per channel, keepdims,
    so the scale broadcasts against x); an all-zero tensor or channel gets
    scale 1. Codes are round-half-to-even(x / scale), clipped.
    """
    x = jnp.asarray(x, jnp.float32)
    qmin, qmax = qz.integer_grid(8, symmetric=True)
    lo, hi = qz.minmax_range(x, axis)
    scale, zero_point = qz.affine_from_range(lo, hi, qmin, qmax, symmetric=True)
    codes = qz.quantize_codes(x, scale, zero_point, qmin, qmax)
    return codes.astype(jnp.int8), scale


def _input_codes(x, x_scale=None):
    """x's per-tensor int8 codes and scalar scale: dynamic (max|x| / 127) unless x_scale is given."""
    x = jnp.asarray(x, jnp.float32)
    if x_scale is None:
        codes, scale = quantize_symmetric_int8(x)
        return codes, jnp.reshape(scale, ())
    scale = jnp.asarray(x_scale, jnp.float32)
    qmin, qmax = qz.integer_grid(8, symmetric=True)
    return qz.quantize_codes(x, scale, 0.0, qmin, qmax).astype(jnp.int8), scale


def _dense_dims(x_ndim: int):
    # Contract x's last axis with the kernel's first (Dense layout (in, out)); no batch axes.
    return (((x_ndim - 1,), (0,)), ((), ()))


def int8_matmul(x_codes, w_codes):
    """x_codes @ w_codes as int32: int8 operands, int32 accumulation (exact, no overflow for K < 133,000)."""
    x_codes, w_codes = jnp.asarray(x_codes), jnp.asarray(w_codes)
    if x_codes.dtype != jnp.int8 or w_codes.dtype != jnp.int8:
        raise TypeError(f"int8_matmul takes int8 codes; got {x_codes.dtype} and {w_codes.dtype}")
    return jax.lax.dot_general(x_codes, w_codes, _dense_dims(x_codes.ndim), preferred_element_type=jnp.int32)


def _output_scale(w_codes, w_scale):
    # A per-output-channel scale may come as (out,) or keepdims (1, out); a per-tensor one as () or (1, 1).
    w_scale = jnp.asarray(w_scale, jnp.float32)
    return jnp.reshape(w_scale, (-1,)) if w_scale.size == w_codes.shape[-1] else jnp.reshape(w_scale, ())


def _add_bias(y, bias):
    return y if bias is None else y + jnp.asarray(bias, jnp.float32)


def int8_dense(x, w_codes, w_scale, bias=None, x_scale=None):
    """A Dense layer on integer arithmetic: acc = int8(x) @ w_codes in int32, y = acc * (s_x * s_w) + bias.

    x is quantized per tensor (dynamic scale max|x| / 127 when x_scale is
    None); w_scale is per tensor or per output channel. Returns float32.
    """
    x_codes, x_scale = _input_codes(x, x_scale)
    acc = int8_matmul(x_codes, w_codes)
    return _add_bias(acc.astype(jnp.float32) * (x_scale * _output_scale(w_codes, w_scale)), bias)


def dequantized_dense(x, w_codes, w_scale, bias=None, x_scale=None):
    """The reference for `int8_dense`: the same codes dequantized to float32, multiplied in float32.

    Differs from `int8_dense` only by float rounding (`agreement_tolerance`).
    """
    x_codes, x_scale = _input_codes(x, x_scale)
    x_real = qz.dequantize(x_codes.astype(jnp.float32), x_scale, 0.0)
    w_real = qz.dequantize(jnp.asarray(w_codes).astype(jnp.float32), _output_scale(w_codes, w_scale), 0.0)
    y = jax.lax.dot_general(x_real, w_real, _dense_dims(x_real.ndim), precision=jax.lax.Precision.HIGHEST,
                            preferred_element_type=jnp.float32)
    return _add_bias(y, bias)


def agreement_tolerance(x, w_codes, w_scale, bias=None, x_scale=None):
    """The elementwise bound on |int8_dense - dequantized_dense| for these arguments (float32).

    (K + AGREEMENT_EXTRA_ROUNDINGS) * u * (s_x s_w,j sum_k |q_x,k q_w,kj| + |b_j|),
    the derivation in the comment above FLOAT32_UNIT_ROUNDOFF.
    """
    x_codes, x_scale = _input_codes(x, x_scale)
    k = w_codes.shape[0]
    magnitude = jax.lax.dot_general(jnp.abs(x_codes.astype(jnp.int32)), jnp.abs(jnp.asarray(w_codes, jnp.int32)),
                                    _dense_dims(x_codes.ndim), preferred_element_type=jnp.int32)
    terms = magnitude.astype(jnp.float32) * (x_scale * _output_scale(w_codes, w_scale))
    if bias is not None:
        terms = terms + jnp.abs(jnp.asarray(bias, jnp.float32))
    return (k + AGREEMENT_EXTRA_ROUNDINGS) * FLOAT32_UNIT_ROUNDOFF * terms
