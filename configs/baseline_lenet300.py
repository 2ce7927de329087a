"""Dense LeNet-300-100 on Fashion-MNIST: the baseline every LeNet-300-100 compression result stands beside.

Full: 20 epochs of batch 128 with Adam. `:quick`: 2 epochs, for a CPU check.
"""
from configs import default


def get_config(variant: str = ""):
    config = default.get_config()
    config.model = {"name": "mlp", "hidden": (300, 100)}
    config.train.num_steps = 20 * 468
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if variant == "quick":
        config.train.num_steps = 2 * 468
    elif variant:
        raise ValueError(f"unknown variant {variant!r}; use ':quick' or nothing")
    return config
