"""Gordon, Duh, Andrews 2020, "Compressing BERT": global magnitude pruning of a pretrained Transformer.

Paper: pruning 30-40% of BERT's pre-trained weights does not harm transfer; heavier pruning does.
Ours: the trained Shakespeare Transformer, all weight matrices (kernels and the
embedding) pruned with one global magnitude threshold to S% (variants 0, 10,
..., 90), evaluated without fine-tuning, or with `_ft` after a short fine-tune.
"""
from configs import pruning_common, transformer_pruning_common as common

LEVELS = tuple(range(0, 100, 10))


def get_config(variant: str = "30"):
    level, finetune, quick = common.parse_variant(variant, LEVELS, "sparsity in percent")
    config = common.pretrained_config(finetune, quick)
    stage = pruning_common.prune_stage(level / 100, select=(".*kernel", "embed/embedding"))
    config.compression.stages = [stage]
    config.export.codecs = ((".*kernel", "sparse"), ("embed/embedding", "sparse"), (".*", "dense"))
    return config
