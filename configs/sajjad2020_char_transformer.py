"""Sajjad et al. 2020, "Poor Man's BERT": dropping the top layers of a pretrained Transformer.

Paper: 40% of BERT's layers dropped (top layers) keeps 98% of its performance.
Ours: the trained 4-layer Shakespeare Transformer with its top K blocks dropped
(K in 1, 2, 3); the export is the smaller model (num_layers - K). `_ft` fine-tunes.
"""
from configs import transformer_pruning_common as common
from experiments import structures

LEVELS = (1, 2, 3)


def get_config(variant: str = "1"):
    count, finetune, quick = common.parse_variant(variant, LEVELS, "number of top layers dropped")
    config = common.pretrained_config(finetune, quick)
    config.compression.stages = [{"technique": "layer_drop",
                                  "layers": structures.transformer_layers(config.model.num_layers),
                                  "drop": {"policy": "top", "count": count}}]
    return config
