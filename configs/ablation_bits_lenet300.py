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
# How qat_B fine-tunes, chosen on the selection split from a baseline trained without it by
#     python -m experiments.select --config=ablation_bits_lenet300:qat_32_heldout,ablation_bits_lenet300:qat_3_heldout \
#         --name=ablation_bits_lenet300_qat_recipe --grid=optimizer.learning_rate=3e-5,1e-4,3e-4 \
#         --grid=optimizer.schedule=constant,cosine --grid=train.num_steps=936,2340 --seeds=0,1,2
# (paper/selection/ablation_bits_lenet300_qat_recipe.json: the best mean of the float control and
# 3-bit QAT over 3 seeds; the six cosine points span 0.16 points, the constant ones at 3e-4 lie
# 0.5 below). The lab's first recipe, 2 epochs at a constant 3e-4, left the float control 0.44
# points below the trained model.
QAT_RECIPE = quantization_common.qat_recipe(learning_rate=1e-4, schedule="cosine", epochs=5)


def get_config(arg: str = "qat_4"):
    return quantization_common.bits_sweep_config(arg, __file__, baseline_lenet300, PRETRAINED, PRETRAINED_HELDOUT,
                                                 QAT_RECIPE)
