"""Shared pieces of the pruning reproductions (Fashion-MNIST, LeNet-300-100 and LeNet-5)."""
import ml_collections

# Pruned kernels are written as values + compact indices; everything else dense.
SPARSE_EXPORT = ((".*kernel", "sparse"), (".*", "dense"))
STEPS_PER_EPOCH = 468  # 60,000 / 128


def prune_stage(sparsity, criterion="magnitude", scope="global", select=".*kernel", **extra) -> dict:
    """One `prune` stage of config.compression.stages."""
    return {"technique": "prune", "select": select, "sparsity": sparsity, "criterion": criterion,
            "scope": scope, **extra}


def set_pruning(config: ml_collections.ConfigDict, stage: dict, init_batches: int = 0) -> None:
    """Puts the single prune stage and the sparse export into `config`."""
    config.compression.stages = [stage]
    config.compression.init_batches = init_batches
    config.export.codecs = SPARSE_EXPORT
