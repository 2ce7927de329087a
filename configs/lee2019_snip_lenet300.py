"""Lee, Ajanthan, Torr 2019, "SNIP": prune LeNet-300-100 once at initialization, then train.

Paper (MNIST, ref. error 1.7%): 95% sparse 1.6% error, 98% sparse 2.4%.
Variants `90`, `95`, `98` (append `_quick` for a CPU check): connection
sensitivity |g * w| on one batch of 128 at initialization, one global
threshold, masks fixed; then the baseline's 20 epochs of training.
"""
from configs import baseline_lenet300, pruning_common

LEVELS = (90, 95, 98)


def get_config(variant: str = "95"):
    quick = variant.endswith("_quick")
    level = variant.removesuffix("_quick")
    if not level.isdigit() or int(level) not in LEVELS:
        raise ValueError(f"unknown variant {variant!r}; use one of {LEVELS}, optionally followed by _quick")
    config = baseline_lenet300.get_config("quick" if quick else "")
    pruning_common.set_pruning(config, pruning_common.prune_stage(int(level) / 100, criterion="snip"),
                               init_batches=1)
    return config
