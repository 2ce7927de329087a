"""Chen et al. 2021, DRONE: data-aware low rank against truncated SVD on a trained Transformer.

Paper: on BERT's attention and FFN matrices, DRONE (minimising the layer's
output error over its calibration inputs) keeps more accuracy than SVD at
the same rank, before and after fine-tuning. Ours: the trained 4-layer
Shakespeare Transformer (width 128, FFN 512), every attention projection
and FFN matrix factored at one rank r in RANKS, by `svd` or `drone`; the
validation loss without fine-tuning and after `_ft` (FINETUNE_STEPS at a
small constant learning rate). DRONE reads X^T X of each layer's inputs over
CALIBRATION_BATCHES training batches (32 windows of 128 characters each);
the validation split is never read. Rank 48 is near break-even for the
128 x 128 attention matrices ((128 + 128) * 48 of 16,384 parameters), the
FFN's 128 x 512 break even at 102. Variants METHOD_RANK[_ft][_quick].
"""
from configs import common, transformer_pruning_common

METHODS = ("svd", "drone")
RANKS = (8, 16, 32, 48)
SELECT = r".*/(attn/(query|key|value|out)|ffn_in|ffn_out)/kernel"
CALIBRATION_BATCHES = 8


def get_config(arg: str = "svd_32"):
    arg = common.parse_arg(arg, __file__, method=("svd", METHODS), rank=(32, RANKS), ft=False, quick=False)
    config = transformer_pruning_common.pretrained_config(arg.ft, arg.quick)
    config.compression.stages = [{"technique": "low_rank", "select": SELECT, "method": arg.method,
                                  "rank": arg.rank}]
    config.compression.init_batches = 2 if arg.quick else CALIBRATION_BATCHES
    return config
