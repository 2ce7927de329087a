"""The Shakespeare Transformer at 8 and 4 bits: weights, then weights and activations; PTQ and QAT.

Variants KIND_SETTING[_quick] (`:quick` alone is `ptq_w8_quick`):
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
from configs import common, quantization_common as qc, transformer_pruning_common

WEIGHTS = (".*kernel", "embed/embedding", "pos_embed")
SETTINGS = {"w8": (8, None), "w4": (4, None), "w8a8": (8, 8), "w4a4": (4, 4)}
VARIANTS = (*(f"{kind}_{setting}" for kind in ("ptq", "qat") for setting in SETTINGS), "fp_ft")
INIT_BATCHES = 4


def get_config(arg: str = "ptq_w8"):
    arg = common.parse_arg(arg, __file__, variant=("ptq_w8", VARIANTS), quick=False)
    if arg.variant == "fp_ft":
        return transformer_pruning_common.pretrained_config(True, arg.quick)
    kind, _, setting = arg.variant.partition("_")
    weight_bits, activation_bits = SETTINGS[setting]
    config = transformer_pruning_common.pretrained_config(kind == "qat", arg.quick)
    activations = None
    if activation_bits is not None:
        activations = qc.activation_stage(activation_bits, calibration="percentile" if activation_bits == 8 else "mse")
    qc.set_stages(config, qc.weight_stage(weight_bits, select=WEIGHTS), activations,
                  init_batches=INIT_BATCHES if activations else 0)
    return config
