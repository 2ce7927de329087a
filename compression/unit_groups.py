"""Unit groups: the structure structured pruning removes, as a value parsed once from plain data.

A *group* describes one kind of unit, e.g. the 300 hidden neurons of layer 0
of LeNet-300-100, as a mapping (plain data, so a config can hold it):

    {"name": "Dense_0_neurons",
     "members": [["Dense_0/kernel", 1], ["Dense_0/bias", 0], ["Dense_1/kernel", 0]],
     "score": [["Dense_0/kernel", 1]],         # optional; default: the first member
     "importance": [["Dense_1/kernel", 0]],    # optional; the slices a mask on the unit scales
     "config_field": ["hidden", 0]}            # optional; ["field"] or ["field", index]

Unit u of a member [path, axis] is the slice u along `axis` of the leaf at
`path` (paths are the '/'-joined parameter paths of `compression.selection`).
A member [path, axis, period] has `period` units, and unit u is every index i
along `axis` with i % period == u: the rows of a Dense kernel that read a
flattened conv feature map with channels fastest (Flax's NHWC reshape), e.g.
LeNet-5's 4x4x50 map feeding its dense 500 is ["Dense_0/kernel", 0, 50]. So
removing a neuron (or filter) removes the matching rows (input channels) of
the next layer too. All members of a group must agree on the number of
units; one (path, axis) belongs to at most one group. `importance` lists the
slices that a mask variable xi_u on unit u's output would multiply, jointly:
scaling them all by xi_u is the same function as scaling the unit's output
(for neuron j of Dense_0 above, row j of Dense_1's kernel, which reads it; for
an attention head, its slice of the output projection), so that
d loss / d xi_u = sum over those slices of w * d loss / d w. It is read only
by `structured_prune(criterion="taylor_mask")` (Michel et al. 2019's head
importance; Molchanov et al. 2017's Taylor criterion on a unit's mask).
Group names are
dict keys of the state (use names without '/', e.g. "block_0_heads", so
checkpointers that map keys to files accept them).

`parse_groups` turns the mappings into `UnitGroup`s of `UnitSlice`s (what
`structured_prune` and the shrinking export in `compression.structured_export`
read); a slice scores, masks and selects its units with the array-level
functions of `compression.pruning_masks` (`unit_norms`, `expand_unit_mask`).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from compression import pruning_masks
from compression.export import leaf_shape
from compression.selection import leaves_by_path

GROUP_KEYS = ("name", "members", "score", "importance", "config_field")


@dataclasses.dataclass(frozen=True)
class UnitSlice:
    """The units of one leaf: slices along `axis` of the leaf at `path`, or with `period`, every index
    i along `axis` with i % period == u for unit u."""

    path: str
    axis: int
    period: Optional[int] = None

    def units(self, shape: tuple[int, ...]) -> int:
        return shape[self.axis % len(shape)] if self.period is None else self.period

    def check(self, shape: tuple[int, ...], group: str) -> int:
        """Validates against the leaf's shape; returns the slice's number of units."""
        if not -len(shape) <= self.axis < len(shape):
            raise ValueError(f"structured_prune group {group!r}: axis {self.axis} is out of range for "
                             f"{self.path} of shape {shape}")
        length = shape[self.axis % len(shape)]
        if self.period is not None and length % self.period:
            raise ValueError(f"structured_prune group {group!r}: period {self.period} does not divide the "
                             f"length {length} of axis {self.axis} of {self.path} (shape {shape})")
        return self.units(shape)

    def norms(self, w, ord: int) -> jnp.ndarray:
        """The L1/L2 norm of each unit's slice of `w` (float32, one per unit)."""
        return pruning_masks.unit_norms(w, self.axis, ord, self.period)

    def mask(self, unit_keep, shape: tuple[int, ...]) -> jnp.ndarray:
        """The bool mask of a leaf of `shape` keeping the slices of the kept units."""
        return pruning_masks.expand_unit_mask(unit_keep, shape, self.axis, self.period)

    def broadcast(self, unit_values, shape: tuple[int, ...]) -> jnp.ndarray:
        """A per-unit vector of any dtype broadcast to `shape` (each unit's value over its slice): the
        per-unit scale xi of `structured_prune(criterion="taylor_mask")`."""
        return pruning_masks.expand_unit_mask(unit_values, shape, self.axis, self.period)

    def kept_indices(self, unit_keep, length: int) -> np.ndarray:
        """The indices along the axis (of `length`) whose unit is kept, for np.take."""
        return np.nonzero(np.asarray(pruning_masks.expand_unit_mask(unit_keep, (length,), 0, self.period)))[0]


@dataclasses.dataclass(frozen=True)
class UnitGroup:
    """One kind of unit: the slices it removes (`members`), those that score it (`score`), the model
    config field its kept count goes to (None, (field,) or (field, index)), and the slices a mask on
    the unit's output scales (`importance`; empty when the group does not say)."""

    name: str
    members: tuple[UnitSlice, ...]
    score: tuple[UnitSlice, ...]
    config_field: Optional[tuple] = None
    importance: tuple[UnitSlice, ...] = ()

    def scores(self, leaves: Mapping[str, Any], ord: int) -> jnp.ndarray:
        """Each unit's score: the sum over the score slices of its slice norm (`leaves`: {path: array})."""
        return sum(m.norms(leaves[m.path], ord) for m in self.score)


def _parse_slice(spec: Any, group: str, key: str) -> UnitSlice:
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
    return UnitSlice(path, int(axis), None if period is None else int(period))


def _parse_slices(specs: Any, group: str, key: str) -> tuple[UnitSlice, ...]:
    if isinstance(specs, (str, bytes)) or not isinstance(specs, Sequence) or not specs:
        raise ValueError(f"structured_prune group {group!r}: {key!r} must be a non-empty list of "
                         f"[path, axis] entries, got {specs!r}")
    return tuple(_parse_slice(m, group, key) for m in specs)


def _parse_config_field(field: Any, group: str) -> Optional[tuple]:
    if field is None:
        return None
    ok = (not isinstance(field, (str, bytes)) and isinstance(field, Sequence) and len(field) in (1, 2)
          and isinstance(field[0], str)
          and (len(field) == 1 or (isinstance(field[1], (int, np.integer))
                                   and not isinstance(field[1], (bool, np.bool_)) and field[1] >= 0)))
    if not ok:
        raise ValueError(f"structured_prune group {group!r}: config_field {field!r} must be [field] or "
                         f"[field, index] with a string field and an integer index >= 0")
    return (field[0],) if len(field) == 1 else (field[0], int(field[1]))


def parse_groups(groups: Any) -> list[UnitGroup]:
    """The `UnitGroup`s of a list of group mappings (see the module docstring); ValueErrors name the group."""
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
        unknown = sorted(set(g) - set(GROUP_KEYS))
        if unknown:
            raise ValueError(f"structured_prune group {name!r}: unknown key(s) {unknown}; "
                             f"a group has {list(GROUP_KEYS)}")
        members = _parse_slices(g.get("members"), name, "members")
        score = members[:1] if g.get("score") is None else _parse_slices(g["score"], name, "score")
        importance = () if g.get("importance") is None else _parse_slices(g["importance"], name, "importance")
        parsed.append(UnitGroup(name, members, score, _parse_config_field(g.get("config_field"), name),
                                importance))
    seen: dict[tuple[str, int], str] = {}
    for g in parsed:
        for m in g.members:
            key = (m.path, m.axis)
            if key in seen:
                raise ValueError(f"structured_prune: member [{m.path!r}, {m.axis}] belongs to both groups "
                                 f"{seen[key]!r} and {g.name!r}; an axis holds one kind of unit")
            seen[key] = g.name
    return parsed


def check_groups(groups: Sequence[UnitGroup], params: Any) -> dict[str, int]:
    """Validates paths, axes, periods and unit counts against `params`; returns {group name: units}.

    `params` may hold encoded (`compression.export.Coded`) leaves: only shapes are read.
    """
    shapes = {p: leaf_shape(leaf) for p, leaf in leaves_by_path(params).items()}
    counts = {}
    for g in groups:
        missing = [m.path for m in g.members + g.score + g.importance if m.path not in shapes]
        if missing:
            some = ", ".join(list(shapes)[:30])
            raise ValueError(f"structured_prune group {g.name!r}: no parameter at path(s) {sorted(set(missing))}; "
                             f"paths look like: {some}{', ...' if len(shapes) > 30 else ''}")
        units = {}
        for m in g.members + g.score + g.importance:
            units[(m.path, m.axis, m.period)] = m.check(shapes[m.path], g.name)
        first = g.members[0]
        n = units[(first.path, first.axis, first.period)]
        for (path, axis, period), u in units.items():
            if u != n:
                raise ValueError(f"structured_prune group {g.name!r}: {path} (axis {axis}"
                                 f"{'' if period is None else f', period {period}'}) has {u} units but "
                                 f"{first.path} (axis {first.axis}) has {n}; all members must agree")
        counts[g.name] = n
    return counts
