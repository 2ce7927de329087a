"""Activation quantization: the inputs of the selected layers fake-quantized, through input hooks.

The model is not edited: the transform adds hook params under
`params["~intercept"]` (see `compression.intercept`) for each selected
module, a module being any path that owns a `kernel` (Dense, Conv,
DenseGeneral), and the driver passes that module's input through the hook.
Quantizing the input of every matmul is what integer inference needs.

Schemes:
- `uniform`: b-bit affine (asymmetric by default: inputs after a ReLU are
  non-negative) with a per-tensor range calibrated once on the init
  batches by min-max, percentile or MSE-optimal clipping (post-training
  calibration; it stays fixed during QAT).
- `lsq`: a learned step size per layer (Esser et al. 2019), initialized
  from the calibration batches as 2 mean|x| / sqrt(Qp).
- `pact`: a learned clipping level alpha per layer (Choi et al. 2018), for
  non-negative inputs, initialized to `initial_alpha` or, given batches, to
  the calibration range's upper end.

Learned scales (alpha, step) are in the trainable's `scales` entry, nested
by module path (a chain keeps it under this stage's name), calibrated ones
in the state; `apply` merges them into the hooks it adds to the params.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import jax.numpy as jnp

from compression import quantizers as qz
from compression.intercept import INTERCEPT_KEY, register_input_hook
from compression.registry import register
from compression.selection import Selector, leaf_paths, leaves_by_path, nest_paths, selected_paths
from compression.settings import require_float
from compression.transform import PARAMS, Transform, require_statistics

LEARNED = "scales"

SCHEMES = {"uniform": "fake_quant_input", "lsq": "lsq_input", "pact": "pact_input"}

register_input_hook("fake_quant_input", lambda p, x: qz.fake_quantize(
    x, p["scale"], p["zero_point"], p["qmin"], p["qmax"], "clipped"))
register_input_hook("lsq_input", lambda p, x: qz.lsq_quantize(x, p["step"], p["qmin"], p["qmax"]))
register_input_hook("pact_input", lambda p, x: qz.pact_quantize(x, p["alpha"], p["bits"]))


def kernel_modules(params: Any) -> list[str]:
    """The paths of the modules that own a `kernel` (the layers whose inputs can be quantized)."""
    return sorted({p[:-len("/kernel")] for p in leaf_paths(params) if p.endswith("/kernel")})


@register("quantize_activations")
def quantize_activations(select: Selector = ".*", scheme: str = "uniform", bits: int = 8, *,
                         symmetric: bool = False, calibration: str = "minmax", percentile: float = 99.99,
                         mse_grid: int = 100, initial_alpha: Optional[float] = None) -> Transform:
    """Fake quantization of the inputs of the modules `select` matches (regex over module paths).

    Settings are checked here, before any step: `bits` an integer 1-16 (2 or
    more when symmetric), `percentile` in (50, 100], `mse_grid` an integer
    >= 1, and `initial_alpha` (PACT only: the other schemes would ignore it)
    a finite number > 0. Calibrating a scheme needs at least one init batch
    (`require_statistics`); PACT given `initial_alpha` needs none.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"quantize_activations.scheme {scheme!r} is not one of {sorted(SCHEMES)}")
    bits = qz.check_bits(bits, "quantize_activations.bits")
    if calibration not in qz.CALIBRATIONS:
        raise ValueError(f"quantize_activations.calibration {calibration!r} is not one of {list(qz.CALIBRATIONS)}")
    percentile = qz.check_percentile(percentile, "quantize_activations.percentile")
    mse_grid = qz.check_mse_grid(mse_grid, "quantize_activations.mse_grid")
    _check_initial_alpha(initial_alpha, scheme)
    if symmetric and bits < 2:
        raise ValueError("quantize_activations: symmetric quantization needs at least 2 bits; use symmetric=False")
    if scheme == "pact" and symmetric:
        raise ValueError("quantize_activations: PACT clips to [0, alpha]; it has no symmetric form")
    hook = SCHEMES[scheme]
    qmin, qmax = qz.integer_grid(bits, symmetric)

    def init(params, key=None, batches=None):
        del key
        modules = kernel_modules(params)
        if not modules:
            raise ValueError("quantize_activations: the model has no module with a 'kernel' parameter")
        sites = selected_paths(nest_paths({m: 0 for m in modules}), select, what="quantize_activations.select")
        needs_data = scheme != "pact" or initial_alpha is None
        if needs_data:
            require_statistics(batches, f"quantize_activations ({scheme}), which calibrates on the layers' inputs,",
                               " (PACT can instead take initial_alpha)")
        inputs = {site: stats["inputs"] for site, stats in batches.statistics(params, sites, ("inputs",)).items()} \
            if needs_data else {}
        state, learned = {}, {}
        for site in sites:
            if scheme == "uniform":
                x = jnp.asarray(inputs[site], jnp.float32)
                lo, hi = qz.calibrated_range(x, calibration, qmin, qmax, symmetric, None, percentile, mse_grid)
                scale, zero_point = qz.affine_from_range(lo, hi, qmin, qmax, symmetric)
                state[site] = {"scale": scale.reshape(()), "zero_point": zero_point.reshape(()),
                               "qmin": qmin, "qmax": qmax}
            elif scheme == "lsq":
                x = jnp.asarray(inputs[site], jnp.float32)
                learned[site] = {"step": qz.lsq_initial_step(x, qmax).reshape(())}
                state[site] = {"qmin": qmin, "qmax": qmax}
            else:
                if initial_alpha is not None:
                    alpha = jnp.float32(initial_alpha)
                else:
                    x = jnp.asarray(inputs[site], jnp.float32)
                    alpha = qz.calibrated_range(x, calibration, qmin, qmax, False, None, percentile, mse_grid)[1]
                learned[site] = {"alpha": jnp.maximum(alpha.reshape(()), 1e-3)}
                state[site] = {"bits": jnp.float32(bits)}
        trainable = {PARAMS: params}
        if learned:
            trainable[LEARNED] = nest_paths({f"{s}/{name}": v for s, d in learned.items() for name, v in d.items()})
        return trainable, state

    def apply(trainable, state):
        hooks = {}
        learned = leaves_by_path(trainable.get(LEARNED, {}))
        for site, static in state.items():
            values = dict(static)
            for name in ("step", "alpha"):
                if f"{site}/{name}" in learned:
                    values[name] = learned[f"{site}/{name}"]
            hooks[f"{site}/{hook}"] = values
        params = trainable[PARAMS]
        return dict(params, **{INTERCEPT_KEY: _merge(params.get(INTERCEPT_KEY, {}), nest_paths(hooks))})

    def update(trainable, state, grads, step):
        del grads, step
        return trainable, state

    return Transform(init, apply, update, name="quantize_activations")


def _check_initial_alpha(initial_alpha: Optional[float], scheme: str) -> None:
    """PACT's initial clipping level: unset (calibrated) or a finite number > 0, and only for PACT."""
    if initial_alpha is None:
        return
    if scheme != "pact":
        raise ValueError(f"quantize_activations.initial_alpha is read only with scheme='pact' (got "
                         f"{initial_alpha!r} with scheme={scheme!r}); leave it unset")
    # alpha <= 0 clips every input to (almost) 0: the layer would see a constant.
    require_float("quantize_activations.initial_alpha", initial_alpha, low=0, low_open=True,
                  fix="PACT clips the inputs to [0, alpha]")


def _merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict:
    """Nested dicts merged; b's leaves replace a's."""
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out
