"""Li, Zhang, Liu 2016, "Ternary Weight Networks": LeNet-5 trained with ternary (and binary) weights.

Paper (MNIST, LeNet-5): full precision 99.41%, BWN 99.05%, TWN 99.35%:
ternary weights {-a, 0, +a} lose almost nothing, binary a little more.
Ours (Fashion-MNIST, LeNet-5 in the Caffe form, the baseline_lenet5 recipe:
15 epochs of batch 128, Adam 1e-3 with a cosine schedule, from scratch):

- `fp`: full precision; the same config as configs/baseline_lenet5.py, whose
  3-seed results are the full-precision row.
- `twn`: every kernel ternarized in the forward pass with the paper's
  per-layer threshold 0.7 mean|W| and scale a = mean of |W| above it,
  straight-through gradient to the float weights (2-bit packed export).
- `bwn`: every kernel binarized, a * sign(W) with a = mean|W| per layer
  (1-bit packed export).
Append `_quick` for 1 epoch; `:quick` alone is `twn_quick`.
"""
from configs import baseline_lenet5, common

KINDS = {
    "fp": None,
    "twn": {"technique": "quantize", "select": ".*kernel", "scheme": "ternary", "per_channel": False},
    "bwn": {"technique": "quantize", "select": ".*kernel", "scheme": "binary", "binary_scale": "mean",
            "per_channel": False},
}


def get_config(arg: str = "twn"):
    arg = common.parse_arg(arg, __file__, kind=("twn", tuple(KINDS)), quick=False)
    config = baseline_lenet5.get_config("quick" if arg.quick else "")
    if KINDS[arg.kind] is not None:
        config.compression.stages = [dict(KINDS[arg.kind])]
    return config
