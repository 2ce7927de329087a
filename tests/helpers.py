"""Tiny configs for driver tests (synthetic data, a small MLP, one device unless a test asks for more)."""
import ml_collections

from configs import default


def tiny_config(**train) -> ml_collections.ConfigDict:
    """A 784-16-10 MLP on 28x28 synthetic images, Adam, 1x1 mesh, checkpoint every 5 steps."""
    config = default.get_config()
    config.dataset = {"name": "synthetic", "input_shape": (28, 28, 1), "num_classes": 10,
                      "train_size": 512, "eval_size": 96}
    config.model = {"name": "mlp", "hidden": (16,)}
    config.optimizer.schedule = "constant"
    config.train.update({"num_steps": 12, "batch_size": 32, "eval_batch_size": 64, "log_every": 4,
                         "checkpoint_every": 5, **train})
    config.mesh.data = 1
    config.mesh.model = 1
    return config
