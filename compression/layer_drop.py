"""Layer pruning: whole residual blocks become identities, and the export removes them.

Drops Transformer layers as Sajjad et al. 2020 ("Poor Man's BERT: Smaller
and Faster Transformer Models") do, e.g. the top layers. `layer_drop` zeroes
the parameters that make a pre-LN residual block an identity (its attention
output projection and its second FFN layer), so x + attn(ln(x)) = x and
x + ffn(ln(x)) = x; its export is the shallower model
(`compression.structured_export.drop_layers_params` / `drop_layers_config`).
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from compression.registry import register
from compression.selection import leaves_by_path, path_str
from compression.transform import PARAMS, Transform

DROP_POLICIES = ("top", "bottom")
DEFAULT_ZERO = ("attn/out/.*", "ffn_out/.*")


def check_layers(layers: Any, setting: str = "layer_drop.layers") -> list[str]:
    """`layers` as a list of distinct, non-nested parameter path prefixes, or a ValueError naming `setting`."""
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise ValueError(f"{setting} must be a non-empty list of path prefixes, got {layers!r}")
    layers = list(layers)
    for p in layers:
        if not isinstance(p, str) or not p or p.endswith("/"):
            raise ValueError(f"{setting} entry {p!r} must be a non-empty path prefix such as 'block_0'")
    if len(set(layers)) != len(layers):
        raise ValueError(f"{setting} {layers} name a layer twice")
    for a in layers:
        for b in layers:
            if a != b and b.startswith(a + "/"):
                raise ValueError(f"{setting} {a!r} contains {b!r}; layers must not nest")
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

    Dropping no layer (an empty list, count 0) is allowed, a control that
    changes nothing; so is dropping every layer (the export is the embedding
    and the output head; the driver prints a note when it happens).

    State: {"kept": bool[len(layers)]} (False for dropped layers); apply
    zeroes the `zero` leaves of dropped layers, update re-zeroes them.
    """
    layers = check_layers(layers)
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
        # Each layer's zeroed parameters, relative to its prefix.
        zeroed_of = [{q[len(prefix) + 1:] for q in paths if c.fullmatch(q)} for prefix, c in zip(layers, compiled)]
        for i in dropped:
            if not zeroed_of[i]:
                raise ValueError(f"layer_drop: layer {layers[i]!r} has no parameter matching zero {patterns}; "
                                 f"zeroing nothing would not drop it")
            # Zeroing makes the block an identity only if every parameter the zero patterns name
            # is there to be zeroed: one that another layer has and this one lacks was taken out of
            # the stored parameters by a later stage (sharing, clustering, factorization) and
            # would come back, unzeroed, through that stage's apply.
            for j, prefix in enumerate(layers):
                missing = sorted(zeroed_of[j] - zeroed_of[i])
                if j != i and missing:
                    raise ValueError(
                        f"layer_drop: layer {layers[i]!r} has no {missing[0]!r}, which layer {prefix!r} has and "
                        f"zero {patterns} names, so zeroing the rest would not make it an identity; a stage after "
                        f"layer_drop in the chain (cross-layer sharing, clustering, factorization) may have "
                        f"restructured it: put layer_drop after that stage (if the layer really lacks it, e.g. "
                        f"every head pruned, list only the patterns it has in layer_drop.zero)")
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
        # Imported here: the export helpers validate with this module's dropped_indices.
        from compression.structured_export import drop_layers_config, drop_layers_params

        gone = [i for i, k in enumerate(np.asarray(state["kept"])) if not k]
        return drop_layers_params(params, layers, gone), drop_layers_config(model_config, gone, layers=layers)

    def check(params, state):
        # A later stage that rebuilds a dropped layer's zeroed leaves in its own apply (clustering's
        # centroids, a factorization) would switch the layer back on: its effective leaves must be zero.
        # Under a jitted init (several devices) the values are not known; the driver's export check,
        # which compares the export with the trained model, still catches it there.
        if isinstance(state["kept"], jax.core.Tracer):
            return
        kept = np.asarray(state["kept"])
        for p, leaf in leaves_by_path(params).items():
            i = layer_of(p)
            if i is not None and not kept[i] and np.any(np.asarray(leaf) != 0):
                raise ValueError(f"layer_drop: {p} of dropped layer {layers[i]!r} is not zero once every stage "
                                 f"has applied, so the layer is not an identity")

    return Transform(init, apply, update, project, export=export, name="layer_drop", check=check)
