"""Dense LeNet-300-100 on Fashion-MNIST: the baseline every LeNet-300-100 compression result stands beside.

Full: 20 epochs of batch 128 with Adam. `:quick`: 2 epochs, for a CPU check.
"""
from configs import common, default


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False)
    config = default.get_config()
    config.model = {"name": "mlp", "hidden": (300, 100)}
    config.train.num_steps = 20 * 468
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if arg.quick:
        config.train.num_steps = 2 * 468
    return config
