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


def tiny_lm_config(model: dict, train_size: int = 256, eval_size: int = 64, **train) -> ml_collections.ConfigDict:
    """`tiny_config` for a language model: `model` on synthetic 8-token windows of a 32-symbol vocabulary."""
    config = tiny_config(**{"batch_size": 8, "eval_batch_size": 8, "checkpoint_every": 100, **train})
    config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 32,
                      "train_size": train_size, "eval_size": eval_size, "seq_len": 8}
    config.model = model
    return config


def transformer_ffn_groups(num_layers: int) -> list[dict]:
    """Structured-pruning groups for the CharTransformer's FFN hidden units, one per block: ffn_in
    columns and bias, ffn_out rows (no experiment config prunes them; tests check their export)."""
    return [{"name": f"block_{i}_ffn",
             "members": [[f"block_{i}/ffn_in/kernel", 1], [f"block_{i}/ffn_in/bias", 0],
                         [f"block_{i}/ffn_out/kernel", 0]],
             "config_field": ["ffn_dim", i]}
            for i in range(num_layers)]
