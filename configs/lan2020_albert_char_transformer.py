"""Lan et al. 2020, "ALBERT", Table 4: cross-layer parameter sharing on the Shakespeare Transformer.

Paper (ALBERT-base, E = 768, average over its downstream tasks):
all-shared 31 M parameters 79.8; shared-attention 83 M 81.6; shared-FFN
57 M 79.5; not-shared 108 M 82.3: sharing the attention costs little,
sharing the FFN more. Ours: the baseline character Transformer
(configs/baseline_char_transformer.py: 4 layers, width 128, FFN 512) trained
from scratch with its 4 blocks' parameters tied by `share`
(compression/sharing.py) in one of SHARING's ways, the same steps for every
row; parameters (the export stores a tied array once) and validation loss.

Variants: `none` (not shared), `all`, `attention` (attention projections
and their LayerNorm), `ffn` (the FFN and its LayerNorm); append `_quick` for
the baseline's short CPU run. The factorized-embedding rows (E < width) need
the word-level Shakespeare variant and are not here yet.
"""
from configs import baseline_char_transformer, common
from experiments import structures

SHARING = {"none": None, "all": ".*", "attention": "attn/.*|ln_attn/.*", "ffn": "ffn_in/.*|ffn_out/.*|ln_ffn/.*"}


def get_config(arg: str = "all"):
    arg = common.parse_arg(arg, __file__, sharing=("all", tuple(SHARING)), quick=False)
    config = baseline_char_transformer.get_config("quick" if arg.quick else "")
    select = SHARING[arg.sharing]
    if select is not None:
        config.compression.stages = [{"technique": "share", "select": select,
                                      "layers": structures.transformer_layers(config.model.num_layers)}]
    return config
