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
A unit's score is the L1 (`norm=1`) or L2 (`norm=2`) norm of its slice of
each `score` member, summed over the score members (a sum of per-member
norms, not the norm of their concatenation; `pruning_masks.unit_norms`).
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
    apply   = every member slice of a pruned unit set to exactly 0 (jnp.where)
    update  = re-score every `update_every` steps (lax.cond), then re-zero
    export  = `structured_export.shrink_params` / `shrink_config`

Like `prune`, the gradient of a zeroed weight is zero and `update` re-zeroes
pruned slices after every optimizer step, so momentum or weight decay left in
the optimizer state cannot revive them. Masks and the sparsity are arrays:
a changing schedule never recompiles the step.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from compression import pruning_masks
from compression.pruning import make_schedule
from compression.registry import register
from compression.selection import leaves_by_path, map_at_paths
from compression.settings import require_int
from compression.structured_export import shrink_config, shrink_params
from compression.transform import PARAMS, Transform
from compression.unit_groups import UnitGroup, UnitSlice, check_groups, parse_groups

SCOPES = ("layer", "global")
NORMS = {1: 1, 2: 2, "l1": 1, "l2": 2, "L1": 1, "L2": 2}


def _norm(norm: Any) -> int:
    if isinstance(norm, (bool, np.bool_)) or norm not in NORMS:
        raise ValueError(f"structured_prune.norm {norm!r} is not one of 1 (L1) or 2 (L2)")
    return NORMS[norm]


def _zero_units(tree: Any, groups: Sequence[UnitGroup], masks: Mapping[str, Any]) -> Any:
    """`tree` with every member slice of a pruned unit set to exactly zero."""
    by_path: dict[str, list[tuple[UnitSlice, str]]] = {}
    for g in groups:
        for m in g.members:
            by_path.setdefault(m.path, []).append((m, g.name))

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
                     norm: Union[int, str] = 1, scope: str = "layer", update_every: int = 1,
                     multiple_of: int = 1) -> Transform:
    """Structured magnitude pruning of the units the `groups` describe (see the module docstring).

    Units are ranked by the L1 norm of their weights, as Li et al. 2017
    ("Pruning Filters for Efficient ConvNets") rank conv filters, or by the
    L2 norm, as He et al. 2018 ("Soft Filter Pruning for Accelerating Deep
    Convolutional Neural Networks") do; neurons of Dense layers are pruned
    the same way (node pruning by weight norms, He et al. 2014, "Reshaping
    Deep Neural Network for Fast Decoding by Node-Pruning"), and attention
    heads as the head slices of their projections (cf. Michel et al. 2019,
    "Are Sixteen Heads Really Better than One?").

    `sparsity` is the fraction of units pruned, a float or a schedule dict as
    for `prune` (`compression.pruning.make_schedule`). `norm` is 1 or 2.
    `scope="layer"` prunes each group to the sparsity; `scope="global"` ranks
    all groups' units together without normalising scores across groups. At
    least one unit of every group is always kept (pruning every unit of a
    layer disconnects the net): the pruned count is clipped to n - 1 per
    group (N - G over G groups with the global scope).

    `multiple_of` > 1 (scope "layer") rounds each group's kept count up to a
    multiple of it (never above the group's size): hardware-friendly widths,
    because CPU and GPU kernels run channel counts that are multiples of 8 or
    16 much faster than odd ones (a LeNet-5 conv with 15 filters is slower
    than one with 20 on XLA:CPU).

    `update_every` (masks re-scored every that many steps) and `multiple_of`
    are integers >= 1, checked here, before any step, as the sparsity is.

    State: {"masks": {group name: bool[n_units]}, "sparsity": float32}.
    """
    parsed = parse_groups(groups)
    multiple_of = require_int("structured_prune.multiple_of", multiple_of, low=1,
                              fix="1 keeps any width; 8 or 16 rounds each kept count up to hardware-friendly widths")
    if multiple_of > 1 and scope != "layer":
        raise ValueError("structured_prune.multiple_of rounds each group's kept count: use scope='layer'")
    p = _norm(norm)
    if scope not in SCOPES:
        raise ValueError(f"structured_prune.scope {scope!r} is not one of {list(SCOPES)}")
    update_every = require_int("structured_prune.update_every", update_every, low=1,
                               fix="the masks are re-scored every update_every steps")
    # A number is checked by make_schedule as structured_prune.sparsity; so is every schedule argument.
    schedule = make_schedule(sparsity, "structured_prune.sparsity")

    def new_masks(weights: Any, old: Mapping[str, Any], target) -> dict:
        leaves = leaves_by_path(weights)
        # Pruned units stay pruned: they rank below every live unit.
        live = [jnp.where(old[g.name], g.scores(leaves, p), -jnp.inf) for g in parsed]
        if scope == "layer":
            keep = [pruning_masks.unit_mask(s, target, max_pruned=s.shape[0] - 1, multiple_of=multiple_of)
                    for s in live]
        else:  # one ranking in group order; each group keeps its best live unit
            keep = pruning_masks.global_masks(live, target, keep_best_of_each=True)
        return {g.name: k & old[g.name] for g, k in zip(parsed, keep)}

    def init(params, key=None, batches=None):
        del key, batches
        counts = check_groups(parsed, params)
        target = jnp.asarray(schedule(0), jnp.float32)
        ones = {g.name: jnp.ones((counts[g.name],), bool) for g in parsed}
        masks = new_masks(params, ones, target)
        state = {"masks": masks, "sparsity": target}
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
        masks = jax.lax.cond(due, lambda: new_masks(trainable[PARAMS], state["masks"], target),
                             lambda: dict(state["masks"]))
        state = {"masks": masks, "sparsity": jnp.where(due, target, state["sparsity"])}
        return project(trainable, state), state

    def export(params, state, model_config):
        masks = {name: np.asarray(m) for name, m in state["masks"].items()}
        return shrink_params(params, groups, masks), shrink_config(model_config, groups, masks)

    return Transform(init, apply, update, project, export=export, name="structured_prune")
