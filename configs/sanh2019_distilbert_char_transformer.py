"""Sanh et al. 2019, "DistilBERT": a 2-layer student of the 4-layer Shakespeare Transformer, initialised from it.

Paper (GLUE): DistilBERT, BERT-base with every other layer (6 of 12), initialised
from the teacher's layers and trained with soft targets (T = 2), the masked-LM
loss and a cosine loss on the hidden states, keeps 97 % of BERT's score, 40 %
smaller and 60 % faster. Ours: the same recipe on the character model: the
student keeps the teacher's width (128), starts from its embeddings, final
norm and head and from teacher layers 0 and 2 (INIT_LAYERS), and trains for
distillation_common.STUDENT_STEPS steps on 5 · soft targets + 2 · the
next-character loss + 1 · (1 - cos) between its last hidden state and the
teacher's (DistilBERT's weights; `knowledge_distillation` with alpha = 5/7,
weight 7). Beside configs/jiao2020_tinybert_char_transformer.py's rows.
`:quick` (also `distilbert_quick`) trains 400 steps from the teacher's quick run.
"""
from configs import common, distillation_common

STUDENT_LAYERS, STUDENT_WIDTH, STUDENT_HEAD_DIM = 2, 128, 32
# student block -> the teacher block it starts from: every other layer
INIT_LAYERS = (("block_0", "block_0"), ("block_1", "block_2"))
TEMPERATURE = 2.0
SOFT_WEIGHT, LABEL_WEIGHT, COSINE_WEIGHT = 5.0, 2.0, 1.0


def get_config(arg: str = "distilbert"):
    arg = common.parse_arg(arg, __file__, kind=("distilbert", ("distilbert",)), quick=False)
    config = distillation_common.transformer_student(arg.quick, STUDENT_LAYERS, STUDENT_WIDTH, STUDENT_HEAD_DIM)
    config.init_from = config.teacher.export
    config.init_layers = [list(pair) for pair in INIT_LAYERS]
    total = SOFT_WEIGHT + LABEL_WEIGHT
    last_student, last_teacher = f"hidden_{STUDENT_LAYERS - 1}", f"hidden_{distillation_common.TEACHER_LAYERS - 1}"
    config.loss = [distillation_common.soft_targets(TEMPERATURE, SOFT_WEIGHT / total, weight=total),
                   {"term": "hidden_cosine", "pairs": [[last_student, last_teacher]], "weight": COSINE_WEIGHT}]
    return config
