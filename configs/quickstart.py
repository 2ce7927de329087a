"""The newcomer's first run (`make quickstart`): LeNet-300-100 on Fashion-MNIST, compressed, exported.

Trains 3 epochs on the CPU while pruning gradually (Zhu & Gupta 2017) to 90%
of the weights removed with one global magnitude threshold, then quantizing
what is left to 8 bits (symmetric, per output channel, trained with the
quantizer in place: "prune, then quantize"). The export stores each kernel's
nonzero 8-bit codes packed with their positions and per-channel scales. The
variant `pruned` stops after pruning (values + compact indices in float32),
`dense` is the same run without compression; they are the comparison rows.
Every variant is CPU-scale already: `_quick` is accepted and changes
nothing (`:quick` alone is the default variant).
"""
from configs import baseline_lenet300, common, pruning_common, quantization_common


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, kind=("", ("", "pruned", "dense")), quick=False)
    config = baseline_lenet300.get_config("quick")
    epoch = pruning_common.STEPS_PER_EPOCH
    config.train.num_steps = 3 * epoch
    if arg.kind == "dense":
        return config
    pruning_common.set_pruning(config, pruning_common.prune_stage(
        {"kind": "polynomial", "final_sparsity": 0.9, "begin_step": epoch // 2, "end_step": 2 * epoch,
         "frequency": 50}))
    if arg.kind == "":
        config.compression.stages = [*config.compression.stages, quantization_common.weight_stage(8)]
        config.export.codecs = ((".*", "dense"),)  # kernels: the quantizer's packed codec (sparse inside)
    return config
