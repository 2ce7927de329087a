"""Sparsity schedules: the target fraction of pruned weights as a function of the step.

Every constructor validates its (Python) arguments, raising a `ValueError`
that names the bad argument and value before anything is traced, and returns
`schedule(step) -> jnp.float32 scalar`. `step` may be a Python int or a traced
int32 array: a schedule is pure jnp, so calling it inside a jitted train step
with a changing step never recompiles.

A sparsity lies in [0, 1): 1.0 would prune every weight of a layer.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import jax.numpy as jnp
import numpy as np

Schedule = Callable[[Any], jnp.ndarray]


def check_sparsity(value: Any, name: str = "sparsity") -> float:
    """Returns `value` as a float, or raises a ValueError naming `name` unless 0 <= value < 1."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}") from e
    if not 0.0 <= v < 1.0:  # also rejects NaN
        raise ValueError(
            f"{name} must be in [0, 1) (1.0 would prune every weight), got {value!r}")
    return v


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def constant_sparsity(sparsity: float) -> Schedule:
    """The schedule that is `sparsity` at every step."""
    s = check_sparsity(sparsity)

    def schedule(step):
        del step
        return jnp.asarray(s, jnp.float32)

    return schedule


def one_shot_sparsity(sparsity: float, at_step: int) -> Schedule:
    """One-shot pruning: 0 before `at_step`, `sparsity` from `at_step` on."""
    s = check_sparsity(sparsity)
    at = _check_int(at_step, "at_step")
    if at < 0:
        raise ValueError(f"at_step must be >= 0, got {at_step!r}")

    def schedule(step):
        return jnp.where(jnp.asarray(step) >= at, jnp.float32(s), jnp.float32(0.0))

    return schedule


def iterative_sparsity(sparsities: Sequence[float], steps: Sequence[int]) -> Schedule:
    """Iterative prune-and-retrain stages (Han et al. 2015, "Learning both Weights
    and Connections for Efficient Neural Networks"): the sparsity is
    `sparsities[i]` from `steps[i]` on (until `steps[i+1]`), and 0 before
    `steps[0]`. `steps` must be strictly increasing and `sparsities`
    non-decreasing, with one sparsity per step.
    """
    sparsities, steps = list(sparsities), list(steps)
    if len(sparsities) != len(steps):
        raise ValueError(
            f"sparsities and steps must have the same length, got {len(sparsities)} "
            f"sparsities {sparsities!r} and {len(steps)} steps {steps!r}")
    if not steps:
        raise ValueError(
            "iterative_sparsity needs at least one stage, got empty sparsities and steps")
    values = [check_sparsity(s, f"sparsities[{i}]") for i, s in enumerate(sparsities)]
    starts = [_check_int(t, f"steps[{i}]") for i, t in enumerate(steps)]
    if starts[0] < 0:
        raise ValueError(f"steps[0] must be >= 0, got {steps[0]!r}")
    for i in range(1, len(starts)):
        if starts[i] <= starts[i - 1]:
            raise ValueError(f"steps must be strictly increasing, got steps[{i - 1}]="
                             f"{starts[i - 1]} then steps[{i}]={starts[i]} in {steps!r}")
        if values[i] < values[i - 1]:
            raise ValueError(f"sparsities must be non-decreasing, got sparsities[{i - 1}]="
                             f"{values[i - 1]} then sparsities[{i}]={values[i]} in {sparsities!r}")
    table = jnp.asarray([0.0] + values, jnp.float32)
    starts_arr = jnp.asarray(starts, jnp.int32)

    def schedule(step):
        # Number of stages that have begun by `step` indexes the table (0 -> before any).
        stage = jnp.searchsorted(starts_arr, jnp.asarray(step).astype(jnp.int32), side="right")
        return table[stage]

    return schedule


def polynomial_sparsity(final_sparsity: float, begin_step: int, end_step: int,
                        frequency: int = 1, initial_sparsity: float = 0.0,
                        power: float = 3) -> Schedule:
    """Gradual pruning (Zhu & Gupta 2017, "To prune, or not to prune: exploring
    the efficacy of pruning for model compression", eq. 1):

        s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3,
              for t in {t0, t0 + dt, ..., t0 + n * dt},

    with s_i = `initial_sparsity`, s_f = `final_sparsity`, t0 = `begin_step`,
    n * dt = `end_step` - `begin_step` and dt = `frequency`; `power`
    generalizes the exponent 3. Between updates t is quantized down to
    t0 + dt * floor((t - t0) / dt), so the value changes only every `frequency`
    steps. Before t0 the sparsity is s_i; from `end_step` on it is s_f (if
    `end_step - begin_step` is not a multiple of `frequency`, the last
    interval is shorter and s_f is reached exactly at `end_step`).
    """
    s_f = check_sparsity(final_sparsity, "final_sparsity")
    s_i = check_sparsity(initial_sparsity, "initial_sparsity")
    if s_i > s_f:
        raise ValueError(f"initial_sparsity must be <= final_sparsity (sparsity must not "
                         f"decrease), got initial_sparsity={initial_sparsity!r} > "
                         f"final_sparsity={final_sparsity!r}")
    t0 = _check_int(begin_step, "begin_step")
    t1 = _check_int(end_step, "end_step")
    dt = _check_int(frequency, "frequency")
    if t0 < 0:
        raise ValueError(f"begin_step must be >= 0, got {begin_step!r}")
    if t1 <= t0:
        raise ValueError(f"end_step must be > begin_step, got end_step={end_step!r} "
                         f"<= begin_step={begin_step!r}")
    if dt < 1:
        raise ValueError(f"frequency must be >= 1, got {frequency!r}")
    try:
        p = float(power)
    except (TypeError, ValueError) as e:
        raise ValueError(f"power must be a positive number, got {power!r}") from e
    if not (p > 0 and math.isfinite(p)):
        raise ValueError(f"power must be a positive number, got {power!r}")
    span = t1 - t0

    def schedule(step):
        t = jnp.asarray(step).astype(jnp.int32)
        elapsed = jnp.clip(t - t0, 0, span)
        elapsed = jnp.where(elapsed >= span, span, (elapsed // dt) * dt)
        remaining = 1.0 - elapsed.astype(jnp.float32) / jnp.float32(span)
        return jnp.float32(s_f) + jnp.float32(s_i - s_f) * remaining ** jnp.float32(p)

    return schedule
