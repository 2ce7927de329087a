"""Shared setup of the one-shot reproductions (issue: compressing a trained model without retraining).

SparseGPT (Frantar & Alistarh 2023), Wanda (Sun et al. 2024), GPTQ (Frantar
et al. 2023) and their baselines (magnitude pruning, round-to-nearest) each
start from a trained model's export and compress it once, from
CALIBRATION_BATCHES training batches, with no fine-tuning (num_steps 0: the
run evaluates and exports the compressed model). The batches are drawn by
the run's seed, so `--seeds=0,1,2` are three samples of calibration data;
the validation split is never read before the reported evaluation.

- Shakespeare Transformer (runs/baseline_char_transformer, one trained
  model): every block's attention and FFN kernels (BLOCK_KERNELS); the
  embeddings and the output head stay dense, as the papers keep them.
  8 batches are 8 x 32 windows of 128 characters, 32,768 positions.
- LeNet-300-100 (runs/baseline_lenet300/seed_K, the baseline of the same
  seed): its three kernels; 8 batches of 128 images.

Pruning levels LEVELS: 50, 60, 70, 80 % of each layer unstructured, or 2:4
(2 of every 4 consecutive inputs of each output pruned).
"""
from configs import baseline_lenet300, common, pruning_common, transformer_pruning_common

CALIBRATION_BATCHES = 8
LEVELS = ("50", "60", "70", "80", "2of4")
MODELS = ("char_transformer", "lenet300")
BLOCK_KERNELS = r"block_\d+/.*kernel"
LENET300_PRETRAINED = "runs/baseline_lenet300/seed_{seed}/export/params.safetensors"


def pretrained(model: str, quick: bool):
    """The config of `model` starting from its trained export, with no training steps."""
    if model == "char_transformer":
        config = transformer_pruning_common.pretrained_config(False, quick)
    else:
        config = baseline_lenet300.get_config("quick" if quick else "")
        config.init_from = LENET300_PRETRAINED
        config.train.num_steps = 0
    config.compression.init_batches = 2 if quick else CALIBRATION_BATCHES
    return config


def selected_kernels(model: str) -> str:
    return BLOCK_KERNELS if model == "char_transformer" else ".*kernel"


def pruning_stage(method: str, level: str, select: str) -> dict:
    """The stage pruning `select` at `level` by `method`: sparsegpt, wanda or magnitude (per layer / per output)."""
    n_m = {"n": 2, "m": 4} if level == "2of4" else {}
    sparsity = 0.5 if n_m else int(level) / 100
    if method == "sparsegpt":
        return {"technique": "sparsegpt", "select": select, "sparsity": sparsity, "block_size": 128, **n_m}
    # Wanda compares weights within each output (the paper's per-output group); magnitude pruning,
    # the papers' baseline, within each layer. Under 2:4 both compare within groups of 4 inputs.
    scope = "nm" if n_m else ("output" if method == "wanda" else "layer")
    return {"technique": "prune", "select": select, "sparsity": sparsity, "criterion": method, "scope": scope,
            **n_m}


def pruning_config(config_file: str, arg: str, methods: tuple[str, ...]):
    """A one-shot pruning config: variant METHOD_LEVEL[_lenet300][_quick]."""
    arg = common.parse_arg(arg, config_file, method=(methods[0], methods), level=("50", LEVELS), lenet300=False,
                           quick=False)
    model = "lenet300" if arg.lenet300 else "char_transformer"
    config = pretrained(model, arg.quick)
    config.compression.stages = [pruning_stage(arg.method, arg.level, selected_kernels(model))]
    config.export.codecs = pruning_common.SPARSE_EXPORT
    return config
