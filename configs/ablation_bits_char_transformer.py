"""The Shakespeare Transformer at 8 and 4 bits: weights, then weights and activations; PTQ and QAT.

Variants KIND_SETTING[_quick]:
- KIND `ptq`: the trained baseline quantized once and evaluated (no training);
  `qat`: the same quantizers during a 300-step fine-tune (straight-through
  gradients), the transformer_pruning_common recipe.
- SETTING `w8`, `w4`: every weight matrix (kernels, token and position
  embeddings) symmetric uniform per output channel, min-max range;
  `w8a8`, `w4a4`: plus the input of every Dense/DenseGeneral layer
  asymmetric uniform per tensor, its range calibrated once on 4 training
  batches (percentile 99.99 at 8 bits, MSE-optimal clipping at 4 bits).
  The attention score and weighted-sum einsums are not quantized (they
  are not layers with weights).
- `fp_ft`: the float fine-tune, the control for `qat`.
Starts from runs/baseline_char_transformer/export/params.safetensors
(`python -m experiments.reproduce --configs=baseline_char_transformer`).
"""
from configs import quantization_common as qc, transformer_pruning_common as common

WEIGHTS = (".*kernel", "embed/embedding", "pos_embed")
SETTINGS = {"w8": (8, None), "w4": (4, None), "w8a8": (8, 8), "w4a4": (4, 4)}
INIT_BATCHES = 4


def get_config(variant: str = "ptq_w8"):
    quick = variant.endswith("_quick")
    name = variant.removesuffix("_quick")
    kind, _, setting = name.partition("_")
    if name == "fp_ft":
        config = common.pretrained_config(True, quick)
        return config
    if kind not in ("ptq", "qat") or setting not in SETTINGS:
        raise ValueError(f"unknown variant {variant!r}: use ptq_S or qat_S with S one of {sorted(SETTINGS)}, "
                         f"or fp_ft; optionally followed by _quick")
    weight_bits, activation_bits = SETTINGS[setting]
    config = common.pretrained_config(kind == "qat", quick)
    activations = None
    if activation_bits is not None:
        activations = qc.activation_stage(activation_bits, calibration="percentile" if activation_bits == 8 else "mse")
    qc.set_stages(config, qc.weight_stage(weight_bits, select=WEIGHTS), activations,
                  init_batches=INIT_BATCHES if activations else 0)
    return config
