"""Ablation: structured neuron pruning against unstructured pruning at equal nonzero weights, LeNet-300-100.

The LeNet-300-100 counterpart of configs/li2017_lenet5.py (neurons instead of
filters), from the trained baseline's export,
runs/baseline_lenet300/seed_0/export/params.safetensors, trained by
`python -m experiments.reproduce --configs=baseline_lenet300 --seeds=0,1,2`.

- `neurons_P` (P in 25, 50, 75): P% of the neurons of each hidden layer
  (300 and 100; scope "layer") with the smallest L1 norm of their incoming
  weights removed one-shot at step 0, with their outgoing weights; the export
  is the smaller dense MLP (e.g. 150-50 at P=50).
- `unstructured_P`: the same pretrained model pruned by global unstructured
  magnitude over all kernels to the sparsity that leaves exactly as many
  nonzero weights (kernel entries; biases are not pruned) as `neurons_P`'s
  shrunk model, with a sparse export (values + indices).

Both fine-tune for 2 epochs (936 steps) of Adam at a constant 3e-4; append
`_quick` for a 10x shorter fine-tune (`:quick` alone is `neurons_50_quick`). experiments/benchmark_inference.py
times the exports against the dense baseline.
"""
from __future__ import annotations

from configs import baseline_lenet300, common, pruning_common
from experiments import structures

PRETRAINED = "runs/baseline_lenet300/seed_0/export/params.safetensors"
LEVELS = (25, 50, 75)
KINDS = ("neurons", "unstructured")
HIDDEN = (300, 100)
INPUTS = 28 * 28
NUM_CLASSES = 10


def mlp_weights(hidden) -> int:
    """Kernel entries of a 784-hidden...-10 MLP."""
    widths = (INPUTS, *hidden, NUM_CLASSES)
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def shrunk_hidden(level: int) -> tuple[int, ...]:
    """The hidden widths of neurons_<level>'s exported model."""
    return tuple(pruning_common.kept_units(n, level / 100) for n in HIDDEN)


def unstructured_sparsity(level: int) -> float:
    """The global kernel sparsity whose nonzero weights equal neurons_<level>'s shrunk kernel entries."""
    return pruning_common.matching_sparsity(mlp_weights(HIDDEN), mlp_weights(shrunk_hidden(level)))


def get_config(arg: str = "neurons_50"):
    arg = common.parse_arg(arg, __file__, kind=("neurons", KINDS), level=(50, LEVELS), quick=False)
    kind, level, quick = arg.kind, arg.level, arg.quick
    config = baseline_lenet300.get_config()
    config.model = {"name": "mlp", "hidden": HIDDEN}
    pruning_common.finetune(config, PRETRAINED, quick)
    if kind == "neurons":
        config.compression.stages = [{"technique": "structured_prune", "scope": "layer", "norm": 1,
                                      "sparsity": level / 100, "groups": structures.mlp_neuron_groups(HIDDEN)}]
    else:
        pruning_common.set_pruning(config, pruning_common.prune_stage(unstructured_sparsity(level), scope="global"))
    return config
