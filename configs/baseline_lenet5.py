"""Dense LeNet-5 (Caffe variant, 431,080 parameters) on Fashion-MNIST: the LeNet-5 baseline.

Full: 15 epochs of batch 128 with Adam. `:quick`: 1 epoch.
"""
from configs import common, default


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False)
    config = default.get_config()
    config.model = {"name": "lenet5"}
    config.train.num_steps = 15 * 468
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if arg.quick:
        config.train.num_steps = 468
    return config
