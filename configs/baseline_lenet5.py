"""Dense LeNet-5 (Caffe variant, 431,080 parameters) on Fashion-MNIST: the LeNet-5 baseline.

Full: 15 epochs of batch 128 with Adam. `:quick`: 1 epoch.
`:heldout`: the same trained without the selection split (pruning_common.SELECTION_SIZE
training examples held out), the model a fine-tuning recipe is chosen from on that split
(configs/ablation_bits_*.py); the reported runs start from the full baseline.
"""
from configs import common, default, pruning_common


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, heldout=False, quick=False)
    config = default.get_config()
    config.model = {"name": "lenet5"}
    config.train.num_steps = 15 * 468
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if arg.heldout:
        config.dataset.selection_size = pruning_common.SELECTION_SIZE
    if arg.quick:
        config.train.num_steps = 468
    return config
