"""Li, Kadav, Durdanovic, Samet, Graf 2017, "Pruning Filters for Efficient ConvNets": L1 filter pruning.

Paper (CIFAR-10): removing the conv filters with the smallest L1 norms (sum
of absolute kernel weights), with their feature maps and the next layer's
matching input channels, then retraining, cuts inference FLOPs of VGG-16 by
up to 34% and of ResNet-110 by up to 38% at close to the original accuracy;
the pruned network stays dense, so it needs no sparse library to run faster.
Ours (Fashion-MNIST, LeNet-5 in the Caffe form, 20-50 filters, dense 500):

- `filters_P` (P in 25, 50, 75): P% of the filters of each conv layer and P%
  of the 500 dense neurons (scope "layer": every group loses its own P%),
  ranked by the L1 norm of their incoming weights, removed one-shot at step 0
  (constant sparsity; all layers scored at once from the pretrained weights,
  the paper's "independent" strategy), then fine-tuned. The export is the
  smaller dense LeNet-5 itself (fewer filters and neurons in its config).
  Counts follow the exact-count rule (float32, round half to even, see
  `kept_units`): conv2 keeps 38 of 50 at P=25 and 12 at P=75.
- `filters8_P`: as `filters_P`, with each layer's kept count rounded up to
  a multiple of 8 (`structured_prune(multiple_of=8)`: 16 and 40 filters and
  376 neurons at P=25). XLA:CPU runs the 15-filter first conv of `filters_25`
  slower than the dense model's 20 filters; this control shows whether
  hardware-friendly widths give the speed back.
- `unstructured_P`: the same pretrained model pruned by global unstructured
  magnitude over all kernels to the sparsity that leaves exactly as many
  nonzero weights (kernel entries; biases are not pruned) as `filters_P`'s
  shrunk model holds, with the same fine-tuning and a sparse export (values +
  indices). Its export is small on disk but loads as dense tensors: the
  comparison shows which kind of pruning gives speed
  (experiments/benchmark_inference.py).

Both start from the trained baseline's export,
runs/baseline_lenet5/seed_0/export/params.safetensors, trained by
`python -m experiments.reproduce --configs=baseline_lenet5 --seeds=0,1,2`
(or `--seeds=0` alone). Fine-tuning:
2 epochs (936 steps) of Adam at a constant 3e-4. Append `_quick` for a 10x
shorter fine-tune (93 steps); `:quick` alone is `filters_50_quick`.
"""
from __future__ import annotations

from configs import baseline_lenet5, common, pruning_common
from experiments import structures

PRETRAINED = "runs/baseline_lenet5/seed_0/export/params.safetensors"
LEVELS = (25, 50, 75)
KINDS = ("filters", "filters8", "unstructured")
CONV_FEATURES = (20, 50)
DENSE_FEATURES = 500
NUM_CLASSES = 10
KERNEL = 5 * 5
FEATURE_MAP = 4 * 4  # 28 -> conv 24 -> pool 12 -> conv 8 -> pool 4


def lenet5_weights(conv_features, dense_features: int) -> int:
    """Kernel entries of a Caffe-form LeNet-5 on 28x28x1 inputs (the dense input is 4 * 4 * last conv)."""
    c1, c2 = conv_features
    return KERNEL * 1 * c1 + KERNEL * c1 * c2 + FEATURE_MAP * c2 * dense_features + dense_features * NUM_CLASSES


def shrunk_shape(level: int) -> tuple[tuple[int, int], int]:
    """(conv_features, dense_features) of filters_<level>'s exported model."""
    fraction = level / 100
    return tuple(pruning_common.kept_units(n, fraction) for n in CONV_FEATURES), pruning_common.kept_units(DENSE_FEATURES, fraction)


def unstructured_sparsity(level: int) -> float:
    """The global kernel sparsity whose nonzero weights equal filters_<level>'s shrunk kernel entries."""
    conv, dense = shrunk_shape(level)
    return pruning_common.matching_sparsity(lenet5_weights(CONV_FEATURES, DENSE_FEATURES), lenet5_weights(conv, dense))


def get_config(arg: str = "filters_50"):
    arg = common.parse_arg(arg, __file__, kind=("filters", KINDS), level=(50, LEVELS), quick=False)
    kind, level, quick = arg.kind, arg.level, arg.quick
    config = baseline_lenet5.get_config()
    # Spelled out: a structured export writes the kept counts into these fields.
    config.model = {"name": "lenet5", "conv_features": CONV_FEATURES, "dense_features": DENSE_FEATURES}
    pruning_common.finetune(config, PRETRAINED, quick)
    if kind in ("filters", "filters8"):
        config.compression.stages = [{
            "technique": "structured_prune", "scope": "layer", "norm": 1, "sparsity": level / 100,
            "multiple_of": 8 if kind == "filters8" else 1,
            "groups": structures.lenet5_filter_groups(CONV_FEATURES) + structures.lenet5_neuron_groups()}]
    else:
        pruning_common.set_pruning(config, pruning_common.prune_stage(unstructured_sparsity(level), scope="global"))
    return config
