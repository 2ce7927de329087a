"""Structured pruning: whole neurons, filters, channels and attention heads, and whole layers.

Unstructured pruning (`compression.pruning`) zeroes single weights, which a
dense kernel still stores and multiplies. Structured pruning removes *units*
(a Dense neuron, a conv filter, an attention head, an FFN hidden unit) or
whole residual blocks, so the export is a physically smaller dense model of
the same architecture with a smaller config.

Groups
------
A *group* describes one kind of unit, e.g. the 300 hidden neurons of layer 0
of LeNet-300-100, as a mapping (plain data, so a config can hold it):

    {"name": "Dense_0_neurons",
     "members": [["Dense_0/kernel", 1], ["Dense_0/bias", 0], ["Dense_1/kernel", 0]],
     "score": [["Dense_0/kernel", 1]],         # optional; default: the first member
     "config_field": ["hidden", 0]}            # optional; ["field"] or ["field", index]

Unit u of a member [path, axis] is the slice u along `axis` of the leaf at
`path` (paths are the '/'-joined parameter paths of `compression.selection`).
A member [path, axis, period] has `period` units, and unit u is every index i
along `axis` with i % period == u: the rows of a Dense kernel that read a
flattened conv feature map with channels fastest (Flax's NHWC reshape), e.g.
LeNet-5's 4x4x50 map feeding its dense 500 is ["Dense_0/kernel", 0, 50]. So
removing a neuron (or filter) removes the matching rows (input channels) of
the next layer too. All members of a group must agree on the number of
units; one (path, axis) belongs to at most one group. Group names are
dict keys of the state (use names without '/', e.g. "block_0_heads", so
checkpointers that map keys to files accept them).

Scores and masks
----------------
A unit's score is the L1 (`norm=1`) or L2 (`norm=2`) norm of its slice of
each `score` member, summed over the score members (a sum of per-member
norms, not the norm of their concatenation). The exact-count rule of
`compression.pruning_masks` decides: of a group's n units, k = round(s * n)
with the lowest scores are pruned (ties: the lower index first), where s is
the schedule's sparsity, but never all of them: k is clipped to n - 1,
because pruning every unit of a layer disconnects the network (nothing
reaches the next layer, and the export would hold a zero-width layer). With
scope="global", one ranking runs over all groups' units together, k =
round(s * N) of all N units are pruned, clipped to N - G so that each of the
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

Like `prune`, the gradient of a zeroed weight is zero and `update` re-zeroes
pruned slices after every optimizer step, so momentum or weight decay left in
the optimizer state cannot revive them. Masks and the sparsity are arrays:
a changing schedule never recompiles the step.

Layer pruning (`layer_drop`) zeroes the parameters that make a pre-LN
residual block an identity (its attention output projection and its second
FFN layer), so x + attn(ln(x)) = x and x + ffn(ln(x)) = x.

Export
------
`shrink_params` / `shrink_config` turn the effective (masked) params and the
unit masks into a smaller model of the same architecture whose predictions
equal the masked model's; `drop_layers_params` / `drop_layers_config` do the
same for dropped layers (apply `shrink_*` first, then `drop_layers_*`: a
layer's groups are named by its original index).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from compression.pruning import make_schedule
from compression.registry import register
from compression.export import Coded, leaf_shape, take
from compression.selection import leaves_by_path, map_at_paths, nest_paths, path_str
from compression.sparsity_schedules import check_sparsity
from compression.transform import PARAMS, Transform

SCOPES = ("layer", "global")
NORMS = {1: 1, 2: 2, "l1": 1, "l2": 2, "L1": 1, "L2": 2}
DROP_POLICIES = ("top", "bottom")
DEFAULT_ZERO = ("attn/out/.*", "ffn_out/.*")
_GROUP_KEYS = ("name", "members", "score", "config_field")


# --------------------------------------------------------------------------- group specs

class _Member:
    """One normalised member (or score) entry: a leaf path, a unit axis and an optional period."""

    __slots__ = ("path", "axis", "period")

    def __init__(self, path: str, axis: int, period: Optional[int]):
        self.path, self.axis, self.period = path, axis, period

    def units(self, shape: tuple[int, ...]) -> int:
        return shape[self._axis(shape)] if self.period is None else self.period

    def _axis(self, shape: tuple[int, ...]) -> int:
        return self.axis % len(shape)

    def check(self, shape: tuple[int, ...], group: str) -> int:
        """Validates against the leaf's shape; returns the member's number of units."""
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"structured_prune group {group!r}: axis {self.axis} is out of range for "
                             f"{self.path} of shape {shape}")
        length = shape[self._axis(shape)]
        if self.period is not None and length % self.period:
            raise ValueError(f"structured_prune group {group!r}: period {self.period} does not divide the "
                             f"length {length} of axis {self.axis} of {self.path} (shape {shape})")
        return self.units(shape)

    def unit_vector(self, keep, length: int, xp=jnp):
        """The per-index keep vector along the member's axis (tiled when periodic)."""
        return keep if self.period is None else xp.tile(keep, length // self.period)


class _Shaped:
    """Stands for a leaf (an array or an encoded `Coded` one) where only its shape is read."""

    __slots__ = ("shape",)

    def __init__(self, shape):
        self.shape = shape


class _Group:
    __slots__ = ("name", "members", "score", "config_field")

    def __init__(self, name, members, score, config_field):
        self.name, self.members, self.score, self.config_field = name, members, score, config_field


def _parse_member(spec: Any, group: str, key: str) -> _Member:
    bad = (f"structured_prune group {group!r}: {key} entry {spec!r} must be [path, axis] or "
           f"[path, axis, period] with a string path, an integer axis and an integer period >= 1")
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Sequence) or len(spec) not in (2, 3):
        raise ValueError(bad)
    path, axis = spec[0], spec[1]
    period = spec[2] if len(spec) == 3 else None
    if not isinstance(path, str) or not path:
        raise ValueError(bad)
    for v in (axis,) + (() if period is None else (period,)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(bad)
    if period is not None and period < 1:
        raise ValueError(bad)
    return _Member(path, int(axis), None if period is None else int(period))


def _parse_groups(groups: Any) -> list[_Group]:
    if isinstance(groups, Mapping) or not isinstance(groups, Sequence) or not groups:
        raise ValueError(f"structured_prune.groups must be a non-empty list of group mappings, got {groups!r}")
    parsed, names = [], set()
    for i, g in enumerate(groups):
        if not isinstance(g, Mapping):
            raise ValueError(f"structured_prune.groups[{i}] must be a mapping with 'name' and 'members', got {g!r}")
        name = g.get("name")
        if not isinstance(name, str) or not name:
            raise ValueError(f"structured_prune.groups[{i}] needs a non-empty string 'name', got {name!r}")
        if name in names:
            raise ValueError(f"structured_prune: group name {name!r} is used twice; names key the masks")
        names.add(name)
        unknown = sorted(set(g) - set(_GROUP_KEYS))
        if unknown:
            raise ValueError(f"structured_prune group {name!r}: unknown key(s) {unknown}; "
                             f"a group has {list(_GROUP_KEYS)}")
        members = g.get("members")
        if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or not members:
            raise ValueError(f"structured_prune group {name!r}: 'members' must be a non-empty list of "
                             f"[path, axis] entries, got {members!r}")
        members = [_parse_member(m, name, "members") for m in members]
        score = g.get("score")
        if score is None:
            score = members[:1]
        else:
            if isinstance(score, (str, bytes)) or not isinstance(score, Sequence) or not score:
                raise ValueError(f"structured_prune group {name!r}: 'score' must be a non-empty list of "
                                 f"[path, axis] entries, got {score!r}")
            score = [_parse_member(m, name, "score") for m in score]
        field = g.get("config_field")
        if field is not None:
            ok = (not isinstance(field, (str, bytes)) and isinstance(field, Sequence) and len(field) in (1, 2)
                  and isinstance(field[0], str)
                  and (len(field) == 1 or (isinstance(field[1], (int, np.integer))
                                           and not isinstance(field[1], (bool, np.bool_)) and field[1] >= 0)))
            if not ok:
                raise ValueError(f"structured_prune group {name!r}: config_field {field!r} must be [field] or "
                                 f"[field, index] with a string field and an integer index >= 0")
            field = (field[0],) if len(field) == 1 else (field[0], int(field[1]))
        parsed.append(_Group(name, members, score, field))
    seen: dict[tuple[str, int], str] = {}
    for g in parsed:
        for m in g.members:
            key = (m.path, m.axis)
            if key in seen:
                raise ValueError(f"structured_prune: member [{m.path!r}, {m.axis}] belongs to both groups "
                                 f"{seen[key]!r} and {g.name!r}; an axis holds one kind of unit")
            seen[key] = g.name
    return parsed


def _check_groups(groups: list[_Group], params: Any) -> dict[str, int]:
    """Validates paths, axes, periods and unit counts against `params`; returns units per group."""
    leaves = {p: _Shaped(leaf_shape(leaf)) for p, leaf in leaves_by_path(params).items()}
    counts = {}
    for g in groups:
        missing = [m.path for m in g.members + g.score if m.path not in leaves]
        if missing:
            some = ", ".join(list(leaves)[:30])
            raise ValueError(f"structured_prune group {g.name!r}: no parameter at path(s) {sorted(set(missing))}; "
                             f"paths look like: {some}{', ...' if len(leaves) > 30 else ''}")
        units = {}
        for m in g.members + g.score:
            units[(m.path, m.axis, m.period)] = m.check(tuple(np.shape(leaves[m.path])), g.name)
        n = units[(g.members[0].path, g.members[0].axis, g.members[0].period)]
        for (path, axis, period), u in units.items():
            if u != n:
                first = g.members[0]
                raise ValueError(f"structured_prune group {g.name!r}: {path} (axis {axis}"
                                 f"{'' if period is None else f', period {period}'}) has {u} units but "
                                 f"{first.path} (axis {first.axis}) has {n}; all members must agree")
        counts[g.name] = n
    return counts


# --------------------------------------------------------------------------- scoring

def _member_norms(w: jnp.ndarray, m: _Member, norm: int) -> jnp.ndarray:
    """The L1/L2 norm of each unit's slice of `w` (periodic members fold i % period into unit u)."""
    w = jnp.asarray(w, jnp.float32)
    w = jnp.moveaxis(w, m.axis, 0)
    if m.period is None:
        rows = w.reshape((w.shape[0], -1))
    else:  # index i = q * period + u along the axis: reshape to (q, u, ...), unit axis first
        rows = jnp.moveaxis(w.reshape((w.shape[0] // m.period, m.period) + w.shape[1:]), 1, 0)
        rows = rows.reshape((m.period, -1))
    if norm == 1:
        return jnp.sum(jnp.abs(rows), axis=1)
    return jnp.sqrt(jnp.sum(jnp.square(rows), axis=1))


def unit_scores(params: Any, group: Mapping[str, Any], norm: int = 1) -> jnp.ndarray:
    """The scores of one group's units: sum over its score members of each unit's slice norm."""
    (g,) = _parse_groups([group])
    _check_groups([g], params)
    return _scores(leaves_by_path(params), g, _norm(norm))


def _scores(leaves: Mapping[str, Any], g: _Group, norm: int) -> jnp.ndarray:
    return sum(_member_norms(leaves[m.path], m, norm) for m in g.score)


def _norm(norm: Any) -> int:
    if isinstance(norm, (bool, np.bool_)) or norm not in NORMS:
        raise ValueError(f"structured_prune.norm {norm!r} is not one of 1 (L1) or 2 (L2)")
    return NORMS[norm]


def _keep_lowest_pruned(scores: jnp.ndarray, k) -> jnp.ndarray:
    """Bool keep-vector pruning the k lowest scores (ties: lower index pruned first)."""
    n = scores.shape[0]
    order = jnp.argsort(scores, stable=True)
    ranks = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    return ranks >= k


def _count(sparsity, n: int, cap: int) -> jnp.ndarray:
    s = jnp.clip(jnp.asarray(sparsity, jnp.float32), 0.0, 1.0)
    return jnp.clip(jnp.round(s * jnp.float32(n)).astype(jnp.int32), 0, cap)


# --------------------------------------------------------------------------- the transform

def _zero_units(tree: Any, groups: list[_Group], masks: Mapping[str, Any]) -> Any:
    """`tree` with every member slice of a pruned unit set to exactly zero."""
    by_path: dict[str, list[tuple[_Member, str]]] = {}
    for g in groups:
        for m in g.members:
            by_path.setdefault(m.path, []).append((m, g.name))

    def zero(p, leaf):
        shape = jnp.shape(leaf)
        keep = jnp.ones(shape, bool)
        for m, name in by_path[p]:
            axis = m.axis % len(shape)
            vec = m.unit_vector(masks[name], shape[axis])
            view = [1] * len(shape)
            view[axis] = shape[axis]
            keep = keep & vec.reshape(view)
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

    State: {"masks": {group name: bool[n_units]}, "sparsity": float32}.
    """
    parsed = _parse_groups(groups)
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, (int, np.integer)) or multiple_of < 1:
        raise ValueError(f"structured_prune.multiple_of must be an integer >= 1 (got {multiple_of!r})")
    if multiple_of > 1 and scope != "layer":
        raise ValueError("structured_prune.multiple_of rounds each group's kept count: use scope='layer'")
    p = _norm(norm)
    if scope not in SCOPES:
        raise ValueError(f"structured_prune.scope {scope!r} is not one of {list(SCOPES)}")
    if isinstance(update_every, (bool, np.bool_)) or not isinstance(update_every, (int, np.integer)) \
            or update_every < 1:
        raise ValueError(f"structured_prune.update_every must be an integer >= 1 (got {update_every!r})")
    if isinstance(sparsity, (int, float)) and not isinstance(sparsity, bool):
        check_sparsity(sparsity, "structured_prune.sparsity")
    schedule = make_schedule(sparsity)

    def new_masks(weights: Any, old: Mapping[str, Any], target) -> dict:
        leaves = leaves_by_path(weights)
        # Pruned units stay pruned: they rank below every live unit.
        live = {g.name: jnp.where(old[g.name], _scores(leaves, g, p), -jnp.inf) for g in parsed}
        if scope == "layer":
            keep = {}
            for g in parsed:
                n = live[g.name].shape[0]
                k = _count(target, n, n - 1)
                if multiple_of > 1:
                    kept = jnp.minimum(-((k - n) // multiple_of) * multiple_of, n)  # ceil to a multiple
                    k = n - kept
                keep[g.name] = _keep_lowest_pruned(live[g.name], k)
        else:
            # Each group's best live unit is protected (+inf), and at most N - G units go.
            protected = [live[g.name].at[jnp.argmax(live[g.name])].set(jnp.inf) for g in parsed]
            sizes = [x.shape[0] for x in protected]
            total = sum(sizes)
            flat = _keep_lowest_pruned(jnp.concatenate(protected), _count(target, total, total - len(parsed)))
            keep, start = {}, 0
            for g, n in zip(parsed, sizes):
                keep[g.name] = flat[start:start + n]
                start += n
        return {name: k & old[name] for name, k in keep.items()}

    def init(params, key=None, batches=None):
        del key, batches
        counts = _check_groups(parsed, params)
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


# --------------------------------------------------------------------------- layer pruning

def _check_layers(layers: Any) -> list[str]:
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"layer_drop.layers must be a non-empty list of path prefixes, got {layers!r}")
    layers = list(layers)
    for p in layers:
        if not isinstance(p, str) or not p or p.endswith("/"):
            raise ValueError(f"layer_drop.layers entry {p!r} must be a non-empty path prefix such as 'block_0'")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layer_drop.layers {layers} name a layer twice")
    for a in layers:
        for b in layers:
            if a != b and b.startswith(a + "/"):
                raise ValueError(f"layer_drop.layers {a!r} contains {b!r}; layers must not nest")
    return layers


def dropped_indices(num_layers: int, drop: Any) -> list[int]:
    """Resolves `drop` (a list of indices, or {"policy": "top"|"bottom", "count": k}) to sorted indices.

    "top" drops the k highest indices (Sajjad et al.'s top-layer dropping),
    "bottom" the k lowest. Negative indices count from the end, as in Python.
    """
    if isinstance(drop, Mapping):
        unknown = sorted(set(drop) - {"policy", "count"})
        if unknown:
            raise ValueError(f"layer_drop.drop {dict(drop)!r}: unknown key(s) {unknown}; use 'policy' and 'count'")
        policy, count = drop.get("policy"), drop.get("count")
        if policy not in DROP_POLICIES:
            raise ValueError(f"layer_drop.drop policy {policy!r} is not one of {list(DROP_POLICIES)}")
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) \
                or not 0 <= count <= num_layers:
            raise ValueError(f"layer_drop.drop count {count!r} must be an integer in [0, {num_layers}] "
                             f"(there are {num_layers} layers)")
        count = int(count)
        return list(range(num_layers - count, num_layers)) if policy == "top" else list(range(count))
    if isinstance(drop, (str, bytes)) or not isinstance(drop, Sequence):
        raise ValueError(f"layer_drop.drop must be a list of layer indices or "
                         f"{{'policy': 'top'|'bottom', 'count': k}}, got {drop!r}")
    out = []
    for i in drop:
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise ValueError(f"layer_drop.drop entry {i!r} is not an integer layer index")
        if not -num_layers <= i < num_layers:
            raise ValueError(f"layer_drop.drop index {i} is out of range for {num_layers} layers")
        out.append(int(i) % num_layers)
    if len(set(out)) != len(out):
        raise ValueError(f"layer_drop.drop {list(drop)!r} names a layer twice")
    return sorted(out)


@register("layer_drop")
def layer_drop(layers: Sequence[str], drop: Any, *, zero: Sequence[str] = DEFAULT_ZERO) -> Transform:
    """Layer pruning: whole residual blocks become identities (and are removed at export).

    Drops Transformer layers as Sajjad et al. 2020 ("Poor Man's BERT:
    Smaller and Faster Transformer Models") do after training, e.g. the top
    layers, and as LayerDrop (Fan et al. 2019, "Reducing Transformer Depth on
    Demand with Structured Dropout") makes robust to. `layers` lists the
    blocks' path prefixes ("block_0", "block_1", ...); `drop` is a list of
    indices into it or {"policy": "top"|"bottom", "count": k}. `zero` are
    full-match regexes relative to a prefix for the parameters whose zeroing
    makes the block an identity in a pre-LN residual network; the default
    ("attn/out/.*", "ffn_out/.*") fits our CharTransformer, whose block is
    x + attn(ln(x)) then x + ffn(ln(x)).

    State: {"kept": bool[len(layers)]} (False for dropped layers); apply
    zeroes the `zero` leaves of dropped layers, update re-zeroes them.
    """
    layers = _check_layers(layers)
    dropped = dropped_indices(len(layers), drop)
    if isinstance(zero, str):
        zero = [zero]
    if not zero:
        raise ValueError("layer_drop.zero must list at least one regex")
    patterns = []
    for z in zero:
        try:
            re.compile(z)
        except (re.error, TypeError) as e:
            raise ValueError(f"layer_drop.zero {z!r} is not a valid regular expression: {e}") from e
        patterns.append(z)
    compiled = [re.compile(re.escape(prefix) + "/(?:" + "|".join(f"(?:{z})" for z in patterns) + ")")
                for prefix in layers]

    def layer_of(path: str) -> Optional[int]:
        for i, c in enumerate(compiled):
            if c.fullmatch(path):
                return i
        return None

    def init(params, key=None, batches=None):
        del key, batches
        paths = list(leaves_by_path(params))
        for prefix in layers:
            if not any(q.startswith(prefix + "/") for q in paths):
                raise ValueError(f"layer_drop: no parameter under layer prefix {prefix!r}; "
                                 f"paths look like: {', '.join(paths[:20])}")
        for z in patterns:
            if not any(re.fullmatch(re.escape(prefix) + "/(?:" + z + ")", q) for prefix in layers for q in paths):
                raise ValueError(f"layer_drop.zero {z!r} matches no parameter under {layers}")
        for i in dropped:
            if not any(compiled[i].fullmatch(q) for q in paths):
                raise ValueError(f"layer_drop: layer {layers[i]!r} has no parameter matching zero {patterns}; "
                                 f"zeroing nothing would not drop it")
        kept = jnp.asarray([i not in dropped for i in range(len(layers))], bool)
        state = {"kept": kept}
        return {PARAMS: zeroed(params, state)}, state

    def zeroed(params, state):
        kept = state["kept"]

        def zero_leaf(kp, leaf):
            i = layer_of(path_str(kp))
            return leaf if i is None else jnp.where(kept[i], leaf, jnp.zeros((), leaf.dtype))

        return jax.tree_util.tree_map_with_path(zero_leaf, params)

    def apply(trainable, state):
        return zeroed(trainable[PARAMS], state)

    def project(trainable, state):
        return dict(trainable, **{PARAMS: zeroed(trainable[PARAMS], state)})

    def update(trainable, state, grads, step):
        del grads, step
        return project(trainable, state), state

    def export(params, state, model_config):
        gone = [i for i, k in enumerate(np.asarray(state["kept"])) if not k]
        return drop_layers_params(params, layers, gone), drop_layers_config(model_config, gone)

    return Transform(init, apply, update, project, export=export, name="layer_drop")


# --------------------------------------------------------------------------- export helpers

def shrink_params(params: Any, groups: Sequence[Mapping[str, Any]], unit_masks: Mapping[str, Any]) -> dict:
    """The params with pruned units removed: np.take of the kept units along each member axis.

    `params` are the effective (masked) params, a nested dict; `unit_masks`
    maps group names to bool keep-vectors (a structured_prune state's
    "masks"). Periodic members keep every index whose unit is kept. Returns
    a nested dict of numpy arrays; leaves of no group are copied unchanged.
    """
    parsed = _parse_groups(groups)
    counts = _check_groups(parsed, params)
    keep = {}
    for g in parsed:
        if g.name not in unit_masks:
            raise ValueError(f"shrink_params: no unit mask for group {g.name!r}; masks are given for "
                             f"{sorted(unit_masks)}")
        k = np.asarray(unit_masks[g.name]).astype(bool)
        if k.shape != (counts[g.name],):
            raise ValueError(f"shrink_params: the mask of group {g.name!r} has shape {k.shape}, "
                             f"expected ({counts[g.name]},)")
        keep[g.name] = k
    by_path: dict[str, list[tuple[_Member, str]]] = {}
    for g in parsed:
        for m in g.members:
            by_path.setdefault(m.path, []).append((m, g.name))

    def shrink(kp, leaf):
        x = leaf if isinstance(leaf, Coded) else np.asarray(leaf)
        for m, name in by_path.get(path_str(kp), ()):
            shape = leaf_shape(x)
            axis = m.axis % len(shape)
            index = np.nonzero(m.unit_vector(keep[name], shape[axis], xp=np))[0]
            x = take(x, index, axis=axis)
        return x

    return _as_nested(jax.tree_util.tree_map_with_path(shrink, params))


def _as_nested(tree: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _as_nested(v) for k, v in tree.items()}
    return tree


def shrink_config(model_config: Mapping[str, Any], groups: Sequence[Mapping[str, Any]],
                  unit_masks: Mapping[str, Any]) -> dict:
    """A copy of `model_config` whose groups' `config_field`s hold the kept unit counts.

    ["hidden", 0] sets hidden[0], ["num_heads", 2] sets num_heads[2],
    ["dense_features"] sets an int field. An indexed field must already be a
    per-layer list (or tuple, kept as such): turning an int such as
    num_heads=4 into a per-layer list would need the layer count, so write
    the config with one entry per layer. Groups without a config_field are
    skipped.
    """
    config = {k: (list(v) if isinstance(v, list) else v) for k, v in dict(model_config).items()}
    for g in _parse_groups(groups):
        if g.config_field is None:
            continue
        if g.name not in unit_masks:
            raise ValueError(f"shrink_config: no unit mask for group {g.name!r}; masks are given for "
                             f"{sorted(unit_masks)}")
        kept = int(np.sum(np.asarray(unit_masks[g.name]).astype(bool)))
        field = g.config_field[0]
        if len(g.config_field) == 1:
            config[field] = kept
            continue
        index = g.config_field[1]
        value = config.get(field)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ValueError(f"shrink_config: group {g.name!r} sets {field}[{index}] but model.{field} is "
                             f"{value!r}, not a per-layer list; write it with one entry per layer")
        if not 0 <= index < len(value):
            raise ValueError(f"shrink_config: group {g.name!r} sets {field}[{index}] but model.{field} "
                             f"{list(value)} has {len(value)} entries")
        new = list(value)
        new[index] = kept
        config[field] = tuple(new) if isinstance(value, tuple) else new
    return config


def drop_layers_params(params: Any, layers: Sequence[str], dropped: Any) -> dict:
    """The params without the dropped layers, the rest renumbered consecutively.

    `dropped` is a list of indices into `layers` (or a policy dict, see
    `dropped_indices`). The j-th kept layer, in the order of `layers`, moves
    to the prefix `layers[j]` (so block_0, block_2 kept of three become
    block_0, block_1). Returns a nested dict of numpy arrays.
    """
    layers = _check_layers(layers)
    drop = set(dropped_indices(len(layers), dropped))
    kept = [i for i in range(len(layers)) if i not in drop]
    rename = {layers[i]: layers[j] for j, i in enumerate(kept)}
    flat = leaves_by_path(params)
    for prefix in layers:
        if not any(p.startswith(prefix + "/") for p in flat):
            raise ValueError(f"drop_layers_params: no parameter under layer prefix {prefix!r}")
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        owner = next((pre for pre in layers if path.startswith(pre + "/")), None)
        leaf = leaf if isinstance(leaf, Coded) else np.asarray(leaf)
        if owner is None:
            out[path] = leaf
        elif owner in rename:
            out[rename[owner] + path[len(owner):]] = leaf
    return nest_paths(out)


def drop_layers_config(model_config: Mapping[str, Any], dropped: Any,
                       list_fields: Sequence[str] = ("num_heads", "ffn_dim"),
                       count_field: str = "num_layers") -> dict:
    """A copy of `model_config` for the model without the dropped layers.

    `count_field` (the layer count) drops by len(dropped); each of
    `list_fields` that is a per-layer list loses the dropped entries (an int
    field, the same for every layer, stays; an absent one is skipped).
    """
    config = dict(model_config)
    if count_field not in config:
        raise ValueError(f"drop_layers_config: model config has no {count_field!r} field")
    n = config[count_field]
    drop = set(dropped_indices(int(n), dropped))
    for field in list_fields:
        value = config.get(field)
        if isinstance(value, (list, tuple)):
            if len(value) != n:
                raise ValueError(f"drop_layers_config: model.{field} {list(value)} has {len(value)} entries "
                                 f"but model.{count_field} is {n}")
            new = [v for i, v in enumerate(value) if i not in drop]
            config[field] = tuple(new) if isinstance(value, tuple) else new
    config[count_field] = int(n) - len(drop)
    return config
