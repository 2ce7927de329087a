"""Howard et al. 2017, "MobileNets", Table 4: full against depthwise-separable convolutions.

Paper (ImageNet): MobileNet with full convolutions 71.7 % at 29.3 M
parameters and 4,866 M multiply-adds; with depthwise-separable ones 70.6 %
at 4.2 M and 569 M: about one point for 7-8x fewer parameters and FLOPs.
Ours (Fashion-MNIST): `experiments.models.MobileNetCNN`, a CNN whose
parameters sit almost all in its convolutions (FEATURES channels, STRIDES,
BatchNorm, global average pooling, one 10-way Dense), the first conv full as
in MobileNet:

- `full`: every block a full 3x3 conv, trained from scratch;
- `separable`: blocks 1-4 depthwise 3x3 + pointwise 1x1 (BatchNorm and ReLU
  after each), trained from scratch with the same recipe;
- `converted`: the trained `full` model (runs/howard2017_mobilenet_cnn_full,
  the same seed) with blocks 1-4 split into depthwise-pointwise pairs by the
  best rank-1 split per input channel (compression/separable.py), then
  fine-tuned for FINETUNE_EPOCHS; its export runs the pairs.

Accuracy, parameters, FLOPs (results.json) and latency
(`python -m experiments.benchmark_inference --runs=...`) side by side.
Recipe: EPOCHS epochs of Adam at 1e-3, cosine, batch 128. Append `_quick`
for a CPU check (10x fewer steps).
"""
from configs import common, default

KINDS = ("full", "separable", "converted")
# Half the widths first tried (32-256): there `full` trained at about 1 step/s on this 2-core CPU and
# `separable` at 0.5 (XLA:CPU's grouped convolutions, their gradients above all, are slow; the model now
# computes its depthwise convolutions as shifted multiply-adds, experiments.models.depthwise_conv, 7-50x
# faster), 10 epochs taking hours a run.
FEATURES = (16, 32, 64, 64, 128)
STRIDES = (1, 2, 1, 2, 1)
EPOCHS = 5
FINETUNE_EPOCHS = 2
STEPS_PER_EPOCH = 468  # 60,000 / 128, the last partial batch dropped
# {quick} is "" or "_quick"; {seed} is left for the driver (experiments.provenance.seeded_path).
FULL_EXPORT = "runs/howard2017_mobilenet_cnn_full{quick}/seed_{{seed}}/export/params.safetensors"


def get_config(arg: str = "full"):
    arg = common.parse_arg(arg, __file__, kind=("full", KINDS), quick=False)
    scale = 10 if arg.quick else 1
    config = default.get_config()
    config.model = {"name": "mobilenet_cnn", "features": FEATURES, "strides": STRIDES,
                    "blocks": "separable" if arg.kind == "separable" else "full"}
    config.train.num_steps = EPOCHS * STEPS_PER_EPOCH // scale
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    if arg.kind == "converted":
        config.init_from = FULL_EXPORT.format(quick="_quick" if arg.quick else "")
        config.train.num_steps = FINETUNE_EPOCHS * STEPS_PER_EPOCH // scale
        config.optimizer.learning_rate = 3e-4
        config.compression.stages = [{"technique": "separable", "select": r"conv_[1-9]\d*/kernel"}]
    return config
