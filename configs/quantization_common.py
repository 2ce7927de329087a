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
