"""Romero et al. 2015, "FitNets: Hints for Thin Deep Nets": a thin, deeper CNN student on Fashion-MNIST.

Paper (CIFAR-10): a FitNet of 11 layers and about 2.5 M parameters, trained
first to predict the teacher's middle layer from its own (hints, through a
learned regressor) and then on the teacher's soft targets, reaches 91.61 %,
above its 9 M-parameter teacher's 90.18 %. Ours: the teacher is a VGG-style
CNN (two stages of two 3x3 convolutions, 32 then 64 channels, a 256-unit
dense layer; about 870 K parameters) and the student two stages of three 3x3
convolutions, 8 then 16 channels, and a 64-unit dense layer (about 58 K):
deeper, much thinner.

Variants (append `_quick` for a CPU check, 10x fewer steps; `:quick` alone is `fitnet_quick`):
- `teacher`: the teacher, EPOCHS epochs of Adam, labels only;
- `student`: the student alone, the same;
- `kd`: the student on the teacher's soft targets (`knowledge_distillation`
  at TEMPERATURE, ALPHA) from scratch;
- `hints`: FitNets' first stage: the student's middle layer (`features_0`,
  14 x 14 x 8) regressed onto the teacher's (`features_0`, 14 x 14 x 32)
  through a learned 1x1 regressor (`hint`), HINT_EPOCHS epochs; only the
  layers below the guided one receive gradients;
- `fitnet`: the second stage: from the `hints` run of the same seed, the
  soft-target loss for EPOCHS epochs;
- `at`: attention transfer (Zagoruyko & Komodakis 2017) beside it: labels plus
  β/2 · the attention-map distance at both stages' outputs (β = 1000, the
  paper's), from scratch.
Every variant holds out the selection split (pruning_common.SELECTION_SIZE).
"""
from configs import common, default, distillation_common, hinton2015_mlp, pruning_common

KINDS = ("fitnet", "teacher", "student", "kd", "hints", "at")
TEACHER_MODEL = {"name": "vgg", "stages": ((32, 32), (64, 64)), "dense": (256,)}
STUDENT_MODEL = {"name": "vgg", "stages": ((8, 8, 8), (16, 16, 16)), "dense": (64,)}
EPOCHS = 15
HINT_EPOCHS = 5
TEMPERATURE = hinton2015_mlp.TEMPERATURE
ALPHA = hinton2015_mlp.ALPHA
ATTENTION_BETA = 1000.0
HINT_PAIRS = (("features_0", "features_0"),)
ATTENTION_PAIRS = (("features_0", "features_0"), ("features_1", "features_1"))


def _run(kind: str, quick: bool) -> str:
    return f"runs/romero2015_fitnets_cnn_{kind}{'_quick' if quick else ''}/seed_{{seed}}/export/params.safetensors"


def get_config(arg: str = "fitnet"):
    arg = common.parse_arg(arg, __file__, kind=("fitnet", KINDS), quick=False)
    scale = 10 if arg.quick else 1
    config = default.get_config()
    config.dataset.selection_size = pruning_common.SELECTION_SIZE
    config.model = dict(TEACHER_MODEL if arg.kind == "teacher" else STUDENT_MODEL)
    config.train.num_steps = (HINT_EPOCHS if arg.kind == "hints" else EPOCHS) * pruning_common.STEPS_PER_EPOCH // scale
    config.train.log_every = 200
    config.train.checkpoint_every = 1000
    if arg.kind in ("teacher", "student"):
        return config
    config.teacher.export = _run("teacher", arg.quick)
    soft = distillation_common.soft_targets(TEMPERATURE, ALPHA)
    if arg.kind == "hints":
        config.loss = [{"term": "hint", "pairs": [list(p) for p in HINT_PAIRS]}]
    elif arg.kind == "at":
        config.loss = [{"term": "cross_entropy"},
                       {"term": "attention_transfer", "pairs": [list(p) for p in ATTENTION_PAIRS],
                        "weight": ATTENTION_BETA / 2}]
    else:
        config.loss = [soft]
        if arg.kind == "fitnet":
            config.init_from = _run("hints", arg.quick)
    return config
