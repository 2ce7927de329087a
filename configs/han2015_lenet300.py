"""Han, Pool, Tran, Dally 2015, "Learning both Weights and Connections": LeNet-300-100, iterative prune-retrain.

Paper (MNIST): 267K -> 22K weights (12x, 8% kept), error 1.64% -> 1.59%.
Ours (Fashion-MNIST): train dense for 20 epochs (as configs/baseline_lenet300.py),
then four prune-and-retrain rounds of 5 epochs each with one global magnitude
threshold, to 50, 75, 87.5 and 92% of the weights removed (12.5x). Biases are
not pruned (Han et al. count weights). `:quick` shrinks every phase 10x.
"""
from configs import baseline_lenet300, pruning_common

ROUNDS = (0.5, 0.75, 0.875, 0.92)


def get_config(variant: str = ""):
    if variant not in ("", "quick"):
        raise ValueError(f"unknown variant {variant!r}; use ':quick' or nothing")
    scale = 10 if variant == "quick" else 1
    config = baseline_lenet300.get_config()
    dense_steps = 20 * pruning_common.STEPS_PER_EPOCH // scale
    retrain_steps = 5 * pruning_common.STEPS_PER_EPOCH // scale
    starts = [dense_steps + i * retrain_steps for i in range(len(ROUNDS))]
    config.train.num_steps = dense_steps + len(ROUNDS) * retrain_steps
    pruning_common.set_pruning(config, pruning_common.prune_stage(
        {"kind": "iterative", "sparsities": list(ROUNDS), "steps": starts}))
    return config
