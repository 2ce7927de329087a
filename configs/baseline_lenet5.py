"""Dense LeNet-5 (Caffe variant, 431,080 parameters) on Fashion-MNIST: the LeNet-5 baseline.

Full: 15 epochs of batch 128 with Adam. `:quick`: 1 epoch.
"""
from configs import default


def get_config(variant: str = ""):
    config = default.get_config()
    config.model = {"name": "lenet5"}
    config.train.num_steps = 15 * 468
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if variant == "quick":
        config.train.num_steps = 468
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; use ':quick' or nothing")
    return config
