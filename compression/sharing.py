"""Cross-layer parameter sharing (ALBERT, Lan et al. 2020): one array used by several layers.

`share(layers, select)` ties, for every parameter path r under the first
layer prefix whose relative path full-matches `select`, the parameters
layers[i]/r of every listed layer to one array. ALBERT's variants on a
Transformer: all of a block's parameters (`select=".*"`), the attention only
(`"attn/.*|ln_attn/.*"`), the FFN only (`"ffn_in/.*|ffn_out/.*|ln_ffn/.*"`).

The trainable keeps the shared array once, at the first layer's path (the
other layers' copies are gone from it); `apply` hands every layer that array,
so the gradient the optimizer sees is the sum of the gradients of its uses,
one array with one summed gradient. The export writes it once: every other
layer's path becomes an `Alias` of the first's, which the export file records
by name and `load_params` resolves, so the loaded model is the unmodified
model with its layers reading the same values. A later stage in a chain may
make the copies differ (a quantizer with per-layer scales after share); those
copies are then written separately, with a warning, since the file stores what
the model computes: put share after such a stage.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from compression.export import Alias, Coded, leaf_shape
from compression.layer_drop import check_layers
from compression.registry import register
from compression.selection import leaves_by_path, nest_paths
from compression.transform import PARAMS, Transform, no_update


def shared_paths(params: Any, layers: Sequence[str], select: str) -> dict[str, list[str]]:
    """{first layer's path: [every other layer's path]} of the tied parameters, or a ValueError naming the mismatch."""
    flat = leaves_by_path(params)
    pattern = re.compile(select)
    first = layers[0]
    relative = sorted(p[len(first) + 1:] for p in flat if p.startswith(first + "/")
                      and pattern.fullmatch(p[len(first) + 1:]))
    if not relative:
        raise ValueError(f"share: no parameter under {first!r} matches select {select!r}; paths there look like "
                         f"{sorted(p for p in flat if p.startswith(first + '/'))[:6]}")
    tied = {}
    for r in relative:
        source = f"{first}/{r}"
        members = [f"{layer}/{r}" for layer in layers[1:]]
        for m in members:
            if m not in flat:
                raise ValueError(f"share: {source} has no counterpart {m}; the layers {list(layers)} must have the "
                                 f"same parameters under select {select!r}")
            if leaf_shape(flat[m]) != leaf_shape(flat[source]):
                raise ValueError(f"share: {m} has shape {leaf_shape(flat[m])} but {source} has "
                                 f"{leaf_shape(flat[source])}; a sharing group must tie layers of the same shapes "
                                 f"(narrow share.select or share.layers)")
        tied[source] = members
    return tied


def same_values(a: Any, b: Any) -> bool:
    """Whether two export leaves (arrays, or `Coded` leaves by their values) hold the same values."""
    a = np.asarray(a.values if isinstance(a, Coded) else a)
    b = np.asarray(b.values if isinstance(b, Coded) else b)
    return a.shape == b.shape and bool(np.array_equal(a, b))


@register("share")
def share(layers: Sequence[str], select: str = ".*") -> Transform:
    """ALBERT's cross-layer sharing (Lan et al. 2020): the `select`ed parameters of `layers` are one array.

    `layers` are path prefixes ("block_0", "block_1", ...), at least two;
    `select` a regex full-matched against paths relative to a layer. The
    shared array starts as the first layer's parameters.
    """
    layers = check_layers(layers, "share.layers")
    if len(layers) < 2:
        raise ValueError(f"share.layers {layers} must name at least two layers to tie")
    try:
        re.compile(select)
    except (re.error, TypeError) as e:
        raise ValueError(f"share.select {select!r} is not a valid regular expression: {e}") from e

    def init(params, key=None, batches=None):
        del key, batches
        tied = shared_paths(params, layers, select)
        flat = dict(leaves_by_path(params))
        for members in tied.values():
            for m in members:
                del flat[m]
        # The state names the shared arrays (its keys); the values count their other uses.
        return {PARAMS: nest_paths(flat)}, {"tied": {s: jnp.asarray(len(m), jnp.int32) for s, m in tied.items()}}

    def members_of(source):
        return [layers[i] + source[len(layers[0]):] for i in range(1, len(layers))]

    def apply(trainable, state):
        flat = dict(leaves_by_path(trainable[PARAMS]))
        for source in state["tied"]:
            for m in members_of(source):
                flat[m] = flat[source]
        return nest_paths(flat)

    def export(params, state, model_config):
        flat = dict(leaves_by_path(params))
        apart = []
        for source in state["tied"]:
            for m in members_of(source):
                if same_values(flat[m], flat[source]):
                    flat[m] = Alias(source)
                else:
                    apart.append(m)
        if apart:
            # A later stage made the copies differ (per-layer quantizer scales; a dropped layer's
            # zeroed projection, which its own export then removes): the file stores what the
            # model computes, so those copies are written separately.
            logging.warning("share: %d tied parameter(s) differ from their shared array after the later stages "
                            "(%s%s) and are stored separately; put share after a stage that should act on the "
                            "one shared array", len(apart), ", ".join(apart[:4]), ", ..." if len(apart) > 4 else "")
        return nest_paths(flat), model_config

    return Transform(init, apply, no_update, export=export, name="share")
