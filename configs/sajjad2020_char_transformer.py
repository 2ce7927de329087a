"""Sajjad et al. 2020, "Poor Man's BERT": dropping the top layers of a pretrained Transformer.

Paper: 40% of BERT's layers dropped (top layers) keeps 98% of its performance.
Ours: the trained 4-layer Shakespeare Transformer with its top K blocks dropped
(K in 1, 2, 3); the export is the smaller model (num_layers - K). Variants K[_ft][_quick]:
`_ft` fine-tunes, `_quick` is a CPU check (`:quick` alone is `1_quick`).
"""
from configs import common, transformer_pruning_common
from experiments import structures

LEVELS = (1, 2, 3)


def get_config(arg: str = "1"):
    arg = common.parse_arg(arg, __file__, layers=(1, LEVELS), ft=False, quick=False)
    config = transformer_pruning_common.pretrained_config(arg.ft, arg.quick)
    config.compression.stages = [{"technique": "layer_drop",
                                  "layers": structures.transformer_layers(config.model.num_layers),
                                  "drop": {"policy": "top", "count": arg.layers}}]
    return config
