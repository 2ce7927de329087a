"""Unstructured and N:M pruning as a transform: trainable = weights, state = masks.

    apply(W, state)  = W * mask                       (selected leaves; others pass through)
    update(W, state) = re-score when the schedule's sparsity changes (checked every
                       `update_every` steps), then W * mask   (a projection after the optimizer step)

Criteria (`compression.pruning_criteria`, found by name; a new one registers
itself there): `magnitude` |w| (Han et al. 2015), `random` (fixed random scores,
the control), `snip` (|g * w| on a few batches at initialization, fixed
thereafter: Lee, Ajanthan, Torr 2019; needs `InitBatches`), `taylor` (|g * w| accumulated over training, Molchanov et al.
2017), `movement` (-w * g accumulated, Sanh et al. 2020) and `wanda` (|w| times
the norm of its input feature over the init batches, Sun et al. 2024). Scopes: `layer`
(each selected tensor pruned to the sparsity), `global` (one threshold over
all selected tensors), `nm` (N of every M consecutive inputs kept, in
groups along each kernel's input-feature axis: `pruning_masks.reduction_axis`)
and `output` (each output keeps the same share of its inputs, the comparison
group of Wanda, Sun et al. 2024: `pruning_masks.per_output_mask`).
Schedules (`compression.sparsity_schedules`): a float prunes from step 0; a
dict {"kind": "one_shot" | "iterative" | "polynomial", ...} follows one of
Han et al.'s prune-retrain or Zhu & Gupta 2017's gradual schedule.

Masks only shrink: an entry once pruned is never scored back in (its score is
-inf at every later re-scoring), so each re-scoring reaches the scheduled
sparsity exactly. Optimizer state: the gradient of a pruned weight is zero
(the model sees W * mask), `update` re-zeroes pruned weights after every
optimizer step, and `keep` hands the masks to the driver, which zeroes the
optimizer's state (Adam's moments) of every pruned entry after each step:
neither momentum nor weight decay can revive a pruned weight, and none of
its momentum is left over. Masks, scores and the sparsity target
are arrays in the state: a changing schedule never recompiles the step.
"""
from __future__ import annotations

import numbers
import re
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from compression import pruning_masks, sparsity_schedules
from compression.pruning_criteria import Criterion, make_criterion
from compression.registry import register
from compression.selection import Selector, leaves_by_path, map_at_paths, path_str, selected_paths
from compression.settings import require_int
from compression.transform import PARAMS, Transform

SCOPES = ("layer", "global", "nm", "output")
LAST_STEP = 2 ** 31 - 1  # the last int32 step: where a non-decreasing schedule reaches its final sparsity
SCHEDULES = {
    "constant": sparsity_schedules.constant_sparsity,
    "one_shot": sparsity_schedules.one_shot_sparsity,
    "iterative": sparsity_schedules.iterative_sparsity,
    "polynomial": sparsity_schedules.polynomial_sparsity,
}


def make_schedule(spec: Union[float, Mapping[str, Any]],
                  where: str = "prune.sparsity") -> Callable[[Any], jnp.ndarray]:
    """A sparsity schedule from a config value: a number (constant) or {"kind": name, **arguments}.

    Every schedule checks its arguments when it is built (`compression.sparsity_schedules`);
    a refusal is prefixed with `where`, the setting that holds the schedule.
    """
    if isinstance(spec, numbers.Real) and not isinstance(spec, bool):
        return sparsity_schedules.constant_sparsity(sparsity_schedules.check_sparsity(spec, where))
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a number in [0, 1) or a schedule {{'kind': one of {sorted(SCHEDULES)}, "
                         f"...}} (got {spec!r})")
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in SCHEDULES:
        raise ValueError(f"{where} schedule kind {kind!r} is not one of {sorted(SCHEDULES)}")
    try:
        return SCHEDULES[kind](**spec)
    except TypeError as e:
        raise ValueError(f"{where} schedule {kind!r} does not accept {sorted(spec)}: {e}") from e
    except ValueError as e:
        raise ValueError(f"{where} schedule {kind!r}: {e}") from e


def never_prunes(schedule: Callable[[Any], jnp.ndarray]) -> bool:
    """Whether a (non-decreasing) sparsity schedule is 0 at every step: its value at the last int32 step is 0."""
    return float(schedule(LAST_STEP)) == 0.0


NmAxis = Union[None, int, Sequence[Sequence[Any]]]


def _check_nm_axis(nm_axis: NmAxis) -> list[tuple[Any, str, Optional[int]]]:
    """prune.nm_axis as [(compiled regex, pattern, axis or None)] rules: None and an int are one rule for every path."""
    if nm_axis is None or isinstance(nm_axis, (numbers.Integral, float, str, bytes)):
        axis = None if nm_axis is None else require_int(
            "prune.nm_axis", nm_axis, fix="the axis N:M groups run along (None: each kernel's input-feature axis)")
        return [(re.compile(".*"), ".*", axis)]
    if not isinstance(nm_axis, Sequence):
        raise ValueError(f"prune.nm_axis must be None, an integer axis or a list of (path regex, axis) rules "
                         f"(got {nm_axis!r})")
    rules = []
    for rule in nm_axis:
        if isinstance(rule, (str, bytes)) or not isinstance(rule, Sequence) or len(rule) != 2:
            raise ValueError(f"prune.nm_axis rule {rule!r} must be a (path regex, axis) pair, e.g. "
                             f"('.*Conv_0/kernel', 2); axis None takes the default")
        pattern, axis = rule
        try:
            compiled = re.compile(pattern)
        except (re.error, TypeError) as e:
            raise ValueError(f"prune.nm_axis rule {tuple(rule)}: {pattern!r} is not a valid regular "
                             f"expression: {e}") from e
        if axis is not None:
            axis = require_int(f"prune.nm_axis rule {tuple(rule)}", axis,
                               fix="the axis N:M groups run along, or None for the input-feature axis")
        rules.append((compiled, pattern, axis))
    return rules


def nm_axis_of(path: str, shape: tuple[int, ...], rules) -> tuple[int, str]:
    """(the axis, in [0, ndim), N:M groups of the weight at `path` run along; how it was chosen)."""
    for compiled, pattern, axis in rules:
        if compiled.fullmatch(path):
            if axis is None:
                break
            if not -len(shape) <= axis < len(shape):
                raise ValueError(f"prune.nm_axis {axis} (rule {pattern!r}) is out of range for {path} of shape "
                                 f"{tuple(shape)}")
            return axis % len(shape), f"prune.nm_axis rule {pattern!r}"
    return pruning_masks.reduction_axis(shape, path), "its input-feature axis"


def _check_nm(n: Any, m: Any, scope: str, schedule: Callable[[Any], jnp.ndarray], nm_axis: NmAxis = None) -> None:
    """N:M settings: 1 <= n < m with scope='nm' (n = 0 prunes every weight, n = m none), unset otherwise."""
    if scope != "nm":
        if n or m:
            raise ValueError(f"prune.n and prune.m are read only with scope='nm' (got n={n!r}, m={m!r} with "
                             f"scope={scope!r}); set scope='nm', or leave n and m unset")
        if nm_axis is not None:
            raise ValueError(f"prune.nm_axis is read only with scope='nm' (got nm_axis={nm_axis!r} with "
                             f"scope={scope!r}); set scope='nm', or leave nm_axis unset")
        return
    m = require_int("prune.m", m, low=2, fix="N:M pruning keeps n of every m consecutive weights (e.g. 2:4)")
    n = require_int("prune.n", n, low=1, fix="n = 0 would keep no weight of a group, pruning every weight")
    if n >= m:
        raise ValueError(f"prune.n must be less than prune.m (got n={n}, m={m}); n = m keeps every weight, so "
                         f"nothing would be pruned (for a dense control, drop the stage or use scope='layer' "
                         f"with sparsity 0)")
    if never_prunes(schedule):
        raise ValueError("prune with scope='nm' prunes from the first step its sparsity schedule is above 0, and "
                         "this prune.sparsity is 0 at every step, so nothing would be pruned; give a sparsity "
                         "> 0 (its value is not used: n and m fix the sparsity)")


def _like(tree: Any, values: Mapping[str, Any], fill: Callable[[Any], Any]) -> Any:
    """A tree shaped like `tree` holding values[path] where given and fill(leaf) elsewhere."""
    return jax.tree_util.tree_map_with_path(
        lambda kp, leaf: values[path_str(kp)] if path_str(kp) in values else fill(leaf), tree)


def zero_pruned(params: Any, masks: Mapping[str, Any], what: str = "prune") -> Any:
    """`params` with every entry its mask ({path: bool array}) drops at exactly +0.0 (jnp.where, not w * mask,
    which would keep -0.0 for negative weights)."""
    return map_at_paths(lambda p, w: jnp.where(masks[p], w, jnp.zeros((), w.dtype)), params, masks, what=what)


def keep_unpruned(trainable: Any, masks: Mapping[str, Any], what: str = "prune") -> Any:
    """A `keep` tree: the masks at their parameters' paths, 1 everywhere else (the driver zeroes the optimizer
    state of the dropped entries, so no momentum revives them)."""
    ones = jax.tree_util.tree_map(lambda leaf: jnp.ones((), jnp.float32), trainable)
    return dict(ones, **{PARAMS: map_at_paths(lambda p, one: masks[p], ones[PARAMS], masks, what=what)})


@register("prune")
def prune(select: Selector = ".*kernel", sparsity: Union[float, Mapping[str, Any]] = 0.5, *,
          criterion: Union[str, Criterion] = "magnitude", scope: str = "layer", n: int = 0, m: int = 0,
          nm_axis: NmAxis = None, update_every: int = 1, seed: int = 0) -> Transform:
    """Pruning of the leaves `select` matches; see the module docstring for criteria, scopes, schedules.

    `criterion` is a registered criterion's name (`pruning_criteria.criteria()`)
    or a `pruning_criteria.Criterion` instance. With scope='nm', n of every m
    consecutive entries along each kernel's input-feature (reduction) axis
    are kept from the first step the schedule is above zero; the schedule's
    value itself is not used. The axis (`pruning_masks.reduction_axis`, the
    grouping of Mishra et al. 2021 and NVIDIA's 2:4 sparse tensor cores):
    axis 0 of a Dense kernel (in, out); axis 2, the input channels, of a
    Conv kernel (h, w, in, out) (so a 3x3 conv takes 2:4 when its input
    channels are a multiple of 4); axis 0 of an attention query/key/value
    kernel (width, heads, head_dim), recognized by its path ending in
    query/kernel, key/kernel or value/kernel; axis 1, head_dim, of the
    attention output kernel (heads, head_dim, width), which reduces over
    heads and head_dim together: its groups are m consecutive inputs of the
    flattened heads * head_dim that stay within one head. In general axis
    ndim - 2 (the `in` of a kernel ending (..., in, out)), axis 0 of a
    vector. `nm_axis` overrides it: an integer axis for every selected
    weight, or a list of (path regex, axis) rules, the first rule whose regex
    fully matches a path wins, and axis None, or no matching rule, keeps the
    default. A selected weight whose grouping axis is not a multiple of m is
    refused at init, naming its path, shape, axis and m.
    `seed` draws the criterion's key when `init` is given none.

    Settings are checked here, before any step: `sparsity` in [0, 1) (1.0 would
    prune every weight; 0.0 is a dense control) or a schedule of such values;
    with scope='nm', integers 1 <= n < m (n = 0 would prune every weight, and
    n = m none, so both are refused) and a schedule above 0 at some step; n,
    m and nm_axis are refused with other scopes, which would ignore them;
    `update_every` an integer >= 1.
    """
    criterion = make_criterion(criterion)
    if scope not in SCOPES:
        raise ValueError(f"prune.scope {scope!r} is not one of {list(SCOPES)}")
    schedule = make_schedule(sparsity)
    _check_nm(n, m, scope, schedule, nm_axis)
    nm_rules = _check_nm_axis(nm_axis) if scope == "nm" else []
    update_every = require_int("prune.update_every", update_every, low=1,
                               fix="the masks are re-scored every update_every steps")
    seed = require_int("prune.seed", seed)

    def new_masks(scores: dict, old: dict, target) -> dict:
        # Pruned entries stay pruned: they rank below everything still alive.
        live = {p: jnp.where(old[p], s, -jnp.inf) for p, s in scores.items()}
        if scope == "global":
            return pruning_masks.global_masks(live, target)
        if scope == "nm":
            masks = {p: pruning_masks.nm_mask(s, n, m, axis=nm_axis_of(p, s.shape, nm_rules)[0])
                     for p, s in live.items()}
            return {p: jnp.where(target > 0, mk & old[p], old[p]) for p, mk in masks.items()}
        if scope == "output":
            return {p: pruning_masks.per_output_mask(s, target, p) for p, s in live.items()}
        return {p: pruning_masks.layerwise_mask(s, target) for p, s in live.items()}

    def init(params, key=None, batches=None):
        paths = selected_paths(params, select, what="prune.select")
        weights = {p: w for p, w in leaves_by_path(params).items() if p in paths}
        scalars = [p for p, w in weights.items() if jnp.ndim(w) == 0]
        if scalars:
            raise ValueError(f"prune.select matches scalar parameters {scalars}; select arrays (e.g. '.*kernel')")
        if scope == "nm":
            for p, w in weights.items():
                shape = tuple(jnp.shape(w))
                ax, why = nm_axis_of(p, shape, nm_rules)
                if shape[ax] % m:
                    raise ValueError(f"prune: {p} of shape {shape} cannot take {n}:{m} sparsity: its groups run "
                                     f"along axis {ax} ({why}), of length {shape[ax]}, which is not a multiple "
                                     f"of m={m}; set prune.nm_axis, or leave {p} out of prune.select")
        key = jax.random.PRNGKey(seed) if key is None else key
        scores = criterion.init_scores(weights, key, batches, params)
        state = {"scores": scores, "sparsity": jnp.asarray(schedule(0), jnp.float32)}
        ones = {p: jnp.ones(w.shape, bool) for p, w in weights.items()}
        masks = new_masks(criterion.current(weights, scores), ones, state["sparsity"])
        state["masks"] = masks
        state = _pack(params, state)
        return project({PARAMS: params}, state), state

    def apply(trainable, state):
        return project(trainable, state)[PARAMS]

    def project(trainable, state):
        # where, not w * mask: a pruned weight is +0.0 exactly (w * 0 would keep -0.0 for negatives).
        params = trainable[PARAMS]
        if jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(state["masks"]):
            # Every leaf through its stored mask (a scalar True where nothing is pruned), as the
            # earlier releases did: the same compiled step, so committed results reproduce bit for bit.
            params = jax.tree_util.tree_map(lambda w, mk: jnp.where(mk, w, jnp.zeros((), w.dtype)),
                                            params, state["masks"])
        else:  # a tree an earlier chain stage reshaped or extended: the pruned paths by name
            params = zero_pruned(params, _unpack(state)["masks"])
        return dict(trainable, **{PARAMS: params})

    def update(trainable, state, grads, step):
        flat = _unpack(state)
        weights = {p: w for p, w in leaves_by_path(trainable[PARAMS]).items() if p in flat["masks"]}
        flat["scores"] = criterion.accumulate(flat["scores"], weights, leaves_by_path(grads[PARAMS]))
        target = jnp.asarray(schedule(step + 1), jnp.float32)
        # Re-scoring at an unchanged target keeps the same mask (pruned entries rank last), so
        # the sort runs only when the schedule moves: a few times per run, not every step.
        due = ((step + 1) % update_every == 0) & (target != flat["sparsity"])
        masks = jax.lax.cond(due, lambda: new_masks(criterion.current(weights, flat["scores"]), flat["masks"],
                                                    target),
                             lambda: dict(flat["masks"]))
        flat.update(masks=masks, sparsity=jnp.where(due, target, flat["sparsity"]))
        # Packed on the state's own tree: a stage before this one may hand over extra leaves (input hooks).
        packed = _pack(state["masks"], flat)
        return project(trainable, packed), packed

    def _pack(tree, flat):
        # Masks and scores are stored shaped like the params (scalars where nothing is pruned),
        # so checkpoints and shardings follow the parameter tree.
        return {"masks": _like(tree, flat["masks"], lambda leaf: jnp.ones((), bool)),
                "scores": _like(tree, flat["scores"], lambda leaf: jnp.zeros((), jnp.float32)),
                "sparsity": flat["sparsity"]}

    def _unpack(state):
        masks = {p: mk for p, mk in leaves_by_path(state["masks"]).items() if jnp.ndim(mk) > 0}
        scores = {p: s for p, s in leaves_by_path(state["scores"]).items() if p in masks}
        return {"masks": masks, "scores": scores, "sparsity": state["sparsity"]}

    def keep(trainable, state):
        return keep_unpruned(trainable, _unpack(state)["masks"])

    return Transform(init, apply, update, project, keep, name="prune")

