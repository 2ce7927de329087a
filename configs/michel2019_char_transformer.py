"""Michel, Levy, Neubig 2019, "Are Sixteen Heads Really Better than One?": head pruning.

Paper: 20% (WMT) to 40% (BERT) of heads can go with little loss.
Ours: the trained Shakespeare Transformer (4 layers x 4 heads); the K heads with
the smallest weight norms (query/key/value/output slices, ranked over all
layers, at least one kept per layer) removed, K in 2, 4, 8, 12 of 16; the
export is the smaller model itself (fewer heads per layer). Variants K[_ft][_quick]:
`_ft` fine-tunes, `_quick` is a CPU check (`:quick` alone is `4_quick`).
"""
from configs import common, transformer_pruning_common
from experiments import structures

LEVELS = (2, 4, 8, 12)


def get_config(arg: str = "4"):
    arg = common.parse_arg(arg, __file__, heads=(4, LEVELS), ft=False, quick=False)
    config = transformer_pruning_common.pretrained_config(arg.ft, arg.quick)
    total = sum(config.model.num_heads)
    config.compression.stages = [{"technique": "structured_prune", "scope": "global", "sparsity": arg.heads / total,
                                  "groups": structures.transformer_head_groups(config.model.num_layers)}]
    return config
