"""Shared pieces of the distillation reproductions: the Transformer teacher and student, the soft-target term."""
from configs import baseline_char_transformer

# The 4-layer, 128-wide Shakespeare Transformer (configs/baseline_char_transformer.py) teaches;
# `:quick` students learn from its 300-step quick run instead.
TRANSFORMER_TEACHER = "runs/baseline_char_transformer/export/params.safetensors"
TRANSFORMER_TEACHER_QUICK = "runs/baseline_char_transformer_quick/export/params.safetensors"
TEACHER_LAYERS = 4
# Every student row trains this many steps (the teacher trained 4,000); `:quick` 10x fewer.
STUDENT_STEPS = 4000


def soft_targets(temperature: float, alpha: float, weight: float = 1.0) -> dict:
    """The `knowledge_distillation` loss term: (1 - alpha) CE + alpha T^2 KL(teacher ‖ student), times `weight`."""
    return {"term": "knowledge_distillation", "temperature": temperature, "alpha": alpha, "weight": weight}


def transformer_student(quick: bool, num_layers: int, width: int, head_dim: int, teacher: bool = True):
    """baseline_char_transformer's recipe for a student of `num_layers` x `width` (4 heads of `head_dim`).

    The FFN keeps the teacher's 4x width ratio; the student trains STUDENT_STEPS
    (STUDENT_STEPS / 10 if quick) with the teacher (its quick run if quick)
    named in config.teacher.export when `teacher`.
    """
    config = baseline_char_transformer.get_config("quick" if quick else "")
    config.model.update(num_layers=num_layers, width=width, num_heads=4, head_dim=head_dim, ffn_dim=4 * width)
    config.train.num_steps = STUDENT_STEPS // (10 if quick else 1)
    config.train.checkpoint_every = min(500, config.train.num_steps)
    if teacher:
        config.teacher.export = TRANSFORMER_TEACHER_QUICK if quick else TRANSFORMER_TEACHER
    return config
