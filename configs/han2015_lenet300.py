"""Han, Pool, Tran, Dally 2015, "Learning both Weights and Connections": LeNet-300-100, iterative prune-retrain.

Paper (MNIST): 267K -> 22K weights (12x; fc1 8%, fc2 9%, fc3 26% kept), error 1.64% -> 1.59%.
Ours (Fashion-MNIST): train dense for 20 epochs (as configs/baseline_lenet300.py),
then four rounds of magnitude pruning, each followed by 10 epochs of retraining
with a fresh cosine learning-rate decay. Each layer reaches the paper's kept
fraction in four geometric steps (s_k = 1 - (1 - s)^(k/4)), one prune stage per
layer chained together. Biases are not pruned (Han et al. count weights).
`:quick` shrinks every phase 10x.
"""
from configs import baseline_lenet300, common, pruning_common

FINAL_SPARSITY = {"Dense_0/kernel": 0.92, "Dense_1/kernel": 0.91, "Dense_2/kernel": 0.74}
ROUNDS = 4
RETRAIN_EPOCHS = 10
RETRAIN_LR_SCALE = 1.0


def add_prune_retrain(config, dense_steps: int, final_sparsity: dict, scale: int = 1) -> None:
    """Appends ROUNDS prune-and-retrain rounds after `dense_steps` of dense training to `config`."""
    retrain_steps = RETRAIN_EPOCHS * pruning_common.STEPS_PER_EPOCH // scale
    starts = [dense_steps + i * retrain_steps for i in range(ROUNDS)]
    config.train.num_steps = dense_steps + ROUNDS * retrain_steps
    config.optimizer.schedule = "cosine_restarts"
    config.optimizer.restarts = starts
    config.optimizer.restart_scale = RETRAIN_LR_SCALE
    stages = []
    for path, final in final_sparsity.items():
        rounds = [round(1 - (1 - final) ** ((k + 1) / ROUNDS), 4) for k in range(ROUNDS)]
        stages.append(pruning_common.prune_stage({"kind": "iterative", "sparsities": rounds, "steps": starts},
                                                 scope="layer", select=path))
    config.compression.stages = stages
    config.export.codecs = pruning_common.SPARSE_EXPORT


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False)
    scale = 10 if arg.quick else 1
    config = baseline_lenet300.get_config()
    add_prune_retrain(config, 20 * pruning_common.STEPS_PER_EPOCH // scale, FINAL_SPARSITY, scale)
    return config
