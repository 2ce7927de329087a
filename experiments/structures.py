"""Structured-pruning groups and layer prefixes for the lab's models (experiments/models.py).

`compression.structured_pruning` knows nothing about models: a *group* names
the parameter slices that make up one kind of unit. This module writes those
groups down for our models, from the parameter paths Flax gives them (checked
with jax.eval_shape in tests/test_structured_pruning.py):

    MLP              Dense_{i}/kernel (in, out), Dense_{i}/bias (out,)
    LeNet5           Conv_{i}/kernel (5, 5, in, out), Conv_{i}/bias, Dense_0, Dense_1
    CharTransformer  block_{i}/attn/{query,key,value}/kernel (width, heads, head_dim),
                     .../bias (heads, head_dim), attn/out/kernel (heads, head_dim, width),
                     block_{i}/ffn_in (width, ffn), ffn_out (ffn, width)

Each group's `config_field` tells `compression.structured_export.shrink_config`
which model setting its kept count goes to. Indexed fields must be per-layer lists in the config
(e.g. num_heads=[4, 4, 4, 4], not 4) for the export to write them.
Group names avoid '/' so they are safe state (checkpoint) keys.
"""
from __future__ import annotations

from typing import Sequence


def mlp_neuron_groups(hidden: Sequence[int]) -> list[dict]:
    """One group per hidden layer of an MLP: neuron j is column j of Dense_i's kernel, its bias and
    row j of Dense_{i+1}'s kernel; scored by its incoming weights (the default first member)."""
    return [{"name": f"Dense_{i}_neurons",
             "members": [[f"Dense_{i}/kernel", 1], [f"Dense_{i}/bias", 0], [f"Dense_{i + 1}/kernel", 0]],
             "config_field": ["hidden", i]}
            for i in range(len(hidden))]


def lenet5_filter_groups(conv_features: Sequence[int] = (20, 50)) -> list[dict]:
    """One group per conv layer of LeNet5: filter j is output channel j of Conv_i (kernel axis 3, bias)
    and input channel j of the next layer: Conv_{i+1}'s kernel axis 2, or for the last conv the rows
    of Dense_0 that read channel j of the flattened feature map (channels fastest, so period =
    conv_features[-1]). Scored by the L1 norm of the filter (Li et al. 2017)."""
    groups = []
    last = len(conv_features) - 1
    for i in range(len(conv_features)):
        following = ([f"Conv_{i + 1}/kernel", 2] if i < last
                     else ["Dense_0/kernel", 0, int(conv_features[-1])])
        groups.append({"name": f"Conv_{i}_filters",
                       "members": [[f"Conv_{i}/kernel", 3], [f"Conv_{i}/bias", 0], following],
                       "config_field": ["conv_features", i]})
    return groups


def lenet5_neuron_groups() -> list[dict]:
    """LeNet5's dense hidden layer (500 in the Caffe form): Dense_0 columns, its bias, Dense_1 rows."""
    return [{"name": "Dense_0_neurons",
             "members": [["Dense_0/kernel", 1], ["Dense_0/bias", 0], ["Dense_1/kernel", 0]],
             "config_field": ["dense_features"]}]


def transformer_head_groups(num_layers: int, importance: bool = True) -> list[dict]:
    """One group per block of attention heads: head h is slice h of the query/key/value kernels
    (axis 1) and biases (axis 0) and of the output kernel (axis 0). By weight norm a head is scored by
    the summed norms of its four kernel slices (query, key, value and output), all its weights but the
    biases. Its `importance` slice is its slice of the output kernel (axis 0): the head's output
    enters the block only through it, so scaling that slice by xi_h is Michel et al. 2019's mask on
    the head, and `structured_prune(criterion="taylor_mask")` reads I_h = |d loss / d xi_h| from it.
    `importance=False` leaves that entry out: the groups as the committed L1-norm runs stored them
    (configs/michel2019_char_transformer.py, variant K_l1)."""
    groups = []
    for i in range(num_layers):
        a = f"block_{i}/attn"
        qkv = [f"{a}/{name}" for name in ("query", "key", "value")]
        group = {"name": f"block_{i}_heads",
                 "members": ([[f"{p}/kernel", 1] for p in qkv] + [[f"{p}/bias", 0] for p in qkv]
                             + [[f"{a}/out/kernel", 0]]),
                 "score": [[f"{p}/kernel", 1] for p in qkv] + [[f"{a}/out/kernel", 0]],
                 "config_field": ["num_heads", i]}
        if importance:
            group["importance"] = [[f"{a}/out/kernel", 0]]
        groups.append(group)
    return groups


def transformer_layers(num_layers: int) -> list[str]:
    """The CharTransformer's block prefixes, in order, for `layer_drop`."""
    return [f"block_{i}" for i in range(num_layers)]

