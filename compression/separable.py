"""Depthwise-separable factorization of trained convolutions (after MobileNet, Howard et al. 2017).

A K x K convolution with kernel W (K, K, C_in, C_out) sums, for each output
channel o, sum_c sum_k W[k, c, o] x[k, c]. A depthwise K x K filter d_c per
input channel followed by a pointwise 1 x 1 mixing p_c[o] computes
sum_c p_c[o] sum_k d_c[k] x[k, c]: the kernel d_c (x) p_c, rank one in each
input channel's (K*K, C_out) slice. The best such split of a trained conv
takes, per input channel, the leading singular pair of that slice
(Eckart-Young), so a conv that is exactly separable is reproduced exactly,
and the squared error of the others is the sum of each slice's discarded
squared singular values. MobileNet trains separable blocks from scratch
(`experiments.models.MobileNetCNN`, blocks "separable"); this transform turns
a trained full conv into the pair and fine-tunes it: K*K*C_in + C_in*C_out
weights instead of K*K*C_in*C_out.

The trainable stores each selected kernel as {"depthwise": (K, K, 1, C_in),
"pointwise": (1, 1, C_in, C_out)} (Flax's depthwise kernel layout); `apply`
hands the model their product. The export writes the pair as the modules
M_dw (no bias) and M_pw (with M's bias) and sets the block's entry of the
model config's `config_field` to "factored", the block kind that runs them
with nothing in between.
"""
from __future__ import annotations

import re
from typing import Any

import jax.numpy as jnp
import numpy as np

from compression.export import Coded
from compression.registry import register
from compression.selection import kernel_module, leaves_by_path, nest_paths, selected_paths
from compression.transform import PARAMS, Transform, join_factors, no_update

BLOCK_INDEX = re.compile(r"(?:.*/)?[^/]*?_(\d+)$")


def rank1_split(kernel: Any) -> tuple[np.ndarray, np.ndarray]:
    """(depthwise (K, K, 1, C), pointwise (1, 1, C, O)): per input channel, the best rank-1 split of W[:, :, c, :]."""
    w = np.asarray(kernel, np.float64)
    if w.ndim != 4 or w.shape[0] * w.shape[1] < 2:
        raise ValueError(f"a depthwise-separable split needs a K x K convolution kernel (K, K, C_in, C_out) with "
                         f"K*K > 1, got shape {w.shape}")
    kh, kw, c_in, c_out = w.shape
    slices = w.reshape(kh * kw, c_in, c_out).transpose(1, 0, 2)  # (C_in, K*K, C_out)
    u, s, vt = np.linalg.svd(slices, full_matrices=False)
    root = np.sqrt(s[:, 0])
    depthwise = (u[:, :, 0] * root[:, None]).T.reshape(kh, kw, 1, c_in)
    pointwise = (vt[:, 0, :] * root[:, None]).reshape(1, 1, c_in, c_out)
    return depthwise, pointwise


def join(depthwise: Any, pointwise: Any) -> Any:
    """The full kernel (K, K, C, O) that the depthwise-pointwise pair computes: dw[..., 0, c] * pw[0, 0, c, o]."""
    return depthwise[:, :, 0, :, None] * pointwise[0, 0][None, None, :, :]


def split_error(kernel: Any) -> float:
    """||W - join(rank1_split(W))||_F^2: the sum over input channels of their slices' discarded squared singular values."""
    w = np.asarray(kernel, np.float64)
    return float(np.sum((w - join(*rank1_split(w))) ** 2))


def _module(path: str) -> tuple[str, int]:
    module = kernel_module(path, "separable.select")
    found = BLOCK_INDEX.fullmatch(module)
    if not found:
        raise ValueError(f"separable: module {module!r} has no block index (a name ending in _<i>, such as "
                         f"conv_2) to mark in the model config")
    return module, int(found.group(1))


@register("separable")
def separable(select: Any = r"conv_\d+/kernel", *, config_field: str = "blocks") -> Transform:
    """Trained K x K convolutions as depthwise + pointwise pairs (module docstring; Howard et al. 2017)."""

    def init(params, key=None, batches=None):
        del key, batches
        paths = selected_paths(params, select, what="separable.select")
        flat = dict(leaves_by_path(params))
        state = {}
        for p in paths:
            _module(p)
            w = flat.pop(p)
            depthwise, pointwise = rank1_split(w)
            flat[p + "/depthwise"] = jnp.asarray(depthwise, w.dtype)
            flat[p + "/pointwise"] = jnp.asarray(pointwise, w.dtype)
            # ||W - dw (x) pw||^2 at the split, from the split itself (split_error would factor W again).
            error = np.sum((np.asarray(w, np.float64) - join(depthwise, pointwise)) ** 2)
            state[p] = {"split_error": jnp.asarray(error, jnp.float32)}
        return {PARAMS: nest_paths(flat)}, state

    def apply(trainable, state):
        return join_factors(trainable[PARAMS], state, ("depthwise", "pointwise"), join)

    def export(params, state, model_config):
        flat = dict(leaves_by_path(params))
        config = dict(model_config)
        kinds = config.get(config_field, "full")  # absent: the model's default, every block full
        if state and isinstance(kinds, str):
            if "features" not in config:
                raise ValueError(f"separable: model.{config_field} is one kind for every block, and the model "
                                 f"config has no 'features' list to count the blocks by; list the kinds")
            kinds = ["full"] + [kinds] * (len(config["features"]) - 1)
        kinds = kinds if isinstance(kinds, str) else list(kinds)
        for p in state:
            module, index = _module(p)
            w = flat.pop(p)
            if isinstance(w, Coded):
                raise ValueError(f"{p} is encoded by an earlier stage ({w.codec}) and cannot be split; quantize "
                                 f"the depthwise and pointwise kernels instead (put quantize before separable)")
            depthwise, pointwise = rank1_split(w)
            flat[module + "_dw/kernel"] = depthwise.astype(np.float32)
            flat[module + "_pw/kernel"] = pointwise.astype(np.float32)
            if module + "/bias" in flat:
                flat[module + "_pw/bias"] = flat.pop(module + "/bias")
            if not 0 <= index < len(kinds):
                raise ValueError(f"separable: block {index} of {module} is outside model.{config_field} {kinds}")
            kinds[index] = "factored"
        config[config_field] = kinds
        return nest_paths(flat), config

    return Transform(init, apply, no_update, export=export, name="separable")
