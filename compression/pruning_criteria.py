"""Pruning criteria: what makes a weight important, one small class per criterion, found by name.

`prune` (compression/pruning.py) asks a criterion three things, all over
dicts {parameter path: array} of the selected weights:

    init_scores(weights, key, batches, params) -> scores   at init (default: zeros)
    accumulate(scores, weights, grads)         -> scores   after every optimizer step (default: unchanged)
    current(weights, scores)                   -> scores   what the masks rank when they are re-scored
                                                           (default: the stored scores)

Stored scores are float32 arrays shaped like their weights; they live in the
prune state, so a criterion that accumulates (Taylor, movement) keeps its
sums in a checkpoint. `params` is the whole parameter tree and `batches` an
`InitBatches` or None, for data-aware criteria (SNIP). A criterion is a
frozen dataclass: its fields are its settings, checked in `__post_init__`
when it is built. Registering a class with `@register_criterion(name)`
makes it a config value (`prune(criterion=name)`), as jaxpruner's
algorithms are found by name; OBD or Fisher pruning is a new class in a new
module, not an edit of `prune`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Union

import jax
import jax.numpy as jnp

from compression import pruning_masks
from compression.registries import Registry
from compression.selection import kernel_module, leaves_by_path
from compression.transform import require_batches, require_statistics

Scores = dict  # {parameter path: float32 array shaped like the weight}


@dataclasses.dataclass(frozen=True)
class Criterion:
    """The base criterion: scores fixed at zero; subclasses override the methods they need."""

    name = "criterion"  # set by register_criterion

    def init_scores(self, weights: Mapping[str, Any], key: jax.Array, batches: Optional[Any],
                    params: Any) -> Scores:
        """The scores at init, {path: float32 array of the weight's shape}."""
        del key, batches, params
        return {p: jnp.zeros(w.shape, jnp.float32) for p, w in weights.items()}

    def accumulate(self, scores: Scores, weights: Mapping[str, Any], grads: Mapping[str, Any]) -> Scores:
        """The stored scores after an optimizer step that saw `grads` ({path: gradient}) at `weights`."""
        del weights, grads
        return scores

    def current(self, weights: Mapping[str, Any], scores: Scores) -> Scores:
        """The scores the masks rank now (higher = more important) for the paths of `weights`."""
        return {p: scores[p] for p in weights}


CRITERIA = Registry("pruning criterion", base=Criterion)
# Class decorator registering a `Criterion` subclass under a name.
register_criterion = CRITERIA.register


def criteria() -> list[str]:
    """The registered criterion names, sorted."""
    return CRITERIA.names()


def make_criterion(criterion: Union[str, Criterion]) -> Criterion:
    """The criterion registered as `criterion` (built with its default settings), or the instance given."""
    if isinstance(criterion, Criterion):
        return criterion
    if criterion not in CRITERIA:
        raise ValueError(f"prune.criterion {criterion!r} is not one of the registered criteria {criteria()}")
    return CRITERIA[criterion]()


@register_criterion("magnitude")
@dataclasses.dataclass(frozen=True)
class Magnitude(Criterion):
    """|w|, re-read from the current weights (Han et al. 2015)."""

    def current(self, weights, scores):
        del scores
        return {p: pruning_masks.magnitude_scores(w) for p, w in weights.items()}


@register_criterion("random")
@dataclasses.dataclass(frozen=True)
class Random(Criterion):
    """Uniform random scores drawn once at init, the control every criterion must beat."""

    def init_scores(self, weights, key, batches, params):
        del batches, params
        # One key per weight, folded in by its rank among the sorted paths: the draws of a seed are fixed.
        return {p: pruning_masks.random_scores(jax.random.fold_in(key, i), w.shape)
                for i, (p, w) in enumerate(sorted(weights.items()))}


@register_criterion("snip")
@dataclasses.dataclass(frozen=True)
class Snip(Criterion):
    """|g * w| with g the loss gradient averaged over the init batches, fixed thereafter (Lee et al. 2019)."""

    def init_scores(self, weights, key, batches, params):
        del key
        batches = require_batches(batches, "prune with criterion='snip'")
        grads = leaves_by_path(batches.mean_gradient(params))
        return {p: jnp.abs(grads[p] * w).astype(jnp.float32) for p, w in weights.items()}


@register_criterion("taylor")
@dataclasses.dataclass(frozen=True)
class Taylor(Criterion):
    """|g * w| summed over the training steps (first-order Taylor importance, Molchanov et al. 2017)."""

    def accumulate(self, scores, weights, grads):
        return {p: s + jnp.abs(grads[p] * weights[p]) for p, s in scores.items()}


@register_criterion("movement")
@dataclasses.dataclass(frozen=True)
class Movement(Criterion):
    """-g * w summed over the training steps: weights moving away from zero score high (Sanh et al. 2020)."""

    def accumulate(self, scores, weights, grads):
        return {p: s - grads[p] * weights[p] for p, s in scores.items()}


@register_criterion("wanda")
@dataclasses.dataclass(frozen=True)
class Wanda(Criterion):
    """|W_ij| * ||X_j||_2, X_j the input feature j of the weight's layer over the init batches (Sun et al. 2024).

    Fixed at init, no weight update: Wanda ("Pruning by Weights and
    activations") prunes a trained model in one shot, each output keeping
    the same share of its inputs (use it with prune's scope='output'). The
    norms are the calibration statistic `sq_norm` of each kernel's module
    inputs (its features as `pruning_masks.kernel_io_shapes` views them).
    """

    def init_scores(self, weights, key, batches, params):
        del key
        batches = require_statistics(batches, "prune with criterion='wanda', which reads each layer's inputs,")
        modules = {kernel_module(p, "prune.select"): p for p in weights}
        scores = {}
        for module, stats in batches.statistics(params, list(modules), ("sq_norm",), one_at_a_time=True):
            p = modules[module]
            w = weights[p]
            in_shape, out_shape = pruning_masks.kernel_io_shapes(w.shape, p)
            norms = jnp.sqrt(jnp.asarray(stats["sq_norm"], jnp.float32))
            if norms.size != math.prod(in_shape):
                raise ValueError(f"prune with criterion='wanda': {module} received {norms.size} input features "
                                 f"but {p} of shape {w.shape} sums over {math.prod(in_shape)}; a convolution's "
                                 f"inputs are patches, which Wanda's statistics do not gather: leave it out of "
                                 f"prune.select")
            scores[p] = (jnp.abs(w) * norms.reshape(in_shape + (1,) * len(out_shape))).astype(jnp.float32)
        return scores
