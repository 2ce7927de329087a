"""Han, Pool, Tran, Dally 2015, "Learning both Weights and Connections": LeNet-5 (Caffe), iterative prune-retrain.

Paper (MNIST): 431K -> 36K weights (12x; conv1 66%, conv2 12%, fc1 8%, fc2 19% kept), error 0.80% -> 0.77%.
Ours (Fashion-MNIST): the dense model of configs/baseline_lenet5.py (15 epochs),
then four rounds of per-layer magnitude pruning toward the paper's kept
fractions (s_k = 1 - (1 - s)^(k/4)), each followed by 10 epochs of retraining
with a fresh cosine decay, as configs/han2015_lenet300.py. `:quick` shrinks
every phase 10x.
"""
from configs import baseline_lenet5, common, han2015_lenet300, pruning_common

FINAL_SPARSITY = {"Conv_0/kernel": 0.34, "Conv_1/kernel": 0.88, "Dense_0/kernel": 0.92, "Dense_1/kernel": 0.81}


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False)
    scale = 10 if arg.quick else 1
    config = baseline_lenet5.get_config()
    dense_steps = 15 * pruning_common.STEPS_PER_EPOCH // scale
    han2015_lenet300.add_prune_retrain(config, dense_steps, FINAL_SPARSITY, scale)
    return config
