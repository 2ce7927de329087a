"""Michel, Levy, Neubig 2019, "Are Sixteen Heads Really Better than One?": head pruning.

Paper: 20% (WMT) to 40% (BERT) of heads can go with little loss.
Ours: the trained Shakespeare Transformer (4 layers x 4 heads = 16 heads); K heads
removed, K in 2, 4, 8, 12 of 16, at least one kept per layer; the export is the
smaller model itself (fewer heads per layer, `num_heads` per layer in its config).

The recipe (variants K[_ft][_quick]): the paper's head importance. A mask
variable xi_h multiplies head h's output (xi = 1 is the trained model); head h's
output enters its block only through its slice W_out[h] of the attention
output projection, so d L(x) / d xi_h = sum over W_out[h] of w * dL(x)/dw, and

    I_h = mean over the calibration examples x of |d L(x) / d xi_h|

per example, as the paper's E_x (an example is one 128-character training
window, L(x) its mean next-character loss), computed exactly by
differentiating with respect to xi (`structured_prune(criterion="taylor_mask")`,
the groups' `importance` slice = the out-kernel slice; see
compression/structured_pruning.py). The importances of a layer's heads are
divided by their L2 norm over that layer (the paper's per-layer
normalisation, `normalize="layer_l2"`), then ranked over all layers at once
(`scope="global"`), the lowest pruned. Pruning is iterative as in the paper,
which re-estimates the importances on the pruned model between pruning steps
(its released BERT script prunes in cumulative steps of 5% of the heads): with
16 heads we prune one head per round, K rounds, every round re-estimating
I_h on the model masked so far. Calibration data: the first
CALIBRATION_BATCHES = 32 training batches of 32 windows (1024 windows,
131,072 characters; `compression.init_batches`), the paper's "few thousand
examples" in characters of our task; `_quick` reads 4. All of it happens at
init, on the trained model: the rows without `_ft` are the pruned model as is
(the paper prunes at test time), `_ft` fine-tunes it afterwards.

The ablation (variants K[_ft]_l1[_quick]): the K heads with the smallest L1
norm of their weights (query/key/value/output kernel slices summed; global
ranking without normalisation; one shot; no data). This is the recipe that
produced the committed results in paper/results/michel2019_char_transformer_K
and _K_ft (K in 2, 4, 8, 12 and 4_ft, 8_ft): those runs were made, before the
importance recipe, under the names K[_ft]; `K[_ft]_l1` builds the same config
(same stage, same groups, init_batches 0) and so reproduces them under its
own name (runs/michel2019_char_transformer_K[_ft]_l1). A rerun of K[_ft] now
runs the importance recipe, and writes over those folders.

Variants: K[_ft][_l1][_quick]; `_ft` fine-tunes, `_l1` is the L1-norm
ablation, `_quick` is a CPU check (`:quick` alone is `4_quick`).
"""
from configs import common, transformer_pruning_common
from experiments import structures

LEVELS = (2, 4, 8, 12)
CALIBRATION_BATCHES = 32
QUICK_CALIBRATION_BATCHES = 4


def get_config(arg: str = "4"):
    arg = common.parse_arg(arg, __file__, heads=(4, LEVELS), ft=False, l1=False, quick=False)
    config = transformer_pruning_common.pretrained_config(arg.ft, arg.quick)
    layers = config.model.num_layers
    total = sum(config.model.num_heads)
    if arg.l1:  # the committed results' recipe, stage for stage
        config.compression.stages = [{"technique": "structured_prune", "scope": "global",
                                      "sparsity": arg.heads / total,
                                      "groups": structures.transformer_head_groups(layers, importance=False)}]
        return config
    config.compression.stages = [{"technique": "structured_prune", "scope": "global", "sparsity": arg.heads / total,
                                  "criterion": "taylor_mask", "normalize": "layer_l2",
                                  "iterative_rounds": arg.heads,
                                  "groups": structures.transformer_head_groups(layers)}]
    config.compression.init_batches = QUICK_CALIBRATION_BATCHES if arg.quick else CALIBRATION_BATCHES
    return config
