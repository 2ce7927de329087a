"""Gordon, Duh, Andrews 2020, "Compressing BERT": global magnitude pruning of a pretrained Transformer.

Paper: pruning 30-40% of BERT's pre-trained weights does not harm transfer; heavier pruning does.
Ours: the trained Shakespeare Transformer, all weight matrices (kernels and the
embedding) pruned with one global magnitude threshold to S% (variants 0, 10,
..., 90), evaluated without fine-tuning, or with `_ft` after a short fine-tune;
`_quick` for a CPU check (`:quick` alone is `30_quick`, `:ft_quick` is `30_ft_quick`).
"""
from configs import common, pruning_common, transformer_pruning_common

LEVELS = tuple(range(0, 100, 10))


def get_config(arg: str = "30"):
    arg = common.parse_arg(arg, __file__, sparsity=(30, LEVELS), ft=False, quick=False)
    config = transformer_pruning_common.pretrained_config(arg.ft, arg.quick)
    stage = pruning_common.prune_stage(arg.sparsity / 100, select=(".*kernel", "embed/embedding"))
    config.compression.stages = [stage]
    config.export.codecs = ((".*kernel", "sparse"), ("embed/embedding", "sparse"), (".*", "dense"))
    return config
