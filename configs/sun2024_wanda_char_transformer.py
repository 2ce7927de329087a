"""Sun et al. 2024, Wanda: pruning by |weight| x input norm, compared within each output, with no weight update.

Paper: on LLaMA and LLaMA-2 at 50 % unstructured, Wanda comes close to
SparseGPT's perplexity without any weight update, and far below magnitude
pruning. Ours: as configs/frantar2023_sparsegpt_char_transformer.py (the same
models, kernels, levels and calibration batches: configs/one_shot_common.py),
the score |W_ij| * ||X_j||_2 ranked within each output (`scope="output"`; within
each group of 4 inputs at 2:4). SparseGPT's and magnitude's rows are that
config's. Variants wanda_LEVEL[_lenet300][_quick].
"""
from configs import one_shot_common

METHODS = ("wanda",)


def get_config(arg: str = "wanda_50"):
    return one_shot_common.pruning_config(__file__, arg, METHODS)
