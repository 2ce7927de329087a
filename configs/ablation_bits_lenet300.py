"""Bit-width sweep on LeNet-300-100 (Fashion-MNIST): post-training quantization against quantization-aware training.

Variants KIND_BITS[_quick], BITS in 32, 16, 8, 6, 4, 3, 2, 1 (32 = float):
- `ptq_B`: the trained baseline's weights quantized once (symmetric uniform,
  per output channel, min-max range; binary with BWN's mean|w| scale at 1
  bit) and evaluated, no training (train.num_steps = 0).
- `ptqmse_B`: the same with the MSE-optimal clipping range.
- `ptqmixed_B`: mixed precision after training: each kernel's bits chosen
  from 8, 6, 4, 3, 2 so that the kernels average at most B bits per weight,
  by the measured loss increase of quantizing that kernel alone on 4 training
  batches (compression.mixed_precision); MSE ranges; B in 6, 4, 3, 2.
- `qat_B`: the same quantizer during 2 epochs of fine-tuning (straight-through
  gradients, ranges following the weights every step); `qat_32` is the float
  fine-tune, the control.
All kernels are quantized, biases stay float32; the export packs each
kernel's codes at B bits with its per-channel scales (bytes measured on disk).
Starts from runs/baseline_lenet300/seed_0/export/params.safetensors
(`python -m experiments.reproduce --configs=baseline_lenet300 --seeds=0,1,2`).
"""
from configs import baseline_lenet300, pruning_common, quantization_common as qc

PRETRAINED = "runs/baseline_lenet300/seed_0/export/params.safetensors"
KINDS = ("ptq", "ptqmse", "ptqmixed", "qat")
MIXED_CANDIDATES = (8, 6, 4, 3, 2)


def get_config(variant: str = "qat_4"):
    kind, bits, quick = pruning_common.parse_variant(variant, KINDS, qc.BIT_LEVELS)
    config = baseline_lenet300.get_config()
    pruning_common.finetune(config, PRETRAINED, quick)
    if kind != "qat":
        config.train.num_steps = 0
    if kind == "ptqmixed":
        if bits not in (6, 4, 3, 2):
            raise ValueError(f"variant {variant!r}: ptqmixed takes a budget of 6, 4, 3 or 2 bits per weight")
        stage = dict(qc.weight_stage(8, calibration="mse"), bits="auto", budget_bits_per_weight=bits,
                     candidate_bits=MIXED_CANDIDATES)
        qc.set_stages(config, stage, init_batches=4)
        return config
    qc.set_stages(config, qc.weight_stage(bits, calibration="mse" if kind == "ptqmse" else "minmax"))
    return config
