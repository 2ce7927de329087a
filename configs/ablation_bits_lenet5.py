"""Bit-width sweep on LeNet-5 in the Caffe form (Fashion-MNIST): post-training quantization against quantization-aware training.

Variants KIND_BITS[_quick]: ptq_B, ptqmse_B, ptqmixed_B, qat_B, described in
`quantization_common.bits_sweep_config`; `:quick` alone is `qat_4_quick`. Starts from
runs/baseline_lenet5/seed_K/export/params.safetensors for seed K
(`python -m experiments.reproduce --configs=baseline_lenet5 --seeds=0,1,2`).
"""
from configs import baseline_lenet5, quantization_common

# Each seed starts from the baseline of the same seed (experiments.provenance.seeded_path).
PRETRAINED = "runs/baseline_lenet5/seed_{seed}/export/params.safetensors"
PRETRAINED_HELDOUT = "runs/baseline_lenet5_heldout/seed_{seed}/export/params.safetensors"
# How qat_B fine-tunes, chosen on the selection split from a baseline trained without it by
#     python -m experiments.select --config=ablation_bits_lenet5:qat_32_heldout,ablation_bits_lenet5:qat_3_heldout \
#         --name=ablation_bits_lenet5_qat_recipe --grid=optimizer.learning_rate=1e-4,3e-4 \
#         --grid=optimizer.schedule=cosine --grid=train.num_steps=936,2340 --seeds=0
# (paper/selection/ablation_bits_lenet5_qat_recipe.json). The schedule is LeNet-300-100's choice
# (cosine beat constant there at every rate); LeNet-5's runs are 5x slower, so its grid is the
# rate and the length only, one seed; its four points lie within 0.16 points. The lab's first
# recipe, 2 epochs at a constant 3e-4, left the float control 0.79 points below the trained model.
QAT_RECIPE = quantization_common.qat_recipe(learning_rate=3e-4, schedule="cosine", epochs=2)


def get_config(arg: str = "qat_4"):
    return quantization_common.bits_sweep_config(arg, __file__, baseline_lenet5, PRETRAINED, PRETRAINED_HELDOUT,
                                                 QAT_RECIPE)
