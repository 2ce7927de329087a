"""Knowledge distillation's loss terms (compression/distillation.py) on hand-computed logits."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import distillation, losses

# Teacher logits T·log p give softmax(t / T) = p exactly; a student of zeros is uniform.
TEACHER_PROBS = np.array([0.5, 0.25, 0.25])


def _outputs(temperature):
    student = {"logits": jnp.zeros((1, 3))}
    extras = {"teacher": {"logits": jnp.asarray(temperature * np.log(TEACHER_PROBS))[None]}}
    return student, {"targets": jnp.array([0])}, extras


@pytest.mark.parametrize("temperature", [1.0, 2.0, 20.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
def test_the_loss_mixes_cross_entropy_and_t_squared_kl_as_computed_by_hand(temperature, alpha):
    # KL([.5, .25, .25] ‖ [1/3] * 3) = .5 ln 1.5 + .5 ln .75 = .5 ln 1.125; the uniform student's
    # cross-entropy with label 0 is ln 3.
    expected = (1 - alpha) * math.log(3) + alpha * temperature ** 2 * 0.5 * math.log(1.125)
    loss = losses.build_loss([{"term": "knowledge_distillation", "temperature": temperature, "alpha": alpha}])
    total, values = loss.total(*_outputs(temperature))
    assert float(total) == pytest.approx(expected, rel=1e-5)
    assert float(values["knowledge_distillation"]) == pytest.approx(expected, rel=1e-5)


def test_t_squared_keeps_the_soft_target_gradient_near_the_papers_high_temperature_limit():
    # Hinton et al. 2015, eq. 4: for zero-mean logits and large T, the gradient of the
    # soft-target loss with respect to a student logit is (z_i - v_i) / (N T^2); times T^2 it
    # no longer depends on T. Mean over B examples divides by B.
    rng = np.random.default_rng(0)
    batch, classes = 4, 10
    student = rng.normal(size=(batch, classes)).astype(np.float32)
    teacher = rng.normal(size=(batch, classes)).astype(np.float32)
    student -= student.mean(-1, keepdims=True)
    teacher -= teacher.mean(-1, keepdims=True)

    def grad(temperature):
        return np.asarray(jax.grad(lambda s: distillation.soft_target_kl(s, jnp.asarray(teacher), temperature))(
            jnp.asarray(student)))

    limit = (student - teacher) / (classes * batch)
    assert np.linalg.norm(grad(50.0) - limit) < 0.02 * np.linalg.norm(limit)
    norms = {t: np.linalg.norm(grad(t)) for t in (2.0, 4.0, 8.0, 20.0)}
    assert max(norms.values()) / min(norms.values()) < 1.5  # without T^2: 100x from T = 2 to 20
    assert norms[20.0] == pytest.approx(np.linalg.norm(limit), rel=0.02)


@pytest.mark.parametrize("settings, why", [
    ({"temperature": 0.0}, "knowledge_distillation.temperature must be a finite number > 0"),
    ({"temperature": -2.0}, "knowledge_distillation.temperature must be a finite number > 0"),
    ({"alpha": 1.5}, r"knowledge_distillation.alpha must be a finite number in \[0, 1\]"),
    ({"alpha": -0.1}, r"knowledge_distillation.alpha must be a finite number in \[0, 1\]"),
])
def test_a_bad_temperature_or_alpha_is_refused_naming_the_setting(settings, why):
    with pytest.raises(ValueError, match=why):
        losses.build_loss([{"term": "knowledge_distillation", **settings}])


def test_without_a_teacher_or_with_another_tasks_teacher_the_term_says_what_to_set():
    term = distillation.knowledge_distillation(temperature=2.0)
    student, batch, _ = _outputs(2.0)
    with pytest.raises(ValueError, match="needs a teacher: set config.teacher.export"):
        term(student, batch, {})
    with pytest.raises(ValueError, match=r"the student's logits \(1, 3\) and the teacher's \(1, 4\) differ"):
        term(student, batch, {"teacher": {"logits": jnp.zeros((1, 4))}})
