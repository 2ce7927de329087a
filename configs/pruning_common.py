"""Shared pieces of the pruning reproductions (Fashion-MNIST, LeNet-300-100 and LeNet-5)."""
import ml_collections
import numpy as np

# Pruned kernels are written as values + compact indices; everything else dense.
SPARSE_EXPORT = ((".*kernel", "sparse"), (".*", "dense"))
STEPS_PER_EPOCH = 468  # 60,000 / 128
FINETUNE_EPOCHS = 2  # after pruning a trained model
LEARNING_RATE = 3e-4  # fine-tuning
# Training examples held out as the selection split where a config makes a choice (learning rate,
# L2 weight, fine-tuning recipe): the model chosen on them must not have trained on them.
SELECTION_SIZE = 5000


def prune_stage(sparsity, criterion="magnitude", scope="global", select=".*kernel", **extra) -> dict:
    """One `prune` stage of config.compression.stages."""
    return {"technique": "prune", "select": select, "sparsity": sparsity, "criterion": criterion,
            "scope": scope, **extra}


def set_pruning(config: ml_collections.ConfigDict, stage: dict, init_batches: int = 0) -> None:
    """Puts the single prune stage and the sparse export into `config`."""
    config.compression.stages = [stage]
    config.compression.init_batches = init_batches
    config.export.codecs = SPARSE_EXPORT


def kept_units(n: int, fraction: float) -> int:
    """Units of n that structured_prune (scope "layer") keeps at sparsity `fraction`.

    The exact-count rule of compression.pruning_masks: round(float32(fraction)
    * n) pruned, in float32 and rounded half to even (np.round, like
    jnp.round), never all of them (at least one unit is kept).
    """
    pruned = int(np.round(np.float32(fraction) * np.float32(n)))
    return n - min(max(pruned, 0), n - 1)


def matching_sparsity(total: int, keep: int) -> float:
    """The global sparsity that leaves exactly `keep` of `total` weights under the exact-count rule."""
    if not 0 < keep <= total:
        raise ValueError(f"cannot keep {keep} of {total} weights")
    sparsity = (total - keep) / total
    if int(np.round(np.float32(sparsity) * np.float32(total))) != total - keep:
        raise ValueError(f"sparsity {sparsity!r} does not prune exactly {total - keep} of {total} in float32")
    return sparsity


def finetune(config, pretrained: str, quick: bool) -> None:
    """Start from `pretrained`; fine-tune FINETUNE_EPOCHS (10x fewer steps if quick) at a constant lr."""
    config.init_from = pretrained
    config.train.num_steps = FINETUNE_EPOCHS * STEPS_PER_EPOCH // (10 if quick else 1)
    config.train.checkpoint_every = 500
    config.optimizer.update(name="adam", schedule="constant", learning_rate=LEARNING_RATE, warmup_steps=0)
