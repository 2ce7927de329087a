"""Lee, Ajanthan, Torr 2019, "SNIP": prune LeNet-300-100 once at initialization, then train.

Paper (MNIST, ref. error 1.7%): 95% sparse 1.6% error, 98% sparse 2.4%.
Variants `90`, `95`, `98` (the sparsity in percent; append `_quick` for a CPU
check, and `:quick` alone is `95_quick`): connection sensitivity |g * w| on
one batch of 128 at initialization, one global threshold, masks fixed; then
the baseline's 20 epochs of training.
"""
from configs import baseline_lenet300, common, pruning_common

LEVELS = (90, 95, 98)


def get_config(arg: str = "95"):
    arg = common.parse_arg(arg, __file__, sparsity=(95, LEVELS), quick=False)
    config = baseline_lenet300.get_config("quick" if arg.quick else "")
    pruning_common.set_pruning(config, pruning_common.prune_stage(arg.sparsity / 100, criterion="snip"),
                               init_batches=1)
    return config
