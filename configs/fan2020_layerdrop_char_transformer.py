"""Fan et al. 2020, LayerDrop: train with whole layers dropped at random, then prune layers without fine-tuning.

Paper: a Transformer trained with LayerDrop (p = 0.2) can have layers
removed at inference (every other layer works well) with no fine-tuning,
and the pruned model matches or beats a model of the same depth trained
from scratch; without LayerDrop, removing layers hurts far more.

Ours, on Shakespeare, the baseline Transformer's recipe (4 layers, 4,000
steps; configs/baseline_char_transformer.py). Variants [_quick]:
- `train`: trained with model.layer_drop_rate = RATE (each block skipped
  with that probability per batch), the selection works held out
  (dataset.selection_offset SELECTION_OFFSET), for the subset chosen below;
- `shallow`: a 2-layer model trained from scratch, same recipe and data;
- SOURCE_KEEP: 2 of the 4 layers kept by a `layer_drop` stage, no training
  step, the export the 2-layer model. SOURCE `layerdrop` (the `train` run
  of the same seed) or `baseline` (runs/baseline_char_transformer, trained
  without LayerDrop, on all works but the validation ones: 4 more works than
  `train`, which favours it); KEEP `even` (layers 0 and 2: every other
  layer, as Fan et al. prune) or `bottom` (0 and 1: the top two dropped, as
  Sajjad et al.), or `all` (no layer dropped: the full model's loss).

The subset chosen on the selection works (never the validation ones):
python -m experiments.select --config=fan2020_layerdrop_char_transformer:layerdrop_even \
    --grid='compression.stages.0.drop=[0,1],[0,2],[0,3],[1,2],[1,3],[2,3]' --metric=selection_loss_nats
"""
from configs import baseline_char_transformer, common, transformer_pruning_common
from experiments import structures

RATE = 0.2
SELECTION_OFFSET = 5  # Cymbeline, Julius Caesar, Othello, The Tempest
LAYERDROP = "runs/fan2020_layerdrop_char_transformer_train{quick}/seed_{seed}/export/params.safetensors"
DROPPED = {"even": [1, 3], "bottom": [2, 3], "all": []}
VARIANTS = ("train", "shallow", *(f"{s}_{k}" for s in ("layerdrop", "baseline") for k in DROPPED))


def get_config(arg: str = "train"):
    arg = common.parse_arg(arg, __file__, variant=("train", VARIANTS), quick=False)
    if arg.variant in ("train", "shallow"):
        config = baseline_char_transformer.get_config("quick" if arg.quick else "")
        config.dataset.selection_offset = SELECTION_OFFSET
        if arg.variant == "train":
            config.model.layer_drop_rate = RATE
        else:
            config.model.num_layers = 2
        return config
    source, _, keep = arg.variant.partition("_")
    config = transformer_pruning_common.pretrained_config(False, arg.quick)
    if source == "layerdrop":
        config.init_from = LAYERDROP.replace("{quick}", "_quick" if arg.quick else "")
        config.dataset.selection_offset = SELECTION_OFFSET
    config.compression.stages = [{"technique": "layer_drop",
                                  "layers": structures.transformer_layers(config.model.num_layers),
                                  "drop": DROPPED[keep]}]
    return config
