"""Shared pieces of the quantization reproductions (Fashion-MNIST LeNets and the Shakespeare Transformer)."""
from __future__ import annotations

from typing import Optional

BIT_LEVELS = (32, 16, 8, 6, 4, 3, 2, 1)  # 32: the float model, no quantization


def weight_stage(bits: int, *, calibration: str = "minmax", select=".*kernel", per_channel: bool = True,
                 **extra) -> Optional[dict]:
    """The `quantize` stage for weights at `bits`: symmetric uniform per output channel, binary (BWN) at 1 bit.

    None at 32 bits (the float model).
    """
    if bits == 32:
        return None
    if bits == 1:
        return {"technique": "quantize", "select": select, "scheme": "binary", "binary_scale": "mean",
                "per_channel": per_channel, **extra}
    return {"technique": "quantize", "select": select, "scheme": "uniform", "bits": bits, "symmetric": True,
            "per_channel": per_channel, "calibration": calibration, **extra}


def activation_stage(bits: int, *, calibration: str = "percentile", percentile: float = 99.99) -> dict:
    """The `quantize_activations` stage: every layer's input, asymmetric per tensor, calibrated on init batches."""
    return {"technique": "quantize_activations", "scheme": "uniform", "bits": bits, "symmetric": False,
            "calibration": calibration, "percentile": percentile}


def set_stages(config, *stages: Optional[dict], init_batches: int = 0) -> None:
    """config.compression.stages = the given stages (None skipped), in order."""
    config.compression.stages = [s for s in stages if s is not None]
    config.compression.init_batches = init_batches


SWEEP_KINDS = ("ptq", "ptqmse", "ptqmixed", "qat")
MIXED_CANDIDATES = (8, 6, 4, 3, 2)
MIXED_BUDGETS = (6, 4, 3, 2)
MIXED_INIT_BATCHES = 4


def qat_recipe(learning_rate: float, schedule: str, epochs: int) -> dict:
    """A QAT fine-tuning recipe: Adam at `learning_rate` under `schedule` ("constant" or "cosine") for `epochs`."""
    return {"learning_rate": learning_rate, "schedule": schedule, "epochs": epochs}


def bits_sweep_config(arg: str, config_file: str, baseline, pretrained: str, pretrained_heldout: str,
                      recipe: dict):
    """The bit-width sweep variant ARG = KIND_BITS[_heldout][_quick] of `baseline`'s model, from `pretrained`.

    `config_file` is the calling config's __file__ (for error messages); its
    default variant, and so `:quick` alone, is `qat_4` (`qat_4_quick`).
    `recipe` (`qat_recipe`) is how `qat_B` fine-tunes.
    Variants, BITS in 32, 16, 8, 6, 4, 3, 2, 1 (32 = float):
    - `ptq_B`: the trained baseline's weights quantized once (symmetric
      uniform, per output channel, min-max range; binary with BWN's mean|w|
      scale at 1 bit) and evaluated, no training (train.num_steps = 0).
    - `ptqmse_B`: the same with the MSE-optimal clipping range.
    - `ptqmixed_B`: mixed precision after training: each kernel's bits chosen
      from MIXED_CANDIDATES so that the kernels average at most B bits per
      weight, by the measured loss increase of quantizing that kernel alone
      on MIXED_INIT_BATCHES training batches (compression.mixed_precision);
      MSE ranges; B in MIXED_BUDGETS.
    - `qat_B`: the same quantizer as `ptq_B` during fine-tuning by `recipe`
      (straight-through gradients, ranges following the weights every step);
      `qat_32` is the float fine-tune, the control.
    - `_heldout`: the variant started from `pretrained_heldout` (the baseline
      trained without the selection split) and holding that split out, for
      choosing the recipe on it (experiments.select).
    All kernels are quantized, biases stay float32; the export packs each
    kernel's codes at B bits with its per-channel scales (bytes measured on disk).
    """
    from configs import common, pruning_common

    parsed = common.parse_arg(arg, config_file, kind=("qat", SWEEP_KINDS), bits=(4, BIT_LEVELS), heldout=False,
                              quick=False)
    kind, bits = parsed.kind, parsed.bits
    if kind == "ptqmixed" and bits not in MIXED_BUDGETS:
        raise common.arg_error(config_file, arg, f"ptqmixed takes a budget of {MIXED_BUDGETS} bits per weight",
                               f"ptqmixed_B[_quick] with B one of {', '.join(map(str, MIXED_BUDGETS))}")
    config = baseline.get_config("heldout" if parsed.heldout else "")
    pruning_common.finetune(config, pretrained_heldout if parsed.heldout else pretrained, parsed.quick)
    if kind == "qat":
        config.optimizer.update(learning_rate=recipe["learning_rate"], schedule=recipe["schedule"])
        config.train.num_steps = recipe["epochs"] * pruning_common.STEPS_PER_EPOCH // (10 if parsed.quick else 1)
    else:
        config.train.num_steps = 0
    if kind == "ptqmixed":
        stage = dict(weight_stage(8, calibration="mse"), bits="auto", budget_bits_per_weight=bits,
                     candidate_bits=MIXED_CANDIDATES)
        set_stages(config, stage, init_batches=MIXED_INIT_BATCHES)
        return config
    set_stages(config, weight_stage(bits, calibration="mse" if kind == "ptqmse" else "minmax"))
    return config
