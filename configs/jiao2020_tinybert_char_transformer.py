"""Jiao et al. 2020, "TinyBERT": a 2-layer, 96-wide student of the 4-layer, 128-wide Shakespeare Transformer.

Paper (GLUE): TinyBERT-4 (4 layers, 312 wide, 14.5 M parameters) keeps 96.8 % of
BERT-base's score by distilling the embeddings, every mapped layer's hidden
states and attention maps, and the predictions. Ours: the character model,
validation loss in nats per character, every row trained for
distillation_common.STUDENT_STEPS steps from scratch with the same recipe.

Variants (append `_quick` for a CPU check: 10x fewer steps, from the teacher's quick run):
- `alone`: the student on the labels only;
- `logits`: the student on the teacher's soft targets (`knowledge_distillation`
  at TEMPERATURE, weight ALPHA on the soft targets);
- `tinybert`: the soft targets plus TinyBERT's layer losses: `hidden_mse` on
  the embeddings and on student layer m against teacher layer 2m + 1
  (LAYER_MAP; the uniform mapping of the paper), through learned 96 -> 128
  projections, and `attention_mse` on the same layers' attention
  probabilities (4 heads each). The paper trains the layer losses first and
  the predictions after; here all terms train together, one stage. It
  compares attention scores before the softmax; probabilities over 128 keys
  differ by about 1/128 each, so at weight 1 this term is small beside the
  others (about 0.003 against 1.3 for the soft targets in the quick run);
- `layers` and `staged`: the paper's two stages instead of one. `layers`
  trains LAYER_STEPS steps on the layer losses alone (embeddings, hidden
  states, attention: no labels, no soft targets), and `staged` continues
  from that run of the same seed on the soft targets for the rest of
  STUDENT_STEPS, so the two stages together train as many steps as every
  other row. In one stage the hidden-state term (the pre-norm residual
  stream, which grows with depth, where BERT's is layer-normed) stays the
  largest part of the loss (1.7 of 2.7 at the end of the full run), and the
  student ends worse than alone; two stages keep it out of the predictions'
  training.
"""
from configs import common, distillation_common

KINDS = ("tinybert", "alone", "logits", "layers", "staged")
STUDENT_LAYERS, STUDENT_WIDTH, STUDENT_HEAD_DIM = 2, 96, 24
# student layer -> teacher layer
LAYER_MAP = ((0, 1), (1, 3))
TEMPERATURE = 2.0
ALPHA = 0.5
# `layers`: the first of `staged`'s two stages; `staged` trains the rest of STUDENT_STEPS.
LAYER_STEPS = distillation_common.STUDENT_STEPS // 4


def _run(kind: str, quick: bool) -> str:
    return (f"runs/jiao2020_tinybert_char_transformer_{kind}{'_quick' if quick else ''}"
            "/seed_{seed}/export/params.safetensors")


def _layer_losses() -> list[dict]:
    """TinyBERT's embedding, hidden-state (through learned projections) and attention terms on LAYER_MAP."""
    hidden = [["embedding", "embedding"]] + [[f"hidden_{s}", f"hidden_{t}"] for s, t in LAYER_MAP]
    attention = [[f"block_{s}/attn/attention", f"block_{t}/attn/attention"] for s, t in LAYER_MAP]
    return [{"term": "hidden_mse", "pairs": hidden}, {"term": "attention_mse", "pairs": attention}]


def get_config(arg: str = "tinybert"):
    arg = common.parse_arg(arg, __file__, kind=("tinybert", KINDS), quick=False)
    config = distillation_common.transformer_student(arg.quick, STUDENT_LAYERS, STUDENT_WIDTH, STUDENT_HEAD_DIM,
                                                     teacher=arg.kind != "alone")
    if arg.kind == "alone":
        return config
    scale = 10 if arg.quick else 1
    if arg.kind == "layers":
        config.train.num_steps = LAYER_STEPS // scale
        config.loss = _layer_losses()
    else:
        config.loss = [distillation_common.soft_targets(TEMPERATURE, ALPHA)]
        if arg.kind == "tinybert":
            config.loss += _layer_losses()
        elif arg.kind == "staged":
            config.train.num_steps = (distillation_common.STUDENT_STEPS - LAYER_STEPS) // scale
            config.init_from = _run("layers", arg.quick)
    config.train.checkpoint_every = min(config.train.checkpoint_every, config.train.num_steps)
    return config
