"""Zhu & Gupta 2017, "To prune, or not to prune": gradual vs one-shot pruning, and large-sparse vs small-dense.

Variants (`configs/zhu2017_lenet300.py:VARIANT`, append `_quick` for a CPU check; `:quick` alone is
`gradual_90_quick`, and `:quick,sparsity=75` is `gradual_75_quick`):
- `gradual_S_layer`: the paper's recipe: every layer's kernel pruned by magnitude to its own
  s_t, with the cubic schedule of its eq. 1,
      s_t = s_f + (s_i - s_f) (1 - (t - t0)/(n dt))^3,  s_i = 0, so s_t = s_f (1 - (1 - (t - t0)/(n dt))^3),
  from epoch 2 (t0) to epoch 12 (t0 + n dt), updated every dt = 50 steps, then fine-tuning to epoch 20;
- `oneshot_S_layer`: the same total training, each layer's S% removed at once at epoch 12, then fine-tuning;
- `gradual_S`, `oneshot_S` (no `_layer`): the same with one global magnitude ranking over all
  kernels (an ablation: layers then keep different fractions); the committed
  paper/results/zhu2017_lenet300_{gradual,oneshot}_S runs are these;
- `smalldense_S`: a dense MLP whose hidden layers are scaled so it has about as many
  parameters as LeNet-300-100 keeps at S% sparsity (the paper's small-dense baseline).
S is one of 50, 75, 90, 95, 98.
"""

from configs import baseline_lenet300, common, pruning_common

KINDS = ("gradual", "oneshot", "smalldense")
SPARSITIES = (50, 75, 90, 95, 98)


def small_dense_hidden(sparsity: float) -> tuple:
    """Hidden sizes (300f, 100f) whose parameter count is closest to (1 - sparsity) of LeNet-300-100's."""
    target = (1 - sparsity) * 266_610
    count = lambda f: 784 * round(300 * f) + round(300 * f) * round(100 * f) + round(100 * f) * 10 \
        + round(300 * f) + round(100 * f) + 10
    best = min((f / 1000 for f in range(5, 1001)), key=lambda f: abs(count(f) - target))
    return (max(1, round(300 * best)), max(1, round(100 * best)))


def get_config(arg: str = "gradual_90"):
    arg = common.parse_arg(arg, __file__, kind=("gradual", KINDS), sparsity=(90, SPARSITIES), layer=False,
                           quick=False)
    kind, sparsity = arg.kind, arg.sparsity / 100
    scale = 10 if arg.quick else 1
    epoch = pruning_common.STEPS_PER_EPOCH // scale
    config = baseline_lenet300.get_config()
    config.train.num_steps = 20 * epoch
    if kind == "smalldense":
        if arg.layer:
            raise ValueError("zhu2017_lenet300: smalldense is a dense model; it takes no `_layer` flag")
        config.model.hidden = small_dense_hidden(sparsity)
        return config
    if kind == "gradual":
        schedule = {"kind": "polynomial", "final_sparsity": sparsity, "begin_step": 2 * epoch,
                    "end_step": 12 * epoch, "frequency": max(1, 50 // scale)}
    else:
        schedule = {"kind": "one_shot", "sparsity": sparsity, "at_step": 12 * epoch}
    pruning_common.set_pruning(config, pruning_common.prune_stage(schedule, scope="layer" if arg.layer else "global"))
    return config
