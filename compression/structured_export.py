"""The structural export: a physically smaller model of the same architecture, and its config.

`shrink_params` / `shrink_config` turn the effective (masked) params and a
`structured_prune` state's unit masks into a smaller model whose predictions
equal the masked model's (pruned units taken out of every member slice,
`compression.unit_groups`); `drop_layers_params` / `drop_layers_config` do
the same for the layers `layer_drop` dropped (apply `shrink_*` first, then
`drop_layers_*`: a layer's groups are named by its original index). Leaves
already encoded for the export (`compression.export.Coded`) are shrunk with
their scales and codes (`compression.export.take`).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import numpy as np

from compression.export import Coded, leaf_shape, take
from compression.layer_drop import check_layers, dropped_indices
from compression.selection import leaves_by_path, nest_paths, path_str
from compression.unit_groups import UnitSlice, check_groups, parse_groups


def shrink_params(params: Any, groups: Sequence[Mapping[str, Any]], unit_masks: Mapping[str, Any]) -> dict:
    """The params with pruned units removed: np.take of the kept units along each member axis.

    `params` are the effective (masked) params, a nested dict; `unit_masks`
    maps group names to bool keep-vectors (a structured_prune state's
    "masks"). Periodic members keep every index whose unit is kept. Returns
    a nested dict of numpy arrays; leaves of no group are copied unchanged.
    """
    parsed = parse_groups(groups)
    counts = check_groups(parsed, params)
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
    by_path: dict[str, list[tuple[UnitSlice, str]]] = {}
    for g in parsed:
        for m in g.members:
            by_path.setdefault(m.path, []).append((m, g.name))

    def shrink(kp, leaf):
        x = leaf if isinstance(leaf, Coded) else np.asarray(leaf)
        for m, name in by_path.get(path_str(kp), ()):
            shape = leaf_shape(x)
            axis = m.axis % len(shape)
            x = take(x, m.kept_indices(keep[name], shape[axis]), axis=axis)
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
    for g in parse_groups(groups):
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


def _kept_layer_names(layers: Sequence[str], dropped: Any) -> dict[str, str]:
    # {old prefix: new prefix} of the kept layers: the j-th kept one moves to layers[j].
    drop = set(dropped_indices(len(layers), dropped))
    kept = [i for i in range(len(layers)) if i not in drop]
    return {layers[i]: layers[j] for j, i in enumerate(kept)}


def _renamed_path(path: str, layers: Sequence[str], rename: Mapping[str, str]) -> Any:
    # `path` under its layer's new prefix; None when its layer is dropped; unchanged outside the layers.
    owner = next((pre for pre in layers if path.startswith(pre + "/")), None)
    if owner is None:
        return path
    return rename[owner] + path[len(owner):] if owner in rename else None


def drop_layers_params(params: Any, layers: Sequence[str], dropped: Any) -> dict:
    """The params without the dropped layers, the rest renumbered consecutively.

    `dropped` is a list of indices into `layers` (or a policy dict, see
    `dropped_indices`). The j-th kept layer, in the order of `layers`, moves
    to the prefix `layers[j]` (so block_0, block_2 kept of three become
    block_0, block_1). Returns a nested dict of numpy arrays.
    """
    layers = check_layers(layers)
    rename = _kept_layer_names(layers, dropped)
    flat = leaves_by_path(params)
    for prefix in layers:
        if not any(p.startswith(prefix + "/") for p in flat):
            raise ValueError(f"drop_layers_params: no parameter under layer prefix {prefix!r}")
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        new_path = _renamed_path(path, layers, rename)
        if new_path is not None:
            out[new_path] = leaf if isinstance(leaf, Coded) else np.asarray(leaf)
    return nest_paths(out)


def drop_layers_config(model_config: Mapping[str, Any], dropped: Any,
                       list_fields: Sequence[str] = ("num_heads", "ffn_dim"),
                       count_field: str = "num_layers", layers: Sequence[str] = (),
                       path_fields: Sequence[str] = ("low_rank",)) -> dict:
    """A copy of `model_config` for the model without the dropped layers.

    `count_field` (the layer count) drops by len(dropped); each of
    `list_fields` that is a per-layer list loses the dropped entries (an int
    field, the same for every layer, stays; an absent one is skipped). Each of
    `path_fields` that is a mapping keyed by module path (a low-rank export's
    {path: rank}) loses the dropped layers' entries and renames the kept ones
    as `drop_layers_params` renames their parameters, given the `layers`.
    """
    config = dict(model_config)
    for field in path_fields:
        value = config.get(field)
        if value:
            if not layers:
                raise ValueError(f"drop_layers_config: model.{field} is keyed by module path; pass the layers' "
                                 f"path prefixes to rename it")
            rename = _kept_layer_names(check_layers(layers), dropped)
            renamed = {_renamed_path(p, layers, rename): v for p, v in dict(value).items()}
            config[field] = dict(sorted((p, v) for p, v in renamed.items() if p is not None))
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
