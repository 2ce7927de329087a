"""Distillation as recovery: a compressed model fine-tuned with and without its own dense original as teacher.

Compression and distillation compose by config alone: each variant is a
compression chain (config.compression.stages) fine-tuned from the trained
dense model (config.init_from), and its `_kd` twin adds that same dense model
as the teacher (config.teacher.export) with the soft-target term. Both twins
train the same steps, so the difference is what the teacher recovers.

Variants KIND[_kd][_quick] (`:quick` alone is `pruned90_lenet300_quick`):
- `pruned90_lenet300`: LeNet-300-100 (runs/baseline_lenet300/seed_K), 90 % of
  every kernel's weights pruned by magnitude at once (per layer), then
  pruning_common's fine-tune (2 epochs of Adam at a constant 3e-4);
- `ternary_lenet5`: LeNet-5 (runs/baseline_lenet5/seed_K), every kernel
  ternary with Li et al. 2016's per-layer threshold and scale, the same
  fine-tune with straight-through gradients;
- `w4a4_transformer`: the Shakespeare Transformer with 4-bit weights and
  4-bit activations, configs/ablation_bits_char_transformer.py's `qat_w4a4`
  (300 steps).
`_kd` fine-tunes on `knowledge_distillation` (the LeNets at
hinton2015_mlp's TEMPERATURE and ALPHA, the Transformer at
jiao2020_tinybert_char_transformer's) with the dense model as teacher.
"""
from configs import (ablation_bits_char_transformer, ablation_bits_lenet5, ablation_bits_lenet300, baseline_lenet5,
                     baseline_lenet300, common, distillation_common, hinton2015_mlp,
                     jiao2020_tinybert_char_transformer, li2016_twn_lenet5, pruning_common)

KINDS = ("pruned90_lenet300", "ternary_lenet5", "w4a4_transformer")
SPARSITY = 0.9
# Each seed starts from (and is taught by) the dense baseline of the same seed, as the bit sweeps start.
DENSE = {"pruned90_lenet300": ablation_bits_lenet300.PRETRAINED, "ternary_lenet5": ablation_bits_lenet5.PRETRAINED}


def _compressed(kind: str, quick: bool):
    """The compressed model's fine-tune without a teacher, and its soft-target settings (T, alpha)."""
    if kind == "w4a4_transformer":
        config = ablation_bits_char_transformer.get_config("qat_w4a4" + ("_quick" if quick else ""))
        return config, (jiao2020_tinybert_char_transformer.TEMPERATURE, jiao2020_tinybert_char_transformer.ALPHA)
    baseline = baseline_lenet300 if kind == "pruned90_lenet300" else baseline_lenet5
    config = baseline.get_config()
    pruning_common.finetune(config, DENSE[kind], quick)
    if kind == "pruned90_lenet300":
        pruning_common.set_pruning(config, pruning_common.prune_stage(SPARSITY, scope="layer"))
    else:
        config.compression.stages = [dict(li2016_twn_lenet5.KINDS["twn"])]
    return config, (hinton2015_mlp.TEMPERATURE, hinton2015_mlp.ALPHA)


def get_config(arg: str = "pruned90_lenet300"):
    arg = common.parse_arg(arg, __file__, kind=("pruned90_lenet300", KINDS), kd=False, quick=False)
    config, (temperature, alpha) = _compressed(arg.kind, arg.quick)
    if arg.kd:
        config.teacher.export = config.init_from
        config.loss = [distillation_common.soft_targets(temperature, alpha)]
    return config
