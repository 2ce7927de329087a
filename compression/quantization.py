"""Weight quantization as a transform: trainable = float shadow weights (+ learned scales), state = ranges.

    apply(W, state)  = Q(W; state)      fake-quantized with a straight-through gradient
    update(W, state) = recalibrate the ranges from the updated W (every
                       `recalibrate_every` steps; learned scales are mirrored into
                       the state every step, so the export can read them)

Schemes (`compression.quantization_schemes`, one small dataclass each, found
by name; the arithmetic is in `compression.quantizers`):

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
  |w| above it, per layer as the paper (unless per_channel=True).
- `ttq`: trained ternary quantization (Zhu et al. 2017), learned positive
  and negative scales in the trainable, threshold 0.05 max|w|.

A new scheme registers itself with `quantization_schemes.register_scheme`.

`bits` is one int, a list of (path regex, bits) rules (first match wins), or
'auto': a mixed-precision allocation that meets `budget_bits_per_weight`
from each layer's measured sensitivity (`compression.mixed_precision`; needs
init batches). Bit-widths are arrays in the state, so they never recompile.
Learned scales live in the trainable's `scales` entry (nested by weight
path), beside `params`, so a chain keeps them under this stage's name and
a transform chained before this one (pruning, say) still finds each weight
at its own path. `encode` hands each quantized weight to the `packed` codec
with its integer codes and scales (the scheme's `encode`); BinaryConnect's
clip is `project` (the scheme's `clips_weights`).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from compression import mixed_precision, quantization_schemes, quantizers as qz
from compression.export import Coded
from compression.quantization_schemes import Scheme
from compression.registry import register
from compression.selection import Selector, leaves_by_path, map_at_paths, match_rules, nest_paths, selected_paths
from compression.settings import require_float, require_int
from compression.transform import PARAMS, Transform, require_batches

LEARNED = "scales"  # the trainable's entry for learned scales (LSQ's step, TTQ's positive/negative)
DEFAULT_BITS = 8  # the width of a scheme without fixed bits when `bits` is unset
# A setting the chosen scheme does not use is an error, except these: committed tests pass them to
# schemes that ignore them (tests/test_quantization.py gives the uniform scheme binary_scale='max'
# and expects binary's own error), so they are still checked by a scheme that uses them, then ignored.
ACCEPTED_UNUSED = ("binary_scale",)


def learned_scales(trainable: Mapping[str, Any], paths, scheme: Scheme) -> dict:
    """{weight path: {name: learned array}} of a quantize trainable (empty for schemes that learn nothing)."""
    names = scheme.learned_names
    if not names:
        return {}
    flat = leaves_by_path(trainable.get(LEARNED, {}))
    return {p: {k: flat[f"{p}/{k}"] for k in names} for p in paths}


@register("quantize")
def quantize(select: Selector = ".*kernel", scheme: Union[str, Scheme] = "uniform",
             bits: Union[None, int, str, Sequence[Sequence[Any]]] = None, *,
             per_channel: Optional[bool] = None, channel_axis: int = -1, recalibrate_every: int = 1,
             clip_weights: Optional[bool] = None, budget_bits_per_weight: Optional[float] = None,
             candidate_bits: Sequence[int] = (8, 6, 4, 3, 2), **settings: Any) -> Transform:
    """Quantization of the leaves `select` matches; see the module docstring for the schemes.

    `scheme` is a registered scheme's name (`quantization_schemes.schemes()`)
    or a built `quantization_schemes.Scheme`. `settings` are the scheme's own
    (its dataclass fields: uniform's symmetric, calibration, percentile,
    mse_grid and ste; fixed_point's integer_bits, fraction_bits and ste;
    lsq's symmetric; binary's binary_scale and ste; ternary's and ttq's
    threshold), handed to its constructor, which checks them; a setting
    given as None takes the scheme's default, and one the scheme does not
    use is an error naming both (except `ACCEPTED_UNUSED`). The rest is
    every scheme's: `bits` (unset: the scheme's fixed width, else
    DEFAULT_BITS), statistics per output channel (`channel_axis`) or per
    tensor (`per_channel`; unset: the scheme's default `Scheme.per_channel`,
    per output channel for every scheme but TWN's ternary, which Li et al.
    2016 compute per layer), `recalibrate_every` steps (0: only at init), `clip_weights`
    (default: the scheme's `clips_weights`), and for bits='auto' the
    `budget_bits_per_weight` and the `candidate_bits` to allocate from.

    Every setting is checked here, before any step (a scheme checks its own
    when it is built): bit-widths are integers 1-16 the scheme can use,
    `recalibrate_every` an integer >= 0, `channel_axis` an integer (in range
    for every selected weight: checked at init, where the shapes are known),
    and with bits='auto' a budget of at least min(candidate_bits), the
    narrowest allocation; a budget without bits='auto' would be ignored and
    is refused. bits='auto' needs at least one init batch (`require_batches`).
    """
    scheme = quantization_schemes.make_scheme(scheme, {k: v for k, v in settings.items() if v is not None},
                                              ignore_unused=ACCEPTED_UNUSED)
    fixed = scheme.fixed_bits
    bits = (DEFAULT_BITS if fixed is None else fixed) if bits is None else bits
    if fixed is not None and bits != fixed:
        raise ValueError(f"quantize.scheme {scheme.name!r} uses {fixed} bit(s); got bits={bits!r} "
                         f"(leave bits unset, or use scheme 'uniform' for other widths)")
    recalibrate_every = require_int("quantize.recalibrate_every", recalibrate_every, low=0,
                                    fix="the ranges are recalibrated every that many steps (0: only at init)")
    channel_axis = require_int("quantize.channel_axis", channel_axis,
                               fix="the axis of the output channels (-1 for Dense and Conv kernels)")
    # An int 1-16, (regex, bits) rules or 'auto'; any other string is an error here, not at init.
    for b in _bit_values(bits):
        scheme.check_bits(b, "quantize")
    candidate_bits = _check_auto(bits, budget_bits_per_weight, candidate_bits, scheme)
    if per_channel is not None and not isinstance(per_channel, (bool, np.bool_)):
        raise ValueError(f"quantize.per_channel must be True, False or None (the scheme's default: "
                         f"{scheme.per_channel}) (got {per_channel!r})")
    axis = channel_axis if (scheme.per_channel if per_channel is None else per_channel) else None
    clip = scheme.clips_weights if clip_weights is None else clip_weights

    def quantize_leaf(w, b):
        """One weight quantized at `b` bits with freshly calibrated (and initial learned) scales."""
        learned = scheme.initial_learned(w, b, axis)
        return scheme.forward(w, scheme.calibrate(w, b, learned, axis), learned)

    def init(params, key=None, batches=None):
        del key
        paths = selected_paths(params, select, what="quantize.select")
        leaves = leaves_by_path(params)
        for p in paths:
            if np.ndim(leaves[p]) == 0:
                raise ValueError(f"quantize.select matched the scalar {p}; select weight tensors")
            # The statistics reduce over axes modulo the rank: an axis out of range would pick another one.
            if axis is not None and not -np.ndim(leaves[p]) <= axis < np.ndim(leaves[p]):
                raise ValueError(f"quantize.channel_axis {axis} is out of range for {p} of shape "
                                 f"{np.shape(leaves[p])}; use -1 (the last axis), or per_channel=False")
        if bits == "auto":
            batches = require_batches(batches, "quantize.bits='auto', which measures each layer's sensitivity "
                                               "on training batches,")
            per_path = _auto_bits(params, paths, batches, candidate_bits, budget_bits_per_weight, quantize_leaf)
        else:
            per_path = _bits_per_path(params, paths, bits)
        learned = {p: scheme.initial_learned(leaves[p], per_path[p], axis) for p in paths}
        learned = {p: v for p, v in learned.items() if v is not None}
        state = {p: scheme.calibrate(leaves[p], per_path[p], learned.get(p), axis) for p in paths}
        trainable = {PARAMS: params}
        if learned:
            trainable[LEARNED] = nest_paths({f"{p}/{k}": v for p, d in learned.items() for k, v in d.items()})
        return trainable, state

    def apply(trainable, state):
        learned = learned_scales(trainable, state, scheme)
        return map_at_paths(lambda p, w: scheme.forward(w, state[p], learned.get(p)), trainable[PARAMS], state,
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
        if recalibrate_every == 0 and not scheme.learned_names:
            return trainable, state
        learned = learned_scales(trainable, state, scheme)
        flat = leaves_by_path(trainable[PARAMS])
        fresh = {p: scheme.calibrate(flat[p], s["bits"] if "bits" in s else None, learned.get(p), axis)
                 for p, s in state.items()}
        # Learned scales are mirrored every step: the export reads them from the state.
        if scheme.learned_names or recalibrate_every == 1:
            return trainable, fresh
        due = jnp.equal(jnp.mod(step, recalibrate_every), 0)
        return trainable, jax.tree_util.tree_map(lambda new, old: jnp.where(due, new, old), fresh, state)

    def encode(params, state):
        def encode_leaf(p, w):
            if isinstance(w, Coded):
                raise ValueError(f"{p} is already encoded by an earlier stage ({w.codec}), whose codes quantize "
                                 f"cannot re-encode; put the quantize stage before it, or select other parameters")
            return scheme.encode(np.asarray(w, np.float32), jax.tree_util.tree_map(np.asarray, state[p]))

        return map_at_paths(encode_leaf, params, state, what="quantize")

    return Transform(init, apply, update, project, encode=encode, name="quantize")


def _bit_values(bits) -> list[int]:
    if isinstance(bits, str):
        if bits != "auto":
            raise ValueError(f"quantize.bits {bits!r}: use an integer 1-16, a list of (regex, bits) rules, or 'auto'")
        return []
    if isinstance(bits, (list, tuple)):
        for rule in bits:
            if isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2:
                raise ValueError(f"quantize.bits rule {rule!r} must be a (path regex, bits) pair, "
                                 f"e.g. ('Dense_0/kernel', 4)")
        return [qz.check_bits(rule[1], f"quantize.bits rule {tuple(rule)}") for rule in bits]
    return [qz.check_bits(bits, "quantize.bits")]


def _check_auto(bits, budget, candidates, scheme: Scheme) -> tuple[int, ...]:
    """The candidate widths; for bits='auto' a budget the narrowest candidates can meet, else no budget."""
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence) or not candidates:
        raise ValueError(f"quantize.candidate_bits must be a non-empty list of bit-widths (got {candidates!r})")
    candidates = tuple(qz.check_bits(b, "quantize.candidate_bits") for b in candidates)
    if bits != "auto":
        if budget is not None:
            raise ValueError(f"quantize.budget_bits_per_weight is read only with bits='auto' (got "
                             f"{budget!r} with bits={bits!r}); set bits='auto', or leave the budget unset")
        return candidates
    if budget is None:
        raise ValueError("quantize.bits='auto' needs budget_bits_per_weight (the average bits a weight may use)")
    for b in candidates:
        scheme.check_bits(b, f"quantize.candidate_bits {candidates}")
    # Every layer at the narrowest candidate averages min(candidates) bits: a smaller budget cannot be met,
    # and is refused here rather than after the sensitivity of every layer has been measured.
    require_float("quantize.budget_bits_per_weight", budget, low=min(candidates),
                  fix=f"the narrowest of candidate_bits {candidates} gives {min(candidates)} bits per weight; "
                      f"raise the budget or add narrower candidates")
    return candidates


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

