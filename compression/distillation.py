"""Knowledge distillation as loss terms: the student learns from the teacher's outputs.

Distillation changes the loss, not the parameters: the driver runs the
teacher (`config.teacher.export`) inside the jitted step without gradients
and hands its outputs to the terms as `extras["teacher"]` (compression/losses.py).

- `knowledge_distillation` (Hinton, Vinyals, Dean 2015, "Distilling the
  Knowledge in a Neural Network"): the hard-label cross-entropy mixed with the
  KL divergence between the teacher's and the student's softmax at temperature
  T, scaled by T^2 so that the soft targets' gradients keep their size as T
  changes (the paper's Section 2).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from compression.losses import LossTerm, mean_cross_entropy, register_loss
from compression.settings import require_float


def soft_target_kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """T^2 · mean over examples (and positions) of KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015).

    The T^2 factor keeps the gradient's magnitude roughly constant in T: the
    gradient of the KL with respect to a student logit is (q_i - p_i) / T,
    which for large T is about (s_i - t_i) / (N T^2) (the paper's eq. 3-4).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"the student's logits {student_logits.shape} and the teacher's "
                         f"{teacher_logits.shape} differ in shape: a teacher must predict the student's "
                         f"classes for the same examples")
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
    return temperature ** 2 * jnp.mean(kl)


def teacher_outputs(extras: Mapping[str, Any], term: str) -> Mapping[str, Any]:
    """extras["teacher"], or a ValueError saying how to name a teacher."""
    if "teacher" not in extras:
        raise ValueError(f"loss term {term!r} needs a teacher: set config.teacher.export to the teacher run's "
                         f"export (or its run folder), e.g. runs/NAME/export/params.safetensors")
    return extras["teacher"]


@register_loss("knowledge_distillation")
def knowledge_distillation(temperature: float = 1.0, alpha: float = 0.5) -> LossTerm:
    """(1 - α) · cross-entropy with the labels + α · T^2 · KL(teacher ‖ student) at temperature T.

    Hinton et al. 2015: α = 1 trains on the soft targets alone, α = 0 is plain
    training; the paper weights the hard targets "considerably lower".
    """
    temperature = require_float("knowledge_distillation.temperature", temperature, low=0, low_open=True,
                                fix="T = 1 is the plain softmax; Hinton et al. use up to 20")
    alpha = require_float("knowledge_distillation.alpha", alpha, low=0, high=1,
                          fix="alpha weighs the soft targets, 1 - alpha the labels")

    def term(outputs, batch, extras):
        teacher = teacher_outputs(extras, "knowledge_distillation")
        soft = soft_target_kl(outputs["logits"], teacher["logits"], temperature)
        if alpha == 1.0:
            return soft
        return (1.0 - alpha) * mean_cross_entropy(outputs["logits"], batch["targets"]) + alpha * soft

    return term
