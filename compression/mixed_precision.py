"""Mixed precision: how much each layer suffers from fewer bits, and bits that meet a size budget.

`layer_sensitivity` quantizes one layer at a time to each candidate width
and measures the increase of the training loss on a few batches, with every
other layer in full precision (the per-layer analysis behind HAWQ, Dong et
al. 2019, measured directly instead of through the Hessian).
`allocate_bits` then picks one width per layer that minimizes the summed
sensitivity subject to sum(size * bits) <= budget * sum(size): a
multiple-choice knapsack, solved exactly over the Pareto frontier of
(bits, sensitivity) (a greedy lowest-cost-per-bit rule overshoots: it can
drop the largest layer to 2 bits when lowering two small ones would do).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from compression.selection import path_str
from compression.settings import require_float


def layer_sensitivity(params: Any, paths: Sequence[str], candidates: Sequence[int],
                      quantize_leaf: Callable[[Any, int], Any], batches: Any) -> dict[str, dict[int, float]]:
    """{path: {bits: mean loss increase}} with only that leaf quantized by quantize_leaf(w, bits)."""
    loss = jax.jit(batches.loss_fn)

    def mean_loss(p):
        return float(np.mean([float(loss(p, batch)) for batch in batches.batches]))

    base = mean_loss(params)
    out: dict[str, dict[int, float]] = {}
    for target in paths:
        out[target] = {}
        for bits in candidates:
            swapped = jax.tree_util.tree_map_with_path(
                lambda kp, leaf: quantize_leaf(leaf, bits) if path_str(kp) == target else leaf, params)
            out[target][int(bits)] = mean_loss(swapped) - base
    return out


def allocate_bits(sensitivity: Mapping[str, Mapping[int, float]], sizes: Mapping[str, int],
                  budget_bits_per_weight: float) -> dict[str, int]:
    """One bit-width per path with sum(size * bits) <= budget * sum(size), least total sensitivity.

    Solved exactly: paths are added one at a time, keeping only the Pareto
    frontier of (bits used, summed sensitivity) over partial choices (a
    choice that uses more bits for no less sensitivity can never be part of
    the best allocation). Raises if even the narrowest widths exceed the budget,
    or if a sensitivity is not finite (a NaN loss would make the choice arbitrary).
    """
    if not sensitivity:
        return {}
    require_float("budget_bits_per_weight", budget_bits_per_weight, low=0, low_open=True)
    for p, costs in sensitivity.items():
        # A NaN compares False with everything: the knapsack would pick widths arbitrarily.
        if not costs or not all(math.isfinite(c) for c in costs.values()):
            raise ValueError(f"mixed precision: the sensitivity of {p} ({{bits: loss increase}} = {dict(costs)}) "
                             f"is empty or not finite; the loss on the init batches must be finite at every "
                             f"candidate width")
    paths = sorted(sensitivity)
    total = sum(sizes[p] for p in paths)
    budget = budget_bits_per_weight * total
    narrowest = sum(sizes[p] * min(sensitivity[p]) for p in paths)
    if narrowest > budget + 1e-9:
        raise ValueError(f"a budget of {budget_bits_per_weight} bits per weight cannot be met: the narrowest "
                         f"candidates give {narrowest / total:.3f}; add narrower candidate_bits or raise the budget")
    # Each state: (bits used, summed sensitivity, widths chosen so far).
    frontier: list[tuple[int, float, tuple[int, ...]]] = [(0, 0.0, ())]
    for i, p in enumerate(paths):
        rest_min = sum(sizes[q] * min(sensitivity[q]) for q in paths[i + 1:])
        grown = [(used + sizes[p] * int(b), sens + float(cost), chosen + (int(b),))
                 for used, sens, chosen in frontier for b, cost in sensitivity[p].items()
                 if used + sizes[p] * int(b) + rest_min <= budget + 1e-9]
        grown.sort(key=lambda state: (state[0], state[1]))
        frontier = []
        for state in grown:
            if not frontier or state[1] < frontier[-1][1]:
                frontier.append(state)
    best = min(frontier, key=lambda state: (state[1], state[0]))
    return dict(zip(paths, best[2]))
