"""What a model costs: parameters, nonzeros, bytes and FLOPs.

Sizes follow the results.json contract (DESIGN.md): `bytes_exported` is
measured on disk, `bits_per_weight` = 8 * bytes_exported / params_total (so
indices, scales, biases and the container's header all count) and `ratio`
= bytes_dense_fp32 / bytes_exported.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np

# The name of the nested jit in which a model computes a depthwise convolution as shifted
# multiply-adds (experiments.models.depthwise_conv): count_flops counts it as that convolution.
DEPTHWISE_CONV = "depthwise_conv"


def params_total(params: Any) -> int:
    """Number of scalar parameters in the pytree."""
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))


def params_nonzero(params: Any) -> int:
    """Number of parameters that are not exactly zero."""
    return int(sum(int(jnp.count_nonzero(x)) for x in jax.tree_util.tree_leaves(params)))


def bytes_dense_fp32(params: Any) -> int:
    """Bytes of the parameters stored densely as float32 (4 per parameter, no header)."""
    return 4 * params_total(params)


def weight_matrices(params: Any) -> list[Any]:
    """The leaves with two or more axes (kernels, embeddings): what Han et al. 2015 count as weights."""
    return [x for x in jax.tree_util.tree_leaves(params) if np.ndim(x) >= 2]


def size_report(params: Any, exported_path: str) -> dict[str, float]:
    """The `compression` block of results.json for `params` exported to `exported_path`.

    Besides the contract's keys it reports `weights_total` / `weights_nonzero`
    over weight matrices only (biases and norms excluded), the measure of the
    pruning papers (Han et al. 2015 count weights, not bytes).
    """
    total = params_total(params)
    exported = os.path.getsize(exported_path)
    dense = bytes_dense_fp32(params)
    matrices = weight_matrices(params)
    return {
        "params_total": total,
        "params_nonzero": params_nonzero(params),
        "weights_total": params_total(matrices),
        "weights_nonzero": params_nonzero(matrices),
        "bits_per_weight": 8.0 * exported / total,
        "bytes_dense_fp32": dense,
        "bytes_exported": exported,
        "ratio": dense / exported,
    }


def _dot_general_flops(eqn) -> int:
    lhs, rhs = (v.aval.shape for v in eqn.invars)
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    contract = math.prod(lhs[d] for d in lhs_contract)
    batch = math.prod(lhs[d] for d in lhs_batch)
    lhs_free = math.prod(s for d, s in enumerate(lhs) if d not in (*lhs_contract, *lhs_batch))
    rhs_free = math.prod(s for d, s in enumerate(rhs) if d not in (*rhs_contract, *rhs_batch))
    return 2 * batch * lhs_free * rhs_free * contract


def _conv_flops(eqn) -> int:
    rhs_shape = eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    dn = eqn.params["dimension_numbers"]
    # rhs_spec = (out feature dim, in feature dim, *spatial dims) as indices into the kernel shape.
    kernel_in = rhs_shape[dn.rhs_spec[1]]
    kernel_spatial = math.prod(rhs_shape[d] for d in dn.rhs_spec[2:])
    # Each output element is a dot over (in features of its group) x (kernel window).
    return 2 * math.prod(out_shape) * kernel_in * kernel_spatial


def _jaxpr_flops(jaxpr) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in ("jit", "pjit") and eqn.params.get("name") == DEPTHWISE_CONV:
            # Each output element is a K x K window of its own channel; the body is elementwise.
            total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(eqn.invars[1].aval.shape[:2])
            continue
        if name == "dot_general":
            total += _dot_general_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        multiplier = eqn.params.get("length", 1) if name == "scan" else 1
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            total += multiplier * _jaxpr_flops(getattr(sub, "jaxpr", sub))
    return total


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Multiply-add FLOPs (2 per MAC) of the matmuls and convolutions `fn(*args)` runs.

    Counts from the traced jaxpr, so Dense layers, convolutions and attention
    (einsums lower to dot_general) are counted however a model writes them,
    including inside jit, remat and scan (times its length), and so is a
    depthwise convolution written as shifted multiply-adds inside a jit named
    DEPTHWISE_CONV. Elementwise ops are not counted, as in the FLOP tables of
    the papers we reproduce.
    """
    closed = jax.make_jaxpr(fn)(*args, **kwargs)
    return _jaxpr_flops(closed.jaxpr)
