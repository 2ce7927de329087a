"""The arithmetic of quantization: integer grids, ranges, and straight-through gradients.

Pure jnp functions of arrays; bit-widths, scales and zero points may be
traced, so a schedule or a mixed-precision allocation never recompiles.
Every quantizer's forward value is written as `dequantize(q, scale, zp) =
(q - zp) * scale` (or a codebook lookup for binary/ternary), the same
arithmetic the packed export decodes with, so a loaded export equals the
fake-quantized weights bit for bit.

- Uniform affine quantization (Jacob et al. 2018): symmetric signed on the
  narrow grid [-(2^(b-1) - 1), 2^(b-1) - 1] with zero point 0, or asymmetric
  unsigned [0, 2^b - 1] with an integer zero point; per tensor or per channel.
  Its scale, zero point and codes divide with `true_divide` (correctly
  rounded, eager or jitted, whatever the shapes), so a channel's codes per
  channel are its codes per tensor taken alone, exact half steps included.
- Fixed point Qm.n: a sign bit, m integer and n fraction bits, scale 2^-n.
- Straight-through estimators (Bengio et al. 2013): the gradient of the
  rounding is the identity inside the clipping range and zero outside
  (`clipped`), or the identity everywhere (`identity`).
- LSQ (Esser et al. 2019): a learned step size with gradient
  round(x/s) - x/s inside the range and the bound outside, scaled by
  1/sqrt(N * Qp).
- PACT (Choi et al. 2018): activations clipped to a learned alpha, then
  quantized to 2^b - 1 steps of alpha; d/d(alpha) is 1 where x >= alpha.
- Binary (Courbariaux et al. 2015 BinaryConnect; Rastegari et al. 2016 BWN):
  sign(w) times a scale (1, or mean |w| per output channel).
- Ternary (Li et al. 2016 TWN: threshold 0.7 mean|w|, alpha the mean of the
  |w| above it; Zhu et al. 2017 TTQ: threshold t max|w|, learned positive
  and negative scales).
- Calibration of ranges: min-max, percentile, and the MSE-optimal clipping
  (a grid search over clipping fractions of the min-max range).
"""
from __future__ import annotations

import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from compression.settings import require_float, require_int

MIN_BITS, MAX_BITS = 1, 16
STES = ("clipped", "identity")


def check_bits(bits, where: str) -> int:
    """`bits` as an int, or a ValueError naming `where` and the allowed values."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{where}: bit-width {bits!r} is not allowed; use an integer from "
                         f"{MIN_BITS} to {MAX_BITS}")
    return int(bits)


def check_ste(ste: str, where: str) -> str:
    """`ste` if it names a straight-through estimator, else a ValueError listing them."""
    if ste not in STES:
        raise ValueError(f"{where}: straight-through estimator {ste!r} is not one of {list(STES)}")
    return ste


def check_percentile(percentile, where: str) -> float:
    """`percentile` as a float in (50, 100], else a ValueError naming `where` (the setting).

    The calibrated range runs from the (100 - p)-th to the p-th percentile, so
    p <= 50 would give an empty or inverted range; p = 100 is the min-max range.
    """
    return require_float(where, percentile, low=50, high=100, low_open=True,
                         fix="the range runs from the (100 - p)-th to the p-th percentile (100: min-max)")


def check_mse_grid(grid, where: str) -> int:
    """`grid` (the clipping fractions k/grid the MSE search tries) as an int >= 1, else a ValueError."""
    return require_int(where, grid, low=1, fix="the MSE search tries the clipping fractions k/grid, k = 1..grid")


def fixed_point_bits(integer_bits: int, fraction_bits: int, bits: int, where: str) -> int:
    """Checks that Qm.n with a sign bit fills `bits` (1 + m + n = bits); returns n."""
    if integer_bits is None or fraction_bits is None:
        raise ValueError(f"{where}: fixed point needs integer_bits and fraction_bits "
                         f"(Qm.n with 1 + m + n = bits)")
    # Integers first (1.5 bits is no format); the sum check below names a negative count.
    require_int(f"{where}: integer_bits", integer_bits)
    require_int(f"{where}: fraction_bits", fraction_bits)
    if integer_bits < 0 or fraction_bits < 0 or 1 + integer_bits + fraction_bits != bits:
        raise ValueError(f"{where}: fixed-point format Q{integer_bits}.{fraction_bits} does not add up "
                         f"to {bits} bits: a sign bit + {integer_bits} integer + {fraction_bits} fraction "
                         f"bits = {1 + integer_bits + fraction_bits}; choose m + n = {bits - 1}")
    return int(fraction_bits)


def power_of_two(exponent):
    """2^exponent as an exact float32 (jnp.exp2 is off by ulps on some backends; the grid must be integers)."""
    return jnp.round(jnp.exp2(jnp.asarray(exponent, jnp.float32)))


def integer_grid(bits, symmetric: bool):
    """(qmin, qmax) as float arrays: narrow signed grid when symmetric, else unsigned [0, 2^b - 1]."""
    if symmetric:
        qmax = power_of_two(jnp.asarray(bits, jnp.float32) - 1) - 1
        return -qmax, qmax
    qmax = power_of_two(bits) - 1
    return jnp.zeros_like(qmax), qmax


def fixed_point_grid(bits):
    """(qmin, qmax) of a signed two's-complement integer of `bits` bits."""
    half = power_of_two(jnp.asarray(bits, jnp.float32) - 1)
    return -half, half - 1


def reduce_axes(ndim: int, channel_axis: Optional[int]) -> tuple[int, ...]:
    """The axes a per-tensor (channel_axis None) or per-channel statistic reduces over."""
    if channel_axis is None:
        return tuple(range(ndim))
    keep = channel_axis % ndim
    return tuple(a for a in range(ndim) if a != keep)


def true_divide(a, b):
    """a / b elementwise, correctly rounded (one IEEE division) eagerly and under jit alike.

    XLA's algebraic simplifier rewrites a division by a broadcast value,
    A / broadcast(B), as A * broadcast(1 / B): two roundings, one ulp off
    the quotient for some values (float32 6 / 7 is 0x3F5B6DB7, 6 * (1 / 7)
    0x3F5B6DB8). Whether the divisor needs a broadcast depends on the shapes
    (a per-channel scale (1, c) against a scalar grid width, a per-tensor
    (1, 1) scale against an (in, out) kernel) and on what jit fuses, so the
    same column could get a scale one ulp apart per tensor and per channel,
    and an exact half step (3 / (6/7) = 3.5) then rounds to different zero
    points and codes. Here the divisor is broadcast to the result's shape
    behind an optimization barrier, which the simplifier does not look
    through: every call divides, whatever the shapes, eager or jitted.
    """
    a, b = jnp.asarray(a), jnp.asarray(b)
    shape = jnp.broadcast_shapes(jnp.shape(a), jnp.shape(b))
    dtype = jnp.result_type(a, b)
    b = jax.lax.optimization_barrier(jnp.broadcast_to(b.astype(dtype), shape))
    return jnp.broadcast_to(a.astype(dtype), shape) / b


def affine_from_range(lo, hi, qmin, qmax, symmetric: bool):
    """(scale, zero_point) mapping [lo, hi] onto the integer grid [qmin, qmax].

    Symmetric: scale = max(|lo|, |hi|) / qmax, zero point 0. Asymmetric: the
    range is widened to contain 0 (so zero is exact) and the zero point is
    the rounded integer that 0 maps to, round(qmin - lo / scale) (half to
    even). A zero range gets scale 1. Both divisions are `true_divide`s, so
    a channel's scale and zero point per channel equal its per-tensor ones.
    """
    if symmetric:
        scale = true_divide(jnp.maximum(jnp.abs(lo), jnp.abs(hi)), qmax)
        zero_point = jnp.zeros_like(scale)
    else:
        lo, hi = jnp.minimum(lo, 0.0), jnp.maximum(hi, 0.0)
        scale = true_divide(hi - lo, qmax - qmin)
        safe = jnp.where(scale > 0, scale, 1.0)
        zero_point = jnp.clip(jnp.round(qmin - true_divide(lo, safe)), qmin, qmax)
    scale = jnp.where(scale > 0, scale, 1.0)
    return scale.astype(jnp.float32), zero_point.astype(jnp.float32)


def quantize_codes(x, scale, zero_point, qmin, qmax):
    """The integer codes (as floats) of x: clip(round(x / scale) + zero_point, qmin, qmax).

    x / scale is a `true_divide`: a per-tensor scale broadcast over the
    whole kernel and a per-channel one broadcast down its rows divide alike.
    """
    return jnp.clip(jnp.round(true_divide(x, scale)) + zero_point, qmin, qmax)


def dequantize(q, scale, zero_point):
    """Real values of integer codes: (q - zero_point) * scale (the arithmetic the export decodes with)."""
    return (q - zero_point) * scale


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def fake_quantize(x, scale, zero_point, qmin, qmax, ste: str = "clipped"):
    """dequantize(quantize_codes(x)) with a straight-through gradient for x (none for the range).

    ste='clipped': dx = g where x lies inside [(qmin - zp) s, (qmax - zp) s],
    0 outside; ste='identity': dx = g.
    """
    return dequantize(quantize_codes(x, scale, zero_point, qmin, qmax), scale, zero_point)


def _fake_quantize_fwd(x, scale, zero_point, qmin, qmax, ste):
    out = fake_quantize(x, scale, zero_point, qmin, qmax, ste)
    return out, (x, scale, zero_point, qmin, qmax)


def _fake_quantize_bwd(ste, residual, g):
    x, scale, zero_point, qmin, qmax = residual
    if ste == "clipped":
        inside = (x >= (qmin - zero_point) * scale) & (x <= (qmax - zero_point) * scale)
        dx = jnp.where(inside, g, 0.0)
    else:
        dx = g
    zeros = lambda a: jnp.zeros_like(a)
    return dx, zeros(scale), zeros(zero_point), zeros(qmin), zeros(qmax)


fake_quantize.defvjp(_fake_quantize_fwd, _fake_quantize_bwd)


@jax.custom_vjp
def round_ste(x):
    """round(x) whose gradient is the identity (the straight-through estimator of rounding)."""
    return jnp.round(x)


round_ste.defvjp(lambda x: (jnp.round(x), None), lambda _, g: (g,))


@jax.custom_vjp
def scale_gradient(x, factor):
    """x in the forward pass; the gradient multiplied by `factor` (LSQ's step-size gradient scale)."""
    return x


scale_gradient.defvjp(lambda x, factor: (x, factor), lambda factor, g: (g * factor, jnp.zeros_like(factor)))


def lsq_quantize(x, step, qmin, qmax):
    """LSQ (Esser et al. 2019): round(clip(x / s, qmin, qmax)) * s with a learned step s.

    The step's gradient is scaled by 1 / sqrt(N * qmax) (N = x.size, as the
    paper does for weights and per-layer activations); x's gradient is the
    identity inside the clipping range and 0 outside.
    """
    step = jnp.maximum(jnp.abs(step), 1e-8)
    factor = 1.0 / jnp.sqrt(x.size * jnp.maximum(qmax, 1.0))
    step = scale_gradient(step, factor)
    v = x / step
    # where, not clip: at v == qmax exactly the gradient is the inside one, not split in half.
    v = jnp.where(v > qmax, qmax, jnp.where(v < qmin, qmin, v))
    return dequantize(round_ste(v), step, 0.0)


def lsq_initial_step(x, qmax, channel_axis: Optional[int] = None):
    """LSQ's initial step 2 mean|x| / sqrt(qmax) (per channel when channel_axis is given)."""
    mean_abs = jnp.mean(jnp.abs(x), axis=reduce_axes(jnp.ndim(x), channel_axis), keepdims=True)
    return (2.0 * mean_abs / jnp.sqrt(qmax)).astype(jnp.float32)


@jax.custom_vjp
def _round_to_scale(y, scale):
    return jnp.round(y / scale) * scale


_round_to_scale.defvjp(lambda y, scale: (_round_to_scale(y, scale), scale),
                       lambda scale, g: (g, jnp.zeros_like(scale)))


def pact_quantize(x, alpha, bits):
    """PACT (Choi et al. 2018): clip x to [0, alpha], quantize to 2^b - 1 steps of alpha.

    d/dx is 1 on [0, alpha) and 0 elsewhere; d/d(alpha) is 1 where x >= alpha
    (the rounding is straight-through and contributes no alpha gradient).
    """
    alpha = jnp.maximum(alpha, 1e-8)
    # where, not min/max (which split the gradient at ties): d/d(alpha) = 1 on x >= alpha, d/dx = 1 on [0, alpha).
    y = jnp.where(x >= alpha, alpha, jnp.where(x < 0, jnp.zeros_like(x), x))
    return _round_to_scale(y, alpha / (power_of_two(bits) - 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def binarize(w, scale, ste: str = "clipped"):
    """scale * sign(w) with sign(0) = +1 (BinaryConnect / BWN); dw = g on |w| <= 1 ('clipped') or g."""
    return jnp.where(w >= 0, scale, -scale)


def _binarize_fwd(w, scale, ste):
    return binarize(w, scale, ste), (w, scale)


def _binarize_bwd(ste, residual, g):
    w, scale = residual
    dw = jnp.where(jnp.abs(w) <= 1.0, g, 0.0) if ste == "clipped" else g
    return dw, jnp.zeros_like(scale)


binarize.defvjp(_binarize_fwd, _binarize_bwd)


def _sum_to(g, shape):
    """Sums g over the axes a value of `shape` was broadcast along (numpy rules: aligned from the right)."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    g = jnp.sum(g, axis=tuple(range(lead))) if lead > 0 else g
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return jnp.sum(g, axis=axes, keepdims=True).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def ternarize(w, delta, positive, negative, scaled: bool = False):
    """positive where w > delta, -negative where w < -delta, 0 between (TWN, TTQ).

    Gradients as TTQ (Zhu et al. 2017): d(positive) sums g over the positive
    set, d(negative) is minus the sum over the negative set. dw is the
    straight-through identity (TWN), or with scaled=True TTQ's
    positive * g / g / negative * g on the positive / zero / negative sets.
    """
    return jnp.where(w > delta, positive, jnp.where(w < -delta, -negative, jnp.zeros_like(w)))


def _ternarize_fwd(w, delta, positive, negative, scaled):
    return ternarize(w, delta, positive, negative, scaled), (w, delta, positive, negative)


def _ternarize_bwd(scaled, residual, g):
    w, delta, positive, negative = residual
    d_pos = _sum_to(jnp.where(w > delta, g, 0.0), jnp.shape(positive))
    d_neg = _sum_to(jnp.where(w < -delta, -g, 0.0), jnp.shape(negative))
    dw = jnp.where(w > delta, positive * g, jnp.where(w < -delta, negative * g, g)) if scaled else g
    return dw, jnp.zeros_like(delta), d_pos, d_neg


ternarize.defvjp(_ternarize_fwd, _ternarize_bwd)


def twn_threshold_and_scale(w, factor: float = 0.7, channel_axis: Optional[int] = None):
    """TWN (Li et al. 2016): delta = factor * mean|w|, alpha = mean of |w| over |w| > delta."""
    axes = reduce_axes(jnp.ndim(w), channel_axis)
    delta = factor * jnp.mean(jnp.abs(w), axis=axes, keepdims=True)
    above = jnp.abs(w) > delta
    count = jnp.sum(above, axis=axes, keepdims=True)
    alpha = jnp.sum(jnp.where(above, jnp.abs(w), 0.0), axis=axes, keepdims=True) / jnp.maximum(count, 1)
    return delta.astype(jnp.float32), alpha.astype(jnp.float32)


def ttq_threshold(w, factor: float = 0.05, channel_axis: Optional[int] = None):
    """TTQ (Zhu et al. 2017): delta = factor * max|w|."""
    axes = reduce_axes(jnp.ndim(w), channel_axis)
    return (factor * jnp.max(jnp.abs(w), axis=axes, keepdims=True)).astype(jnp.float32)


def bwn_scale(w, channel_axis: Optional[int] = -1):
    """BWN (Rastegari et al. 2016): alpha = mean|w| per output channel (or per tensor)."""
    return jnp.mean(jnp.abs(w), axis=reduce_axes(jnp.ndim(w), channel_axis), keepdims=True).astype(jnp.float32)


# ------------------------------------------------------------ calibration


CALIBRATIONS = ("minmax", "percentile", "mse")


def minmax_range(x, channel_axis: Optional[int] = None):
    """(min, max) of x, per tensor or per channel (keepdims)."""
    axes = reduce_axes(jnp.ndim(x), channel_axis)
    return jnp.min(x, axis=axes, keepdims=True), jnp.max(x, axis=axes, keepdims=True)


def percentile_range(x, percentile: float, channel_axis: Optional[int] = None):
    """(the (100 - p)-th, the p-th percentile) of x: clips the outliers min-max would keep."""
    axes = reduce_axes(jnp.ndim(x), channel_axis)
    lo = jnp.percentile(x, 100.0 - percentile, axis=axes, keepdims=True)
    hi = jnp.percentile(x, percentile, axis=axes, keepdims=True)
    return lo, hi


def mse_range(x, qmin, qmax, symmetric: bool, channel_axis: Optional[int] = None, grid: int = 100):
    """The clipping of the min-max range, among fractions k/grid, that minimizes ||x - Q(x)||^2.

    Searched per channel when channel_axis is given (as TensorRT's and
    AIMET's MSE calibrators do per tensor).
    """
    axes = reduce_axes(jnp.ndim(x), channel_axis)
    lo, hi = minmax_range(x, channel_axis)

    def error(fraction):
        scale, zp = affine_from_range(lo * fraction, hi * fraction, qmin, qmax, symmetric)
        q = dequantize(quantize_codes(x, scale, zp, qmin, qmax), scale, zp)
        return jnp.sum((x - q) ** 2, axis=axes, keepdims=True)

    def step(best, fraction):
        best_error, best_fraction = best
        e = error(fraction)
        better = e < best_error
        return (jnp.where(better, e, best_error), jnp.where(better, fraction, best_fraction)), None

    fractions = jnp.arange(1, grid + 1, dtype=jnp.float32) / grid
    start = (error(jnp.float32(1.0)), jnp.ones_like(lo))
    (_, fraction), _ = jax.lax.scan(step, start, fractions)
    return lo * fraction, hi * fraction


def calibrated_range(x, calibration: str, qmin, qmax, symmetric: bool, channel_axis: Optional[int] = None,
                     percentile: float = 99.99, grid: int = 100):
    """(lo, hi) of x by `calibration` ('minmax', 'percentile' or 'mse')."""
    if calibration == "minmax":
        return minmax_range(x, channel_axis)
    if calibration == "percentile":
        return percentile_range(x, percentile, channel_axis)
    if calibration == "mse":
        return mse_range(x, qmin, qmax, symmetric, channel_axis, grid)
    raise ValueError(f"calibration {calibration!r} is not one of {list(CALIBRATIONS)}")
