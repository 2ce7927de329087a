"""Weight quantization as a transform: trainable = float shadow weights (+ learned scales), state = ranges.

    apply(W, state)  = Q(W; state)      fake-quantized with a straight-through gradient
    update(W, state) = recalibrate the ranges from the updated W (every
                       `recalibrate_every` steps; learned scales are mirrored into
                       the state every step, so the export can read them)

Schemes (the arithmetic is in `compression.quantizers`):

- `uniform`: b-bit affine, symmetric (narrow signed grid) or asymmetric,
  per tensor or per output channel; ranges by min-max, percentile or
  MSE-optimal clipping. As post-training quantization (PTQ) the ranges are
  calibrated once at init (train.num_steps = 0); as quantization-aware
  training (QAT) they follow the weights.
- `fixed_point`: Qm.n, a sign bit plus m integer and n fraction bits, scale 2^-n.
- `lsq`: learned step size (Esser et al. 2019), the step in the trainable.
- `binary`: sign(w) times 1 (BinaryConnect, Courbariaux et al. 2015, with
  the shadow weights clipped to [-1, 1] after each step) or times mean|w|
  per output channel (BWN, Rastegari et al. 2016).
- `ternary`: TWN (Li et al. 2016), threshold 0.7 mean|w| and alpha the mean
  |w| above it.
- `ttq`: trained ternary quantization (Zhu et al. 2017), learned positive
  and negative scales in the trainable, threshold 0.05 max|w|.

`bits` is one int, a list of (path regex, bits) rules (first match wins), or
'auto': a mixed-precision allocation that meets `budget_bits_per_weight`
from each layer's measured sensitivity (`compression.mixed_precision`; needs
init batches). Bit-widths are arrays in the state, so they never recompile.
Learned scales live in the trainable's `scales` entry (nested by weight
path), beside `params`, so a chain keeps them under this stage's name and
a transform chained before this one (pruning, say) still finds each weight
at its own path. `encode` hands each quantized weight to the `packed` codec
with its integer codes and scales; BinaryConnect's clip is `project`.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from compression import mixed_precision, quantizers as qz
from compression.export import Coded
from compression.registry import register
from compression.selection import Selector, leaves_by_path, map_at_paths, match_rules, nest_paths, selected_paths
from compression.transform import PARAMS, Transform

SCHEMES = ("uniform", "fixed_point", "lsq", "binary", "ternary", "ttq")
LEARNED = "scales"  # the trainable's entry for learned scales (LSQ's step, TTQ's positive/negative)
_LEARNED_NAMES = {"lsq": ("step",), "ttq": ("positive", "negative")}
_FIXED_BITS = {"binary": 1, "ternary": 2, "ttq": 2}
_DEFAULT_THRESHOLD = {"ternary": 0.7, "ttq": 0.05}


def learned_scales(trainable: Mapping[str, Any], paths, scheme: str) -> dict:
    """{weight path: {name: learned array}} of a quantize trainable (empty for schemes that learn nothing)."""
    names = _LEARNED_NAMES.get(scheme, ())
    if not names:
        return {}
    flat = leaves_by_path(trainable.get(LEARNED, {}))
    return {p: {k: flat[f"{p}/{k}"] for k in names} for p in paths}


def _check_settings(scheme, bits, ste, calibration, percentile, symmetric, recalibrate_every):
    if scheme not in SCHEMES:
        raise ValueError(f"quantize.scheme {scheme!r} is not one of {list(SCHEMES)}")
    qz.check_ste(ste, "quantize.ste")
    if calibration not in qz.CALIBRATIONS:
        raise ValueError(f"quantize.calibration {calibration!r} is not one of {list(qz.CALIBRATIONS)}")
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"quantize.percentile {percentile} must be in (50, 100]")
    if recalibrate_every < 0:
        raise ValueError(f"quantize.recalibrate_every {recalibrate_every} must be >= 0 (0: only at init)")
    if scheme in _FIXED_BITS and bits not in (None, _FIXED_BITS[scheme]):
        raise ValueError(f"quantize.scheme {scheme!r} uses {_FIXED_BITS[scheme]} bit(s); got bits={bits!r} "
                         f"(leave bits unset, or use scheme 'uniform' for other widths)")


@register("quantize")
def quantize(select: Selector = ".*kernel", scheme: str = "uniform",
             bits: Union[None, int, str, Sequence[Sequence[Any]]] = None, *,
             symmetric: bool = True, per_channel: bool = True, channel_axis: int = -1,
             calibration: str = "minmax", percentile: float = 99.99, mse_grid: int = 100,
             recalibrate_every: int = 1, integer_bits: Optional[int] = None,
             fraction_bits: Optional[int] = None, ste: str = "clipped", threshold: Optional[float] = None,
             binary_scale: str = "mean", clip_weights: Optional[bool] = None,
             budget_bits_per_weight: Optional[float] = None,
             candidate_bits: Sequence[int] = (8, 6, 4, 3, 2)) -> Transform:
    """Quantization of the leaves `select` matches; see the module docstring for the schemes."""
    bits = _FIXED_BITS.get(scheme, 8) if bits is None else bits
    _check_settings(scheme, bits, ste, calibration, percentile, symmetric, recalibrate_every)
    _bit_values(bits)  # an int 1-16, (regex, bits) rules or 'auto'; any other string is an error here, not at init
    if scheme in ("uniform", "lsq") and symmetric and not isinstance(bits, str):
        for b in _bit_values(bits):
            if b < 2:
                raise ValueError("quantize: symmetric uniform quantization needs at least 2 bits; for 1 bit "
                                 "use scheme='binary', or symmetric=False")
    if scheme == "lsq" and not symmetric:
        raise ValueError("quantize: scheme='lsq' learns one step on a signed grid with zero point 0; "
                         "symmetric=False would clip every negative weight to 0 (use symmetric=True)")
    if scheme == "fixed_point":
        for b in _bit_values(bits):
            qz.fixed_point_bits(integer_bits, fraction_bits, b, "quantize (scheme='fixed_point')")
    if binary_scale not in ("mean", "none"):
        raise ValueError(f"quantize.binary_scale {binary_scale!r} is not 'mean' (BWN) or 'none' (BinaryConnect)")
    if bits == "auto" and budget_bits_per_weight is None:
        raise ValueError("quantize.bits='auto' needs budget_bits_per_weight (the average bits a weight may use)")
    for b in candidate_bits:
        qz.check_bits(b, "quantize.candidate_bits")
        if bits == "auto" and scheme in ("uniform", "lsq") and symmetric and b < 2:
            raise ValueError(f"quantize.candidate_bits {tuple(candidate_bits)}: symmetric uniform quantization "
                             f"needs at least 2 bits; drop the 1-bit candidate or use symmetric=False")
    axis = channel_axis if per_channel else None
    threshold = _DEFAULT_THRESHOLD.get(scheme) if threshold is None else threshold
    clip = (scheme == "binary" and binary_scale == "none") if clip_weights is None else clip_weights
    grid_symmetric = symmetric if scheme in ("uniform", "lsq") else True

    def grid(b):
        return qz.fixed_point_grid(b) if scheme == "fixed_point" else qz.integer_grid(b, grid_symmetric)

    def calibrate(w, b, learned):
        """The state of one leaf computed from its current weights (and learned scales)."""
        if scheme in ("uniform", "fixed_point", "lsq"):
            qmin, qmax = grid(b)
            if scheme == "uniform":
                lo, hi = qz.calibrated_range(w, calibration, qmin, qmax, grid_symmetric, axis, percentile, mse_grid)
                scale, zero_point = qz.affine_from_range(lo, hi, qmin, qmax, grid_symmetric)
            elif scheme == "fixed_point":
                scale = jnp.full(_stat_shape(w, None), 2.0 ** -fraction_bits, jnp.float32)
                zero_point = jnp.zeros_like(scale)
            else:
                scale = jnp.maximum(jnp.abs(learned["step"]), 1e-8)
                zero_point = jnp.zeros_like(scale)
            return {"bits": jnp.asarray(b, jnp.int32), "qmin": qmin, "qmax": qmax, "scale": scale,
                    "zero_point": zero_point}
        if scheme == "binary":
            scale = qz.bwn_scale(w, axis) if binary_scale == "mean" else jnp.ones(_stat_shape(w, None), jnp.float32)
            return {"scale": scale}
        if scheme == "ternary":
            delta, alpha = qz.twn_threshold_and_scale(w, threshold, axis)
            return {"delta": delta, "positive": alpha, "negative": alpha}
        return {"delta": qz.ttq_threshold(w, threshold, axis), "positive": learned["positive"],
                "negative": learned["negative"]}

    def forward(w, s, learned):
        if scheme in ("uniform", "fixed_point"):
            return qz.fake_quantize(w, s["scale"], s["zero_point"], s["qmin"], s["qmax"], ste)
        if scheme == "lsq":
            return qz.lsq_quantize(w, learned["step"], s["qmin"], s["qmax"])
        if scheme == "binary":
            return qz.binarize(w, s["scale"], ste)
        if scheme == "ternary":
            return qz.ternarize(w, s["delta"], s["positive"], s["negative"])
        return qz.ternarize(w, s["delta"], learned["positive"], learned["negative"], True)

    def initial_learned(w, b):
        if scheme == "lsq":
            return {"step": qz.lsq_initial_step(w, grid(b)[1], axis)}
        if scheme == "ttq":
            delta = qz.ttq_threshold(w, threshold, axis)
            axes = qz.reduce_axes(w.ndim, axis)
            pos, neg = w > delta, w < -delta
            mean_of = lambda m: jnp.sum(jnp.where(m, jnp.abs(w), 0), axes, keepdims=True) / jnp.maximum(
                jnp.sum(m, axes, keepdims=True), 1)
            return {"positive": mean_of(pos).astype(jnp.float32), "negative": mean_of(neg).astype(jnp.float32)}
        return None

    def init(params, key=None, batches=None):
        del key
        paths = selected_paths(params, select, what="quantize.select")
        leaves = leaves_by_path(params)
        for p in paths:
            if np.ndim(leaves[p]) == 0:
                raise ValueError(f"quantize.select matched the scalar {p}; select weight tensors")
        if bits == "auto":
            if batches is None:
                raise ValueError("quantize.bits='auto' measures each layer's sensitivity on training batches: "
                                 "set compression.init_batches > 0")
            per_path = _auto_bits(params, paths, batches, candidate_bits, budget_bits_per_weight,
                                  lambda w, b: forward(w, calibrate(w, b, initial_learned(w, b)),
                                                       initial_learned(w, b)))
        else:
            per_path = _bits_per_path(params, paths, bits)
        learned = {p: initial_learned(leaves[p], per_path[p]) for p in paths}
        learned = {p: v for p, v in learned.items() if v is not None}
        state = {p: calibrate(leaves[p], per_path[p], learned.get(p)) for p in paths}
        trainable = {PARAMS: params}
        if learned:
            trainable[LEARNED] = nest_paths({f"{p}/{k}": v for p, d in learned.items() for k, v in d.items()})
        return trainable, state

    def apply(trainable, state):
        learned = learned_scales(trainable, state, scheme)
        return map_at_paths(lambda p, w: forward(w, state[p], learned.get(p)), trainable[PARAMS], state,
                            what="quantize")

    def project(trainable, state):
        if not clip:
            return trainable
        # BinaryConnect keeps the real-valued weights in [-1, 1], where the sign's STE passes gradient.
        params = map_at_paths(lambda p, w: jnp.clip(w, -1.0, 1.0), trainable[PARAMS], state, what="quantize")
        return dict(trainable, **{PARAMS: params})

    def update(trainable, state, grads, step):
        del grads
        trainable = project(trainable, state)
        if recalibrate_every == 0 and scheme not in ("lsq", "ttq"):
            return trainable, state
        learned = learned_scales(trainable, state, scheme)
        flat = leaves_by_path(trainable[PARAMS])
        fresh = {p: calibrate(flat[p], s["bits"] if "bits" in s else None, learned.get(p)) for p, s in state.items()}
        # Learned scales are mirrored every step: the export reads them from the state.
        if scheme in ("lsq", "ttq") or recalibrate_every == 1:
            return trainable, fresh
        due = jnp.equal(jnp.mod(step, recalibrate_every), 0)
        return trainable, jax.tree_util.tree_map(lambda new, old: jnp.where(due, new, old), fresh, state)

    def encode(params, state):
        return map_at_paths(lambda p, w: _coded(np.asarray(w, np.float32), jax.tree_util.tree_map(np.asarray, state[p])),
                            params, state, what="quantize")

    return Transform(init, apply, update, project, encode=encode, name="quantize")


def _bit_values(bits) -> list[int]:
    if isinstance(bits, str):
        if bits != "auto":
            raise ValueError(f"quantize.bits {bits!r}: use an integer 1-16, a list of (regex, bits) rules, or 'auto'")
        return []
    if isinstance(bits, (list, tuple)):
        return [qz.check_bits(rule[1], f"quantize.bits rule {tuple(rule)}") for rule in bits]
    return [qz.check_bits(bits, "quantize.bits")]


def _bits_per_path(params, paths, bits) -> dict[str, int]:
    if isinstance(bits, (list, tuple)):
        leaves = leaves_by_path(params)
        chosen = match_rules(nest_paths({p: leaves[p] for p in paths}), [tuple(r) for r in bits],
                             what="quantize.bits")
        return {p: int(b) for p, b in leaves_by_path(chosen).items()}
    return {p: int(bits) for p in paths}


def _auto_bits(params, paths, batches, candidates, budget, quantize_leaf) -> dict[str, int]:
    leaves = leaves_by_path(params)
    sensitivity = mixed_precision.layer_sensitivity(params, paths, candidates, quantize_leaf, batches)
    sizes = {p: int(np.size(leaves[p])) for p in paths}
    return mixed_precision.allocate_bits(sensitivity, sizes, budget)


def _stat_shape(w, axis) -> tuple[int, ...]:
    axes = qz.reduce_axes(np.ndim(w), axis)
    return tuple(1 if i in axes else d for i, d in enumerate(np.shape(w)))


def _coded(values: np.ndarray, s: Mapping[str, np.ndarray]) -> Coded:
    """The packed export of one quantized leaf: its integer codes and its scales or codebook."""
    if "qmin" in s:
        q = np.round(values.astype(np.float64) / s["scale"]) + s["zero_point"]
        codes = (q - s["qmin"]).astype(np.int64)
        return Coded(values, "packed", {"codes": codes, "bits": int(s["bits"]), "scale": s["scale"],
                                        "zero_point": s["zero_point"], "qmin": float(s["qmin"])})
    if "delta" in s:
        codes = np.where(values > 0, 2, np.where(values < 0, 0, 1))
        codebook = np.stack(np.broadcast_arrays(-s["negative"], np.zeros_like(s["positive"]), s["positive"]), -1)
        return Coded(values, "packed", {"codes": codes, "bits": 2, "codebook": codebook})
    codes = (values > 0).astype(np.int64)
    return Coded(values, "packed", {"codes": codes, "bits": 1, "codebook": np.stack([-s["scale"], s["scale"]], -1)})
