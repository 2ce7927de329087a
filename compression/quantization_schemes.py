"""Weight quantization schemes: one small frozen dataclass per scheme, found by name.

`quantize` (compression/quantization.py) owns what every scheme shares:
selection, bit-widths (one, per-layer rules or a mixed-precision
allocation), per-channel statistics, recalibration during training, the
learned scales' place in the trainable and the export. A scheme owns its
settings (its dataclass fields, checked when it is built) and the
arithmetic of one weight tensor, written with `compression.quantizers`:

    fixed_bits                         the width it always uses (binary 1, ternary 2), or None
    per_channel                        its statistics' default when `quantize.per_channel` is unset:
                                       True (per output channel) except TWN's per-layer ternary
    learned_names                      the arrays it learns per weight (LSQ: step; TTQ: positive, negative),
                                       kept in the trainable and mirrored into the state every step
    clips_weights                      whether `project` clips the float shadow weights to [-1, 1]
    check_bits(bits, where)            refuses a bit-width it cannot use (ValueError naming `where`)
    grid(bits) -> (qmin, qmax)         its integer grid
    initial_learned(w, bits, axis)     {name: array} for each of learned_names (None when it learns nothing)
    calibrate(w, bits, learned, axis)  the state of one weight: arrays only; a scheme that reads
                                       `bits` again when it recalibrates keeps it in the state as
                                       "bits" (it is passed None otherwise)
    forward(w, state, learned)         the fake-quantized weight, with its straight-through gradient
    encode(values, state)              the export of the quantized values: a `Coded` leaf for the
                                       `packed` codec (integer codes and scales, or a codebook), or
                                       the values themselves for the codec the export config names

`axis` is the channel axis per-channel statistics keep, or None (per
tensor). Registering a class with `@register_scheme(name)` makes it a
config value, `quantize(scheme=name, **its settings)`, as qwix's rules are
small dataclasses carrying their own fields; a new scheme is a new class,
not an edit of `quantize`.

The schemes here (Jacob et al. 2018 uniform affine; fixed point Qm.n; LSQ,
Esser et al. 2019; BinaryConnect, Courbariaux et al. 2015, and BWN,
Rastegari et al. 2016; TWN, Li et al. 2016; TTQ, Zhu et al. 2017) are
described in `compression.quantizers`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence, Union

import jax.numpy as jnp
import numpy as np

from compression import quantizers as qz
from compression.export import Coded
from compression.registries import Registry
from compression.settings import require_float



@dataclasses.dataclass(frozen=True)
class Scheme:
    """The base scheme (no settings); subclasses are frozen dataclasses overriding the methods they need."""

    # Class attributes, not settings (no annotation: not dataclass fields).
    name = "scheme"  # set by register_scheme
    fixed_bits = None  # Optional[int]
    learned_names = ()  # tuple[str, ...]
    per_channel = True  # statistics per output channel unless quantize.per_channel says otherwise

    @property
    def clips_weights(self) -> bool:
        return False

    def check_bits(self, bits: int, where: str) -> None:
        del bits, where

    def grid(self, bits):
        return qz.integer_grid(bits, True)

    def initial_learned(self, w, bits, axis: Optional[int]) -> Optional[dict]:
        del w, bits, axis
        return None

    def calibrate(self, w, bits, learned: Optional[Mapping[str, Any]], axis: Optional[int]) -> dict:
        raise NotImplementedError(f"scheme {self.name!r} does not define calibrate")

    def forward(self, w, state: Mapping[str, Any], learned: Optional[Mapping[str, Any]]):
        raise NotImplementedError(f"scheme {self.name!r} does not define forward")

    def encode(self, values: np.ndarray, state: Mapping[str, np.ndarray]) -> Any:
        del state
        return values


SCHEMES = Registry("quantization scheme", base=Scheme)
# Class decorator registering a `Scheme` subclass under a name.
register_scheme = SCHEMES.register


def schemes() -> list[str]:
    """The registered scheme names, sorted."""
    return SCHEMES.names()


def _settings_of(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def make_scheme(scheme: Union[str, Scheme], settings: Mapping[str, Any],
                ignore_unused: Sequence[str] = ()) -> Scheme:
    """The scheme registered as `scheme` built with `settings` (its own fields), or the instance given.

    A setting the scheme has no field for is a ValueError naming the scheme,
    the setting and the schemes that take it, except those in
    `ignore_unused`: each of these is checked by building the first scheme
    that takes it, then dropped.
    """
    settings = dict(settings)
    if isinstance(scheme, Scheme):
        if settings:
            raise ValueError(f"quantize: scheme {scheme!r} is given built; set {sorted(settings)} on it, "
                             f"not beside it")
        return scheme
    if scheme not in SCHEMES:
        raise ValueError(f"quantize.scheme {scheme!r} is not one of the registered schemes {schemes()}")
    cls = SCHEMES[scheme]
    own = _settings_of(cls)
    for key in [k for k in settings if k not in own]:
        takers = [n for n, c in sorted(SCHEMES.items()) if key in _settings_of(c)]
        if key in ignore_unused and takers:
            SCHEMES[takers[0]](**{key: settings.pop(key)})
    unused = sorted(k for k in settings if k not in own)
    if unused:
        where = "; ".join(f"{k} is a setting of {[n for n, c in sorted(SCHEMES.items()) if k in _settings_of(c)]}"
                          for k in unused)
        raise ValueError(f"quantize: scheme {scheme!r} does not use the setting(s) {unused} ({where}); "
                         f"its own settings are {own}")
    return cls(**settings)


# ------------------------------------------------------------------ shared pieces

def _stat_shape(w, axis) -> tuple[int, ...]:
    axes = qz.reduce_axes(np.ndim(w), axis)
    return tuple(1 if i in axes else d for i, d in enumerate(np.shape(w)))


def _affine_state(bits, qmin, qmax, scale, zero_point) -> dict:
    return {"bits": jnp.asarray(bits, jnp.int32), "qmin": qmin, "qmax": qmax, "scale": scale,
            "zero_point": zero_point}


def _check_symmetric_bits(symmetric: bool, bits: int, where: str) -> None:
    if symmetric and bits < 2:
        raise ValueError(f"{where}: symmetric uniform quantization needs at least 2 bits; for 1 bit "
                         f"use scheme='binary', or symmetric=False")


def affine_coded(values: np.ndarray, s: Mapping[str, np.ndarray]) -> Coded:
    """The packed export of an affine-quantized weight: integer codes at its bit-width, scales, zero points."""
    q = np.round(values.astype(np.float64) / s["scale"]) + s["zero_point"]
    codes = (q - s["qmin"]).astype(np.int64)
    return Coded(values, "packed", {"codes": codes, "bits": int(s["bits"]), "scale": s["scale"],
                                    "zero_point": s["zero_point"], "qmin": float(s["qmin"])})


def ternary_coded(values: np.ndarray, s: Mapping[str, np.ndarray]) -> Coded:
    """The packed export of a ternary weight: 2-bit codes into the codebook [-negative, 0, positive]."""
    codes = np.where(values > 0, 2, np.where(values < 0, 0, 1))
    codebook = np.stack(np.broadcast_arrays(-s["negative"], np.zeros_like(s["positive"]), s["positive"]), -1)
    return Coded(values, "packed", {"codes": codes, "bits": 2, "codebook": codebook})


def binary_coded(values: np.ndarray, s: Mapping[str, np.ndarray]) -> Coded:
    """The packed export of a binary weight: 1-bit codes into the codebook [-scale, scale]."""
    codes = (values > 0).astype(np.int64)
    return Coded(values, "packed", {"codes": codes, "bits": 1, "codebook": np.stack([-s["scale"], s["scale"]], -1)})


# ------------------------------------------------------------------ the schemes

class _AffineFakeQuant(Scheme):
    """The forward pass and export shared by the affine schemes with a straight-through `ste` field."""

    def forward(self, w, state, learned):
        return qz.fake_quantize(w, state["scale"], state["zero_point"], state["qmin"], state["qmax"], self.ste)

    def encode(self, values, state):
        return affine_coded(values, state)


@register_scheme("uniform")
@dataclasses.dataclass(frozen=True)
class Uniform(_AffineFakeQuant):
    """b-bit affine: symmetric (narrow signed grid, zero point 0) or asymmetric; min-max, percentile or MSE ranges."""

    symmetric: bool = True
    calibration: str = "minmax"
    percentile: float = 99.99
    mse_grid: int = 100
    ste: str = "clipped"

    def __post_init__(self):
        qz.check_ste(self.ste, "quantize.ste")
        if self.calibration not in qz.CALIBRATIONS:
            raise ValueError(f"quantize.calibration {self.calibration!r} is not one of {list(qz.CALIBRATIONS)}")
        qz.check_percentile(self.percentile, "quantize.percentile")
        qz.check_mse_grid(self.mse_grid, "quantize.mse_grid")

    def check_bits(self, bits, where):
        _check_symmetric_bits(self.symmetric, bits, where)

    def grid(self, bits):
        return qz.integer_grid(bits, self.symmetric)

    def calibrate(self, w, bits, learned, axis):
        qmin, qmax = self.grid(bits)
        lo, hi = qz.calibrated_range(w, self.calibration, qmin, qmax, self.symmetric, axis, self.percentile,
                                     self.mse_grid)
        scale, zero_point = qz.affine_from_range(lo, hi, qmin, qmax, self.symmetric)
        return _affine_state(bits, qmin, qmax, scale, zero_point)


@register_scheme("fixed_point")
@dataclasses.dataclass(frozen=True)
class FixedPoint(_AffineFakeQuant):
    """Qm.n: a sign bit, m = integer_bits and n = fraction_bits, scale 2^-n (1 + m + n = bits)."""

    integer_bits: Optional[int] = None
    fraction_bits: Optional[int] = None
    ste: str = "clipped"

    def __post_init__(self):
        qz.check_ste(self.ste, "quantize.ste")
        if self.integer_bits is None or self.fraction_bits is None:
            qz.fixed_point_bits(self.integer_bits, self.fraction_bits, 0, "quantize (scheme='fixed_point')")

    def check_bits(self, bits, where):
        qz.fixed_point_bits(self.integer_bits, self.fraction_bits, bits, f"{where} (scheme='fixed_point')")

    def grid(self, bits):
        return qz.fixed_point_grid(bits)

    def calibrate(self, w, bits, learned, axis):
        qmin, qmax = self.grid(bits)
        scale = jnp.full(_stat_shape(w, None), 2.0 ** -self.fraction_bits, jnp.float32)
        return _affine_state(bits, qmin, qmax, scale, jnp.zeros_like(scale))


@register_scheme("lsq")
@dataclasses.dataclass(frozen=True)
class LSQ(Scheme):
    """Learned step size (Esser et al. 2019): the step of a signed grid, trained from 2 mean|w| / sqrt(Qp)."""

    learned_names = ("step",)
    symmetric: bool = True

    def __post_init__(self):
        if not self.symmetric:
            raise ValueError("quantize: scheme='lsq' learns one step on a signed grid with zero point 0; "
                             "symmetric=False would clip every negative weight to 0 (use symmetric=True)")

    def check_bits(self, bits, where):
        _check_symmetric_bits(self.symmetric, bits, where)

    def grid(self, bits):
        return qz.integer_grid(bits, self.symmetric)

    def initial_learned(self, w, bits, axis):
        return {"step": qz.lsq_initial_step(w, self.grid(bits)[1], axis)}

    def calibrate(self, w, bits, learned, axis):
        qmin, qmax = self.grid(bits)
        scale = jnp.maximum(jnp.abs(learned["step"]), 1e-8)
        return _affine_state(bits, qmin, qmax, scale, jnp.zeros_like(scale))

    def forward(self, w, state, learned):
        return qz.lsq_quantize(w, learned["step"], state["qmin"], state["qmax"])

    def encode(self, values, state):
        return affine_coded(values, state)


@register_scheme("binary")
@dataclasses.dataclass(frozen=True)
class Binary(Scheme):
    """sign(w) times 1 (BinaryConnect: binary_scale='none', shadow weights clipped to [-1, 1]) or times
    mean|w| per output channel (BWN: binary_scale='mean')."""

    fixed_bits = 1
    binary_scale: str = "mean"
    ste: str = "clipped"

    def __post_init__(self):
        qz.check_ste(self.ste, "quantize.ste")
        if self.binary_scale not in ("mean", "none"):
            raise ValueError(f"quantize.binary_scale {self.binary_scale!r} is not 'mean' (BWN) or "
                             f"'none' (BinaryConnect)")

    @property
    def clips_weights(self) -> bool:
        return self.binary_scale == "none"

    def calibrate(self, w, bits, learned, axis):
        if self.binary_scale == "mean":
            return {"scale": qz.bwn_scale(w, axis)}
        return {"scale": jnp.ones(_stat_shape(w, None), jnp.float32)}

    def forward(self, w, state, learned):
        return qz.binarize(w, state["scale"], self.ste)

    def encode(self, values, state):
        return binary_coded(values, state)


def _check_threshold(threshold, high=None, fix: str = "") -> None:
    # A NaN threshold compares False with every weight: nothing would be told apart from zero.
    require_float("quantize.threshold", threshold, low=0, high=high, high_open=True, fix=fix)


@register_scheme("ternary")
@dataclasses.dataclass(frozen=True)
class Ternary(Scheme):
    """TWN (Li et al. 2016): threshold delta = threshold * mean|w|, alpha the mean |w| above it.

    Per layer by default, as the paper computes delta and alpha over a whole
    layer's weights (quantize.per_channel=True asks for them per output channel).
    """

    fixed_bits = 2
    per_channel = False  # Li et al. 2016: one delta and one alpha per layer
    threshold: float = 0.7

    def __post_init__(self):
        # Any finite factor >= 0 (0: every weight is +-alpha); how large is too large depends on the weights.
        _check_threshold(self.threshold, fix="TWN's threshold is threshold * mean|w| (Li et al. 2016: 0.7)")

    def calibrate(self, w, bits, learned, axis):
        delta, alpha = qz.twn_threshold_and_scale(w, self.threshold, axis)
        return {"delta": delta, "positive": alpha, "negative": alpha}

    def forward(self, w, state, learned):
        return qz.ternarize(w, state["delta"], state["positive"], state["negative"])

    def encode(self, values, state):
        return ternary_coded(values, state)


@register_scheme("ttq")
@dataclasses.dataclass(frozen=True)
class TTQ(Scheme):
    """Trained ternary quantization (Zhu et al. 2017): threshold * max|w|, learned positive and negative scales."""

    fixed_bits = 2
    learned_names = ("positive", "negative")
    threshold: float = 0.05

    def __post_init__(self):
        # threshold * max|w| >= max|w| would set every weight to 0, so the factor stays below 1.
        _check_threshold(self.threshold, high=1,
                         fix="TTQ's threshold is threshold * max|w| (Zhu et al. 2017: 0.05); 1 or more would set "
                             "every weight to 0")

    def initial_learned(self, w, bits, axis):
        delta = qz.ttq_threshold(w, self.threshold, axis)
        axes = qz.reduce_axes(w.ndim, axis)
        pos, neg = w > delta, w < -delta
        mean_of = lambda m: jnp.sum(jnp.where(m, jnp.abs(w), 0), axes, keepdims=True) / jnp.maximum(
            jnp.sum(m, axes, keepdims=True), 1)
        return {"positive": mean_of(pos).astype(jnp.float32), "negative": mean_of(neg).astype(jnp.float32)}

    def calibrate(self, w, bits, learned, axis):
        return {"delta": qz.ttq_threshold(w, self.threshold, axis), "positive": learned["positive"],
                "negative": learned["negative"]}

    def forward(self, w, state, learned):
        return qz.ternarize(w, state["delta"], learned["positive"], learned["negative"], True)

    def encode(self, values, state):
        return ternary_coded(values, state)
