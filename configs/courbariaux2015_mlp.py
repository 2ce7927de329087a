"""Courbariaux, Bengio, David 2015, "BinaryConnect": an MLP trained with binary weights.

Paper (MNIST, permutation-invariant): 3 hidden layers of 1024 ReLU units with
batch norm; deterministic BinaryConnect (forward and backward with sign(W),
the real-valued weights clipped to [-1, 1] and updated by the
straight-through gradient) reaches 1.29% test error (stochastic 1.18%).
Ours (Fashion-MNIST): the same 784-1024-1024-1024-10 MLP with LayerNorm in
place of batch norm (the committed runs; like batch norm it rescales the +-1
sums), Adam, 20 epochs of batch 128, cosine schedule. `,normalization=batch`
(e.g. `:binary_quick,normalization=batch`) uses batch norm as the paper,
with its running statistics carried through training and the export:

- `fp`: full precision.
- `binary`: deterministic BinaryConnect on every kernel: sign(W) with no
  scale, shadow weights clipped to [-1, 1] after each step; 1-bit export.
- `bwn`: sign(W) times mean|W| per output unit (Rastegari et al. 2016), no clipping.
The stochastic variant is not implemented. Append `_quick` for 2 epochs;
`:quick` alone is `binary_quick`.
"""
from configs import common, default

KINDS = {
    "fp": None,
    "binary": {"technique": "quantize", "select": ".*kernel", "scheme": "binary", "binary_scale": "none"},
    "bwn": {"technique": "quantize", "select": ".*kernel", "scheme": "binary", "binary_scale": "mean"},
}
EPOCHS, STEPS_PER_EPOCH = 20, 468


def get_config(arg: str = "binary"):
    arg = common.parse_arg(arg, __file__, kind=("binary", tuple(KINDS)), quick=False, normalization="layer")
    config = default.get_config()
    config.model = {"name": "mlp", "hidden": (1024, 1024, 1024), "normalization": arg.normalization}
    config.train.num_steps = (2 if arg.quick else EPOCHS) * STEPS_PER_EPOCH
    config.train.log_every = 200
    config.train.checkpoint_every = 2000
    if KINDS[arg.kind] is not None:
        config.compression.stages = [dict(KINDS[arg.kind])]
    return config
