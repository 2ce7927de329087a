"""The newcomer's first run (`make quickstart`): LeNet-300-100 on Fashion-MNIST, compressed, exported.

Trains 3 epochs on the CPU while pruning gradually (Zhu & Gupta 2017) to 90%
of the weights removed with one global magnitude threshold, and exports the
pruned kernels as values + compact indices. As techniques land, they join
`stages` in the order "prune, then quantize". The variant `dense` is the same
run without compression, for the comparison row.
"""
from configs import baseline_lenet300, pruning_common


def get_config(variant: str = ""):
    if variant not in ("", "dense"):
        raise ValueError(f"configs/quickstart.py has the variants '' and 'dense' (got {variant!r})")
    config = baseline_lenet300.get_config("quick")
    epoch = pruning_common.STEPS_PER_EPOCH
    config.train.num_steps = 3 * epoch
    if variant == "dense":
        return config
    pruning_common.set_pruning(config, pruning_common.prune_stage(
        {"kind": "polynomial", "final_sparsity": 0.9, "begin_step": epoch // 2, "end_step": 2 * epoch,
         "frequency": 50}))
    return config
