"""Structured pruning: whole neurons, filters, channels and attention heads.

Unstructured pruning (`compression.pruning`) zeroes single weights, which a
dense kernel still stores and multiplies. Structured pruning removes *units*
(a Dense neuron, a conv filter, an attention head, an FFN hidden unit), so
the export is a physically smaller dense model of the same architecture
with a smaller config (`compression.structured_export`). Whole residual
blocks are dropped by `compression.layer_drop`.

Groups
------
The units are described by *groups* (`compression.unit_groups`): plain data
naming, for one kind of unit, the slices of the parameters it removes and
those that score it, e.g. for the hidden neurons of LeNet-300-100's layer 0

    {"name": "Dense_0_neurons",
     "members": [["Dense_0/kernel", 1], ["Dense_0/bias", 0], ["Dense_1/kernel", 0]],
     "config_field": ["hidden", 0]}

Scores and masks
----------------
With `criterion="norm"` (the default) a unit's score is the L1 (`norm=1`) or
L2 (`norm=2`) norm of its slice of each `score` member, summed over the score
members (a sum of per-member norms, not the norm of their concatenation;
`pruning_masks.unit_norms`).

With `criterion="taylor_mask"` a unit's score is the first-order Taylor
importance of a mask variable xi_u on its output (Molchanov et al. 2017;
Michel et al. 2019's head importance I_h): the group's `importance` slices
are the weights xi_u would multiply, so, with L(x) the loss of one example,

    d L(x) / d xi_u  =  sum over u's importance slices of  w * d L(x) / d w     (at xi = 1)
    I_u              =  mean over the examples x of the init batches of |d L(x) / d xi_u|

taken per example (`per_example=True`, the default: the paper's E_x |dL(x)/dxi|;
an example is one row of a batch, for a language model one sequence, whose
loss is its mean token loss), or per batch (`per_example=False`: the mean
over the batches of |d L(batch) / d xi_u|, L(batch) the batch's mean loss).
The derivative is computed exactly, by multiplying the importance slices by
a vector xi = 1 and differentiating the init batches' `loss_fn` with respect
to xi (one forward and backward pass per batch, vmapped over its examples);
the model is never edited. It needs `InitBatches` (the driver passes them
when `config.compression.init_batches > 0`) and is computed at init on the
model as masked so far; the importances are kept in the state and ranked
again, unchanged, by any later re-scoring of a schedule (like SNIP's).

`normalize="layer_l2"` (global scope) divides each group's scores by their
L2 norm over its live units before the global ranking, Michel et al.'s
per-layer normalisation (after Molchanov et al. 2017, "Pruning
Convolutional Neural Networks for Resource Efficient Inference"): without it
the layers whose losses react more strongly keep more units. A group whose
scores are all zero stays zero.

`iterative_rounds=R` reaches the sparsity at init in R rounds: round
r = 1..R prunes to r/R of it (k_r = round(r/R * s * n) units, the last round
exactly the one-shot count), and every round scores the model masked by
the rounds before (for "taylor_mask", the importances are estimated again
from the init batches on the masked model, as Michel et al. re-estimate
them between pruning steps).

The exact-count rule of `compression.pruning_masks` decides (`unit_mask`):
of a group's n units, k = round(s * n) with the lowest scores are pruned
(ties: the lower index first), where s is the schedule's sparsity, but never
all of them: k is clipped to n - 1, because pruning every unit of a layer
disconnects the network (nothing reaches the next layer, and the export
would hold a zero-width layer). With scope="global", one ranking runs over
all groups' units together (`global_masks` with `keep_best_of_each`),
k = round(s * N) of all N units are pruned, clipped to N - G so that each of the
G groups keeps its best unit; scores are compared as they are, with no
normalisation across groups, so groups whose weights are larger (or whose
slices hold more weights: fan-in, kernel size) keep more units. Normalise
the weights beforehand if that is not what you want.

Masks only shrink: a pruned unit scores -inf at every later re-scoring and
the new mask is intersected with the old one, so a unit once pruned is never
revived and each re-scoring reaches the scheduled count exactly (given a
non-decreasing schedule).

The transform
-------------
    state   = {"masks": {group name: bool[n_units]}, "sparsity": float32}
              (+ "scores": {group name: float32[n_units]}, the last importances, with "taylor_mask")
    apply   = every member slice of a pruned unit set to exactly 0 (jnp.where)
    update  = re-score every `update_every` steps (lax.cond), then re-zero
    export  = `structured_export.shrink_params` / `shrink_config`

Like `prune`, the gradient of a zeroed weight is zero and `update` re-zeroes
pruned slices after every optimizer step, so momentum or weight decay left in
the optimizer state cannot revive them. Masks and the sparsity are arrays:
a changing schedule never recompiles the step.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from compression import pruning_masks
from compression.pruning import make_schedule
from compression.registry import register
from compression.selection import leaves_by_path, map_at_paths
from compression.settings import require_int
from compression.structured_export import shrink_config, shrink_params
from compression.transform import PARAMS, Transform, require_batches
from compression.unit_groups import UnitGroup, UnitSlice, check_groups, parse_groups

SCOPES = ("layer", "global")
NORMS = {1: 1, 2: 2, "l1": 1, "l2": 2, "L1": 1, "L2": 2}
CRITERIA = ("norm", "taylor_mask")
NORMALIZATIONS = (None, "layer_l2")


def _norm(norm: Any) -> int:
    if isinstance(norm, (bool, np.bool_)) or norm not in NORMS:
        raise ValueError(f"structured_prune.norm {norm!r} is not one of 1 (L1) or 2 (L2)")
    return NORMS[norm]


def round_sparsities(target: Any, rounds: int) -> list:
    """The sparsity each of `rounds` init rounds prunes to: r/rounds of `target` (float32), the last
    round `target` itself, so that it reaches exactly the one-shot count."""
    target = jnp.asarray(target, jnp.float32)
    return [target * jnp.float32(r / rounds) for r in range(1, rounds)] + [target]


def layer_l2_normalize(scores: jnp.ndarray, live: jnp.ndarray) -> jnp.ndarray:
    """`scores` / sqrt(sum of the live units' squared scores): Michel et al.'s per-layer normalisation.

    Pruned units (live False) do not enter the norm; all-zero scores stay zero.
    """
    scores = jnp.asarray(scores, jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.where(live, jnp.square(scores), 0.0)))
    return jnp.where(norm > 0, scores / jnp.where(norm > 0, norm, 1.0), scores)


def _slices_by_path(groups: Sequence[UnitGroup], which: str) -> dict[str, list[tuple[UnitSlice, str]]]:
    """{parameter path: [(slice, group name)]} over each group's `which` slices ("members", "importance")."""
    by_path: dict[str, list[tuple[UnitSlice, str]]] = {}
    for g in groups:
        for m in getattr(g, which):
            by_path.setdefault(m.path, []).append((m, g.name))
    return by_path


def _scale_units(tree: Any, groups: Sequence[UnitGroup], xis: Mapping[str, Any]) -> Any:
    """`tree` with every group's importance slices multiplied by its per-unit vector xi."""
    by_path = _slices_by_path(groups, "importance")

    def scale(p, leaf):
        for m, name in by_path[p]:
            leaf = leaf * m.broadcast(xis[name], jnp.shape(leaf)).astype(leaf.dtype)
        return leaf

    return map_at_paths(scale, tree, by_path, what="structured_prune")


def _examples(batch: Any) -> int:
    """The number of examples of a batch: the common leading length of its arrays."""
    lengths = {int(np.shape(x)[0]) if np.ndim(x) else None for x in jax.tree_util.tree_leaves(batch)}
    if len(lengths) != 1 or None in lengths or 0 in lengths:
        raise ValueError("structured_prune.per_example=True reads a batch as examples along the first axis of "
                         f"every array, but its arrays' leading lengths are {sorted(map(str, lengths))}: set "
                         "structured_prune.per_example=False to take |d loss / d xi| per batch")
    return lengths.pop()


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _abs_mask_gradients(loss_fn: Callable, groups: tuple, per_example: bool, xis: Any, params: Any, batch: Any):
    """{group name: float32[n_units]}: sum over the batch's examples of |d L(example) / d xi| (per
    example), or |d L(batch) / d xi|. Compiled once per loss function, groups, mode and shapes (so the
    rounds of an iterative prune, and every prune of one run, share it)."""

    def xi_loss(x, p, b):
        return loss_fn(_scale_units(p, groups, x), b)

    if not per_example:
        return jax.tree_util.tree_map(jnp.abs, jax.grad(xi_loss)(xis, params, batch))

    def one(x, p, example):
        return jax.grad(xi_loss)(x, p, jax.tree_util.tree_map(lambda a: a[None], example))

    grads = jax.vmap(one, in_axes=(None, None, 0))(xis, params, batch)
    return jax.tree_util.tree_map(lambda g: jnp.sum(jnp.abs(g), axis=0), grads)


def importance_estimator(batches: Any, groups: Sequence[UnitGroup], counts: Mapping[str, int],
                         per_example: bool = True) -> Callable[[Any], dict]:
    """estimate(params) -> {group name: float32[n_units]}: each unit's mean |d loss / d xi_u| over `batches`.

    xi_u multiplies the unit's `importance` slices of `params` (see the module docstring); the
    derivative at xi = 1 is exactly the sum over those slices of w * d loss / d w. Per example: the
    mean over every example of every batch of |d L(example) / d xi| (the batches' `loss_fn` on a batch
    of that one example, vmapped over the batch); else the mean over the batches of |d L(batch) / d xi|.
    """
    groups = tuple(groups)
    ones = {g.name: jnp.ones((counts[g.name],), jnp.float32) for g in groups}
    seen = sum(_examples(batch) if per_example else 1 for batch in batches.batches)

    def estimate(params):
        total = None
        for batch in batches.batches:
            part = _abs_mask_gradients(batches.loss_fn, groups, bool(per_example), ones, params, batch)
            total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
        return {name: (v / seen).astype(jnp.float32) for name, v in total.items()}

    return estimate


def _zero_units(tree: Any, groups: Sequence[UnitGroup], masks: Mapping[str, Any]) -> Any:
    """`tree` with every member slice of a pruned unit set to exactly zero."""
    by_path = _slices_by_path(groups, "members")

    def zero(p, leaf):
        shape = jnp.shape(leaf)
        keep = jnp.ones(shape, bool)
        for m, name in by_path[p]:
            keep = keep & m.mask(masks[name], shape)
        # where, not multiply: a pruned weight is +0.0 exactly.
        return jnp.where(keep, leaf, jnp.zeros((), leaf.dtype))

    return map_at_paths(zero, tree, by_path, what="structured_prune")


@register("structured_prune")
def structured_prune(groups: Sequence[Mapping[str, Any]], sparsity: Union[float, Mapping[str, Any]] = 0.5, *,
                     norm: Union[int, str, None] = None, scope: str = "layer", update_every: int = 1,
                     multiple_of: int = 1, criterion: str = "norm", normalize: Optional[str] = None,
                     iterative_rounds: int = 1, per_example: Optional[bool] = None) -> Transform:
    """Structured pruning of the units the `groups` describe (see the module docstring).

    `criterion="norm"` (the default) ranks units by the L1 norm of their
    weights (`norm=1`, the default), as Li et al. 2017 ("Pruning Filters for
    Efficient ConvNets") rank conv filters, or by the L2 norm (`norm=2`), as
    He et al. 2018 ("Soft Filter Pruning for Accelerating Deep Convolutional
    Neural Networks") do; neurons of Dense layers are pruned the same way
    (node pruning by weight norms, He et al. 2014, "Reshaping Deep Neural
    Network for Fast Decoding by Node-Pruning"). `criterion="taylor_mask"`
    ranks them by the mean |d loss / d xi_u| of a mask xi_u on each unit's
    output over the init batches (data-aware: needs `InitBatches`), Michel
    et al. 2019's head importance ("Are Sixteen Heads Really Better than
    One?") when the group's `importance` slice is the head's slice of the
    attention output projection; `per_example` (default True, read only with
    "taylor_mask") takes the absolute value per example rather than per batch.

    `sparsity` is the fraction of units pruned, a float or a schedule dict as
    for `prune` (`compression.pruning.make_schedule`).
    `scope="layer"` prunes each group to the sparsity; `scope="global"` ranks
    all groups' units together, comparing scores as they are unless
    `normalize="layer_l2"` (global scope only) first divides each group's
    scores by their L2 norm over its live units. At least one unit of every
    group is always kept (pruning every unit of a layer disconnects the net):
    the pruned count is clipped to n - 1 per group (N - G over G groups with
    the global scope). `iterative_rounds` R >= 1 reaches the sparsity at
    init in R rounds of (as nearly as rounding allows) equal size, each
    scoring the model masked by the rounds before; R > 1 needs a sparsity
    above 0 at step 0.

    `multiple_of` > 1 (scope "layer") rounds each group's kept count up to a
    multiple of it (never above the group's size): hardware-friendly widths,
    because CPU and GPU kernels run channel counts that are multiples of 8 or
    16 much faster than odd ones (a LeNet-5 conv with 15 filters is slower
    than one with 20 on XLA:CPU).

    `update_every` (masks re-scored every that many steps) and `multiple_of`
    are integers >= 1, checked here, before any step, as the sparsity is.

    State: {"masks": {group name: bool[n_units]}, "sparsity": float32}, with
    "taylor_mask" also "scores": {group name: float32[n_units]} (the
    importances the last init round ranked, unnormalised).
    """
    parsed = parse_groups(groups)
    multiple_of = require_int("structured_prune.multiple_of", multiple_of, low=1,
                              fix="1 keeps any width; 8 or 16 rounds each kept count up to hardware-friendly widths")
    if multiple_of > 1 and scope != "layer":
        raise ValueError("structured_prune.multiple_of rounds each group's kept count: use scope='layer'")
    if criterion not in CRITERIA:
        raise ValueError(f"structured_prune.criterion {criterion!r} is not one of {list(CRITERIA)}")
    if criterion != "norm" and norm is not None:
        raise ValueError(f"structured_prune.norm is read only with criterion='norm' (got criterion={criterion!r})")
    p = _norm(1 if norm is None else norm)
    if criterion != "taylor_mask" and per_example is not None:
        raise ValueError("structured_prune.per_example is read only with criterion='taylor_mask'")
    if per_example is None:
        per_example = True
    if not isinstance(per_example, (bool, np.bool_)):
        raise ValueError(f"structured_prune.per_example must be True or False (got {per_example!r})")
    if criterion == "taylor_mask":
        missing = [g.name for g in parsed if not g.importance]
        if missing:
            raise ValueError(f"structured_prune with criterion='taylor_mask' needs each group's 'importance' "
                             f"slices (those a mask on the unit's output scales); group(s) {missing} have none")
    if scope not in SCOPES:
        raise ValueError(f"structured_prune.scope {scope!r} is not one of {list(SCOPES)}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"structured_prune.normalize {normalize!r} is not one of {list(NORMALIZATIONS)}")
    if normalize is not None and scope != "global":
        raise ValueError("structured_prune.normalize rescales each group's scores, which changes only a ranking "
                         "across groups: use scope='global'")
    update_every = require_int("structured_prune.update_every", update_every, low=1,
                               fix="the masks are re-scored every update_every steps")
    rounds = require_int("structured_prune.iterative_rounds", iterative_rounds, low=1,
                         fix="the sparsity at init is reached in that many rounds, re-scoring between them")
    # A number is checked by make_schedule as structured_prune.sparsity; so is every schedule argument.
    schedule = make_schedule(sparsity, "structured_prune.sparsity")
    if rounds > 1 and float(schedule(0)) == 0.0:
        raise ValueError("structured_prune.iterative_rounds splits the pruning done at init, but the sparsity "
                         "at step 0 is 0: set iterative_rounds=1, or a sparsity above 0 at step 0")

    def new_masks(weights: Any, old: Mapping[str, Any], target, scores: Optional[Mapping[str, Any]]) -> dict:
        if criterion == "norm":
            leaves = leaves_by_path(weights)
            raw = [g.scores(leaves, p) for g in parsed]
        else:
            raw = [scores[g.name] for g in parsed]
        if normalize == "layer_l2":
            raw = [layer_l2_normalize(s, old[g.name]) for g, s in zip(parsed, raw)]
        # Pruned units stay pruned: they rank below every live unit.
        live = [jnp.where(old[g.name], s, -jnp.inf) for g, s in zip(parsed, raw)]
        if scope == "layer":
            keep = [pruning_masks.unit_mask(s, target, max_pruned=s.shape[0] - 1, multiple_of=multiple_of)
                    for s in live]
        else:  # one ranking in group order; each group keeps its best live unit
            keep = pruning_masks.global_masks(live, target, keep_best_of_each=True)
        return {g.name: k & old[g.name] for g, k in zip(parsed, keep)}

    def init(params, key=None, batches=None):
        del key
        counts = check_groups(parsed, params)
        if criterion == "taylor_mask":
            batches = require_batches(batches, "structured_prune with criterion='taylor_mask'")
            estimate = importance_estimator(batches, parsed, counts, bool(per_example))
        target = jnp.asarray(schedule(0), jnp.float32)
        masks = {g.name: jnp.ones((counts[g.name],), bool) for g in parsed}
        scores = None
        for round_target in round_sparsities(target, rounds):
            masked = _zero_units(params, parsed, masks)
            if criterion == "taylor_mask":
                scores = estimate(masked)
            masks = new_masks(masked, masks, round_target, scores)
        state = {"masks": masks, "sparsity": target}
        if scores is not None:
            state["scores"] = scores
        return {PARAMS: _zero_units(params, parsed, masks)}, state

    def apply(trainable, state):
        return _zero_units(trainable[PARAMS], parsed, state["masks"])

    def project(trainable, state):
        return dict(trainable, **{PARAMS: apply(trainable, state)})

    def update(trainable, state, grads, step):
        del grads
        target = jnp.asarray(schedule(step + 1), jnp.float32)
        # As in `prune`: re-scoring at an unchanged target keeps the masks, so skip it.
        due = ((step + 1) % update_every == 0) & (target != state["sparsity"])
        masks = jax.lax.cond(due, lambda: new_masks(trainable[PARAMS], state["masks"], target, state.get("scores")),
                             lambda: dict(state["masks"]))
        state = dict(state, masks=masks, sparsity=jnp.where(due, target, state["sparsity"]))
        return project(trainable, state), state

    def export(params, state, model_config):
        masks = {name: np.asarray(m) for name, m in state["masks"].items()}
        return shrink_params(params, groups, masks), shrink_config(model_config, groups, masks)

    return Transform(init, apply, update, project, export=export, name="structured_prune")
