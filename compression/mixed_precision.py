"""Mixed precision: how much each layer suffers from fewer bits, and bits that meet a size budget.

`layer_sensitivity` quantizes one layer at a time to each candidate width
and measures the increase of the training loss on a few batches, with every
other layer in full precision (the per-layer analysis behind HAWQ, Dong et
al. 2019, measured directly instead of through the Hessian).
`allocate_bits` then picks one width per layer that minimizes the summed
sensitivity subject to sum(size * bits) <= budget * sum(size): a
multiple-choice knapsack, solved greedily by repeatedly taking the step
down in bits that costs the least sensitivity per bit saved.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from compression.selection import path_str


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

    Starts every path at its widest candidate and, while over budget, lowers
    the path whose next narrower width adds the least sensitivity per bit
    saved. Raises if even the narrowest widths exceed the budget.
    """
    if not sensitivity:
        return {}
    widths = {p: sorted(int(b) for b in s) for p, s in sensitivity.items()}
    total = sum(sizes[p] for p in sensitivity)
    budget = budget_bits_per_weight * total
    narrowest = sum(sizes[p] * widths[p][0] for p in sensitivity)
    if narrowest > budget + 1e-9:
        raise ValueError(f"a budget of {budget_bits_per_weight} bits per weight cannot be met: the narrowest "
                         f"candidates give {narrowest / total:.3f}; add narrower candidate_bits or raise the budget")
    choice = {p: len(widths[p]) - 1 for p in sensitivity}
    used = sum(sizes[p] * widths[p][choice[p]] for p in sensitivity)
    while used > budget + 1e-9:
        best, best_cost = None, None
        for p, i in choice.items():
            if i == 0:
                continue
            hi, lo = widths[p][i], widths[p][i - 1]
            cost = (sensitivity[p][lo] - sensitivity[p][hi]) / (sizes[p] * (hi - lo))
            if best_cost is None or cost < best_cost:
                best, best_cost = p, cost
        hi, lo = widths[best][choice[best]], widths[best][choice[best] - 1]
        used -= sizes[best] * (hi - lo)
        choice[best] -= 1
    return {p: widths[p][i] for p, i in choice.items()}
