"""Han, Pool, Tran, Dally 2015, "Learning both Weights and Connections": LeNet-300-100, iterative prune-retrain.

Paper (MNIST): 267K -> 22K weights (12x; fc1 8%, fc2 9%, fc3 26% kept), error 1.64% -> 1.59%.
Ours (Fashion-MNIST): train dense for 20 epochs (as configs/baseline_lenet300.py),
then four rounds of magnitude pruning, each followed by 10 epochs of retraining
with a fresh cosine learning-rate decay. Each layer reaches the paper's kept
fraction in four geometric steps (s_k = 1 - (1 - s)^(k/4)), one prune stage per
layer chained together. Biases are not pruned (Han et al. count weights).
`:quick` shrinks every phase 10x.

Variants (append `_quick` for a CPU check):
- `` (none): the recipe above, Adam without weight decay, every retraining round
  restarting at the full learning rate: the committed paper/results/han2015_lenet300 rows,
  kept as an ablation;
- `sgd`: the paper's recipe. SGD with momentum 0.9 and L2 regularisation (Caffe's
  weight decay: lambda * w added to the gradient; the paper's Figure 5: L2 with
  iterative pruning and retraining keeps accuracy), each retraining round at
  RETRAIN_LR_SCALE_SGD = 1/10 of the initial rate (the paper retrains at a lowered rate
  and does not publish its solver files; the factor is ours). Training holds out the
  selection split (dataset.selection_size = 5000), on which the learning rate and the
  L2 weight were chosen;
- `sgd_dense`: its dense reference, the same recipe without pruning, for 20 epochs.
  The learning rate and L2 weight (SGD_LEARNING_RATE, SGD_WEIGHT_DECAY) were chosen on
  the selection split over a grid by
      python -m experiments.select --config=han2015_lenet300:sgd_dense \
          --grid=optimizer.learning_rate=0.01,0.03,0.1 --grid=optimizer.weight_decay=0,0.0001,0.0005
  whose table is paper/selection/han2015_lenet300_sgd_dense.json.
`kept_scale=K` (default 1, the paper's rates) has each layer keep K times the
paper's kept fraction (at most all of it): configs/han2016_deep_compression_*
choose K on the selection split.
"""
from configs import baseline_lenet300, common, pruning_common

FINAL_SPARSITY = {"Dense_0/kernel": 0.92, "Dense_1/kernel": 0.91, "Dense_2/kernel": 0.74}
ROUNDS = 4
RETRAIN_EPOCHS = 10
RETRAIN_LR_SCALE = 1.0
RETRAIN_LR_SCALE_SGD = 0.1
SELECTION_SIZE = pruning_common.SELECTION_SIZE
# Chosen on the selection split (paper/selection/han2015_lenet300_sgd_dense.json: the best of
# 9 points, one seed; the top four lie within 0.06 points of each other).
SGD_LEARNING_RATE = 0.03
SGD_WEIGHT_DECAY = 5e-4
RECIPES = ("", "sgd", "sgd_dense")


def use_sgd_recipe(config, learning_rate: float, weight_decay: float) -> None:
    """The paper's optimizer: SGD + momentum 0.9 with L2 regularisation, and a held-out selection split."""
    config.optimizer.update(name="sgd", learning_rate=learning_rate, momentum=0.9, weight_decay=weight_decay)
    config.dataset.selection_size = SELECTION_SIZE


def scaled_sparsity(final_sparsity: dict, kept_scale: float) -> dict:
    """Each layer's final sparsity when it keeps `kept_scale` times the kept fraction 1 - s (at most everything)."""
    if not kept_scale > 0:
        raise ValueError(f"kept_scale={kept_scale!r}: each layer keeps kept_scale times the paper's kept "
                         "fraction, so it must be > 0 (1 is the paper's rates)")
    if kept_scale == 1:  # the paper's rates as written, not re-rounded: the han2015 runs stay what they were
        return dict(final_sparsity)
    return {path: round(max(0.0, 1.0 - kept_scale * (1.0 - s)), 4) for path, s in final_sparsity.items()}


def add_prune_retrain(config, dense_steps: int, final_sparsity: dict, scale: int = 1,
                      retrain_lr_scale: float = RETRAIN_LR_SCALE) -> None:
    """Appends ROUNDS prune-and-retrain rounds after `dense_steps` of dense training to `config`."""
    retrain_steps = RETRAIN_EPOCHS * pruning_common.STEPS_PER_EPOCH // scale
    starts = [dense_steps + i * retrain_steps for i in range(ROUNDS)]
    config.train.num_steps = dense_steps + ROUNDS * retrain_steps
    config.optimizer.schedule = "cosine_restarts"
    config.optimizer.restarts = starts
    config.optimizer.restart_scale = retrain_lr_scale
    stages = []
    for path, final in final_sparsity.items():
        rounds = [round(1 - (1 - final) ** ((k + 1) / ROUNDS), 4) for k in range(ROUNDS)]
        stages.append(pruning_common.prune_stage({"kind": "iterative", "sparsities": rounds, "steps": starts},
                                                 scope="layer", select=path))
    config.compression.stages = stages
    config.export.codecs = pruning_common.SPARSE_EXPORT


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, recipe=("", RECIPES), quick=False, kept_scale=1.0)
    scale = 10 if arg.quick else 1
    config = baseline_lenet300.get_config()
    dense_steps = 20 * pruning_common.STEPS_PER_EPOCH // scale
    if arg.recipe.startswith("sgd"):
        use_sgd_recipe(config, SGD_LEARNING_RATE, SGD_WEIGHT_DECAY)
    if arg.recipe == "sgd_dense":
        config.train.num_steps = dense_steps
        return config
    add_prune_retrain(config, dense_steps, scaled_sparsity(FINAL_SPARSITY, arg.kept_scale), scale,
                      RETRAIN_LR_SCALE_SGD if arg.recipe == "sgd" else RETRAIN_LR_SCALE)
    return config
