"""Frantar & Alistarh 2023, SparseGPT: one-shot pruning with weight reconstruction, against magnitude pruning.

Paper: OPT-175B pruned in one shot to 50 % unstructured (or 2:4) keeps its
WikiText perplexity within a few percent of dense, where magnitude pruning
collapses; the gap grows with sparsity. Ours: the trained Shakespeare
Transformer (and LeNet-300-100 with `_lenet300`), every block's attention
and FFN kernels pruned once at 50-80 % or 2:4 (configs/one_shot_common.py),
by `sparsegpt` (block size 128, dampening 1 %) or `magnitude` (per layer),
no fine-tuning; validation loss in nats per character. Wanda's rows are
configs/sun2024_wanda_char_transformer.py. Variants METHOD_LEVEL[_lenet300][_quick].
"""
from configs import one_shot_common

METHODS = ("sparsegpt", "magnitude")


def get_config(arg: str = "sparsegpt_50"):
    return one_shot_common.pruning_config(__file__, arg, METHODS)
