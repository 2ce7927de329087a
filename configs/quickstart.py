"""The newcomer's first run (`make quickstart`): LeNet-300-100 on Fashion-MNIST, compressed, exported.

Trains a few epochs on the CPU and applies the compression chain below.
As techniques land (pruning, then quantization), they join `stages` here,
in the order "prune, then quantize".
"""
from configs import baseline_lenet300


def get_config(variant: str = ""):
    config = baseline_lenet300.get_config("quick")
    config.train.num_steps = 3 * 468
    config.compression.stages = []  # no technique has landed yet: the dense model is exported
    if variant:
        raise ValueError(f"configs/quickstart.py has no variants (got {variant!r})")
    return config
