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
the baseline's short CPU run.

Factorized embeddings (ALBERT's E < H): with 256 characters the embedding is
a sliver of the model, so the `embed_E` rows use the word-level Shakespeare
variant (dataset.level "word": the 8,192 most frequent tokens of the training
works plus an unknown token, the same split by work), where the vocabulary x
width embedding is most of the parameters, as in BERT. The input embedding is
vocabulary x E then E x width, and the output is tied to it (width x E, then
the embedding's transpose), as ALBERT's: `embed_128` (E = width, not
factorized), `embed_64`, `embed_32`; no cross-layer sharing, the same steps.
"""
from configs import baseline_char_transformer, common
from experiments import structures

SHARING = {"none": None, "all": ".*", "attention": "attn/.*|ln_attn/.*", "ffn": "ffn_in/.*|ffn_out/.*|ln_ffn/.*"}
EMBED_DIMS = (128, 64, 32)
WORD_VOCABULARY = 8192
ROWS = tuple(SHARING) + tuple(f"embed_{e}" for e in EMBED_DIMS)


def get_config(arg: str = "all"):
    arg = common.parse_arg(arg, __file__, row=("all", ROWS), quick=False)
    config = baseline_char_transformer.get_config("quick" if arg.quick else "")
    if arg.row.startswith("embed_"):
        config.dataset.update(level="word", vocab_size=WORD_VOCABULARY)
        config.model.update(embed_dim=int(arg.row[len("embed_"):]), tie_embeddings=True)
        return config
    select = SHARING[arg.row]
    if select is not None:
        config.compression.stages = [{"technique": "share", "select": select,
                                      "layers": structures.transformer_layers(config.model.num_layers)}]
    return config
