"""Bit-width sweep on LeNet-300-100 (Fashion-MNIST): post-training quantization against quantization-aware training.

Variants KIND_BITS[_quick]: ptq_B, ptqmse_B, ptqmixed_B, qat_B, described in
`quantization_common.bits_sweep_config`; `:quick` alone is `qat_4_quick`. Starts from
runs/baseline_lenet300/seed_K/export/params.safetensors for seed K
(`python -m experiments.reproduce --configs=baseline_lenet300 --seeds=0,1,2`).
"""
from configs import baseline_lenet300, quantization_common

# Each seed starts from the baseline of the same seed (experiments.provenance.seeded_path).
PRETRAINED = "runs/baseline_lenet300/seed_{seed}/export/params.safetensors"
PRETRAINED_HELDOUT = "runs/baseline_lenet300_heldout/seed_{seed}/export/params.safetensors"
# How qat_B fine-tunes: the lab's first recipe (2 epochs of Adam at a constant 3e-4), whose float
# control lost half a point or more against the trained model; to be chosen on the selection split.
QAT_RECIPE = quantization_common.qat_recipe(learning_rate=3e-4, schedule="constant", epochs=2)


def get_config(arg: str = "qat_4"):
    return quantization_common.bits_sweep_config(arg, __file__, baseline_lenet300, PRETRAINED, PRETRAINED_HELDOUT,
                                                 QAT_RECIPE)
