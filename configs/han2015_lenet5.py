"""Han, Pool, Tran, Dally 2015, "Learning both Weights and Connections": LeNet-5 (Caffe), iterative prune-retrain.

Paper (MNIST): 431K -> 36K weights (12x; conv1 66%, conv2 12%, fc1 8%, fc2 19% kept), error 0.80% -> 0.77%.
Ours (Fashion-MNIST): the dense model of configs/baseline_lenet5.py (15 epochs),
then four rounds of per-layer magnitude pruning toward the paper's kept
fractions (s_k = 1 - (1 - s)^(k/4)), each followed by 10 epochs of retraining
with a fresh cosine decay, as configs/han2015_lenet300.py. `:quick` shrinks
every phase 10x.

Variants as configs/han2015_lenet300.py: `` (Adam, the committed rows, an ablation),
`sgd` (the paper's SGD + momentum + L2 recipe, retraining at 1/10 of the rate) and
`sgd_dense` (its dense reference, 15 epochs), and its `kept_scale=K`. Their learning rate and L2 weight were
chosen on the selection split by
    python -m experiments.select --config=han2015_lenet5:sgd_dense \
        --grid=optimizer.learning_rate=0.01,0.03,0.1 --grid=optimizer.weight_decay=0,0.0001,0.0005
(paper/selection/han2015_lenet5_sgd_dense.json: 0.03 and 5e-4, selection accuracy 91.64 %;
every point at 0.1 diverged).
"""
from configs import baseline_lenet5, common, han2015_lenet300, pruning_common

FINAL_SPARSITY = {"Conv_0/kernel": 0.34, "Conv_1/kernel": 0.88, "Dense_0/kernel": 0.92, "Dense_1/kernel": 0.81}


SGD_LEARNING_RATE = 0.03
SGD_WEIGHT_DECAY = 5e-4


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, recipe=("", han2015_lenet300.RECIPES), quick=False, kept_scale=1.0)
    scale = 10 if arg.quick else 1
    config = baseline_lenet5.get_config()
    dense_steps = 15 * pruning_common.STEPS_PER_EPOCH // scale
    if arg.recipe.startswith("sgd"):
        han2015_lenet300.use_sgd_recipe(config, SGD_LEARNING_RATE, SGD_WEIGHT_DECAY)
    if arg.recipe == "sgd_dense":
        config.train.num_steps = dense_steps
        return config
    han2015_lenet300.add_prune_retrain(
        config, dense_steps, han2015_lenet300.scaled_sparsity(FINAL_SPARSITY, arg.kept_scale), scale,
        han2015_lenet300.RETRAIN_LR_SCALE_SGD if arg.recipe == "sgd" else han2015_lenet300.RETRAIN_LR_SCALE)
    return config
