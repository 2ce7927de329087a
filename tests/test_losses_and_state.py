"""The loss as configured terms, the teacher slot, and model state beyond params (batch_stats, intermediates)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import losses
from experiments import models, train
from tests.helpers import tiny_config

LOGITS = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]], np.float32)
TARGETS = np.array([0, 2], np.int32)


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_cross_entropy_term_is_the_mean_negative_log_likelihood():
    loss = losses.build_loss([{"term": "cross_entropy"}])
    total, terms = loss.total({"logits": LOGITS}, {"targets": TARGETS}, {})
    expected = -np.mean(_log_softmax(LOGITS)[np.arange(2), TARGETS])
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)
    assert list(terms) == ["cross_entropy"]


def test_label_smoothing_mixes_the_uniform_distribution_into_the_target():
    s = 0.3
    loss = losses.build_loss([{"term": "cross_entropy", "label_smoothing": s}])
    total, _ = loss.total({"logits": LOGITS}, {"targets": TARGETS}, {})
    target = np.full((2, 3), s / 3) + (1 - s) * np.eye(3)[TARGETS]
    expected = -np.mean(np.sum(target * _log_softmax(LOGITS), -1))
    np.testing.assert_allclose(float(total), expected, rtol=1e-6)


def test_weighted_terms_add_up_and_l2_reads_the_effective_params():
    params = {"Dense_0": {"kernel": np.array([[1.0, -2.0]], np.float32), "bias": np.array([5.0], np.float32)}}
    loss = losses.build_loss([{"term": "cross_entropy"}, {"term": "l2", "weight": 0.1}])
    total, terms = loss.total({"logits": LOGITS}, {"targets": TARGETS}, {"params": params})
    assert float(terms["l2"]) == 2.5  # (1 + 4) / 2, the bias not selected
    np.testing.assert_allclose(float(total), float(terms["cross_entropy"]) + 0.25, rtol=1e-6)


@pytest.mark.parametrize("specs,message", [
    ([], "names no term"),
    ([{"term": "kl_magic"}], "term 'kl_magic' is not one of"),
    ([{"term": "cross_entropy", "weight": -1}], r"weight must be a finite number >= 0 \(got -1\)"),
    ([{"term": "cross_entropy"}, {"term": "cross_entropy"}], "repeat a name"),
    ([{"term": "cross_entropy", "temperature": 2}], "does not accept settings"),
    ([{"term": "cross_entropy", "label_smoothing": 1.0}],
     r"label_smoothing must be a finite number in \[0, 1\) \(got 1.0\)"),
])
def test_bad_loss_configs_name_the_problem(specs, message):
    with pytest.raises(ValueError, match=message):
        losses.build_loss(specs)


@losses.register_loss("test_teacher_mse")
def _teacher_mse(scale: float = 1.0):
    """A toy distillation term from this test file: mean squared distance to the teacher's logits."""
    return lambda outputs, batch, extras: scale * jnp.mean(
        jnp.square(outputs["logits"] - extras["teacher"]["logits"]))


@losses.register_loss("test_hidden_energy")
def _hidden_energy():
    """A toy feature term: the mean square of the first hidden layer the model sowed."""
    return lambda outputs, batch, extras: jnp.mean(jnp.square(outputs["intermediates"]["hidden_0"][0]))


def _teacher_export(tmp_path):
    config = tiny_config(num_steps=3)
    config.model.hidden = (24,)
    train.train_and_evaluate(config, str(tmp_path / "teacher"), progress=False)
    return str(tmp_path / "teacher" / "export" / "params.safetensors")


def test_teacher_runs_inside_the_step_without_gradient_and_its_loss_is_computed_by_hand(tmp_path):
    config = tiny_config(num_steps=1)
    _teacher_export(tmp_path)
    config.teacher.export = str(tmp_path / "teacher")  # a run directory stands for its export
    config.loss = [{"term": "test_teacher_mse", "scale": 2.0}]
    run = train.build_run(config)
    teacher_model, teacher_variables = run.teacher
    # The teacher's 24-wide params are not part of what the optimizer sees.
    assert all(np.shape(leaf)[-1] != 24 for leaf in jax.tree_util.tree_leaves(run.state["trainable"]))
    batch = train.data_lib.train_batch(run.dataset, 0, 0, 32)
    student = models.apply_model(run.model, run.state["trainable"]["params"], batch["inputs"])
    teacher = models.apply_model(teacher_model, teacher_variables["params"], batch["inputs"])
    expected = 2.0 * float(np.mean(np.square(np.asarray(student) - np.asarray(teacher))))
    _, metrics = run.train_step(run.state, batch)
    np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
    assert run.train_step._cache_size() == 1


def test_a_teacher_of_another_task_or_a_missing_one_is_refused(tmp_path):
    config = tiny_config()
    config.teacher.export = str(tmp_path / "nowhere.safetensors")
    with pytest.raises(FileNotFoundError, match="teacher.export .* does not exist: run the teacher's config first"):
        train.build_run(config)
    config.teacher.export = _teacher_export(tmp_path)
    config.dataset.num_classes = 7
    with pytest.raises(ValueError, match=r"dataset's 7 classes: a teacher must predict the student's classes.*"
                                         r"Dense_1/kernel: \(24, 7\) vs \(24, 10\)"):
        train.build_run(config)


def test_loss_terms_read_the_sown_intermediates():
    config = tiny_config(num_steps=1)
    plain = train.build_run(config)
    batch = train.data_lib.train_batch(plain.dataset, 0, 0, 32)
    _, base = plain.train_step(plain.state, batch)  # the same seed: the same initial params
    config.loss = [{"term": "cross_entropy"}, {"term": "test_hidden_energy", "weight": 0.5}]
    run = train.build_run(config)
    dense = jax.device_get(run.state["trainable"]["params"]["Dense_0"])  # before the step donates the state
    hidden = jax.nn.relu(np.asarray(batch["inputs"], np.float32).reshape(32, -1) / 255.0
                         @ dense["kernel"] + dense["bias"])
    _, metrics = run.train_step(run.state, batch)
    np.testing.assert_allclose(float(metrics["loss_test_hidden_energy"]), float(jnp.mean(hidden ** 2)), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["loss"]), float(base["loss"]) + 0.5 * float(jnp.mean(hidden ** 2)),
                               rtol=1e-5)


def test_batch_norm_statistics_train_checkpoint_resume_and_export(tmp_path):
    config = tiny_config(num_steps=6, checkpoint_every=3)
    config.model = {"name": "lenet5", "conv_features": [4, 8], "dense_features": 16, "batch_norm": True}
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"), progress=False)
    staged = config.copy_and_resolve_references()
    staged.train.stop_after = 3
    assert train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False) is None
    resumed = train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False)
    assert resumed["metrics"] == straight["metrics"]
    # The export carries the running statistics and predicts as the trained model in eval mode.
    model_config, params, model_state = train.read_export(str(tmp_path / "straight" / "export" / "params.safetensors"))
    assert sorted(model_state) == ["batch_stats"]
    init = models.build_model(train.ml_collections.ConfigDict(model_config), 10).init(
        jax.random.key(0), np.zeros((1, 28, 28, 1), np.uint8))
    assert not np.allclose(model_state["batch_stats"]["BatchNorm_0"]["mean"], init["batch_stats"]["BatchNorm_0"]["mean"])
    assert straight["compression"]["export_max_abs_logit_diff"] <= 1e-4


def test_batch_norm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    model = models.build_model(train.ml_collections.ConfigDict({"name": "mlp", "hidden": (8,), "normalization": "batch"}), 3)
    x = np.random.default_rng(0).normal(size=(16, 5)).astype(np.float32)
    params, state = models.init_variables(model, jax.random.key(0), x)
    _, updates = models.apply_model(model, params, x, model_state=state, train=True, mutable=["batch_stats"])
    h = x @ np.asarray(params["Dense_0"]["kernel"]) + np.asarray(params["Dense_0"]["bias"])
    np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-6)
    # Eval mode reads the running statistics and leaves them alone.
    out = models.apply_model(model, params, x, model_state=updates, train=False)
    assert out.shape == (16, 3)


def test_optax_sees_only_the_trainable_when_a_teacher_is_set(tmp_path):
    config = tiny_config(num_steps=2)
    config.teacher.export = _teacher_export(tmp_path)
    config.loss = [{"term": "cross_entropy"}, {"term": "test_teacher_mse", "weight": 0.5}]
    run = train.build_run(config)
    opt_leaves = jax.tree_util.tree_leaves(run.state["opt_state"])
    trainable_sizes = sorted(np.size(x) for x in jax.tree_util.tree_leaves(run.state["trainable"]))
    assert sorted(np.size(x) for x in opt_leaves if np.size(x) > 1) == sorted(trainable_sizes * 2)


def test_a_loss_term_with_parameters_trains_them_beside_the_model_and_resumes_them(tmp_path):
    # FitNets' hint from the student's 16-wide hidden layer onto the teacher's 24-wide one: a
    # learned 16x24 regressor, trained by the model's optimizer, checkpointed, never exported.
    teacher = _teacher_export(tmp_path)

    def config(**train_settings):
        c = tiny_config(num_steps=4, checkpoint_every=2, **train_settings)
        c.teacher.export = teacher
        c.loss = [{"term": "cross_entropy"}, {"term": "hint", "pairs": [["hidden_0", "hidden_0"]], "weight": 0.1}]
        return c

    run = train.build_run(config())
    kernel = run.state["loss_params"]["hint"]["0"]["kernel"]
    assert kernel.shape == (16, 24)
    batch = train.data_lib.train_batch(run.dataset, 0, 0, 32)
    state, metrics = run.train_step(jax.tree_util.tree_map(jnp.copy, run.state), batch)
    assert not np.allclose(state["loss_params"]["hint"]["0"]["kernel"], kernel)  # it learns
    assert set(metrics) >= {"loss_cross_entropy", "loss_hint"}
    whole = train.train_and_evaluate(config(), str(tmp_path / "whole"), progress=False)
    assert train.train_and_evaluate(config(stop_after=2), str(tmp_path / "cut"), progress=False) is None
    resumed = train.train_and_evaluate(config(stop_after=2), str(tmp_path / "cut"), progress=False)
    assert resumed["metrics"] == whole["metrics"]
