"""Knowledge distillation's loss terms (compression/distillation.py) on hand-computed logits."""
import math
import os

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


# --------------------------------------------------------------------------
# Feature transfer on hand-made sown values.

def _sown(**values):
    sown = {k: (jnp.asarray(v, jnp.float32),) for k, v in values.items()}
    return {"logits": jnp.zeros((2, 3)), "intermediates": sown}


def _loss(spec, student, teacher, params=None):
    loss = losses.build_loss([spec])
    extras = {"teacher": teacher}
    if params is None:
        params = loss.init(jax.random.PRNGKey(0), student, extras)
    extras["loss_params"] = params
    return float(loss.total(student, {"targets": jnp.zeros(2, jnp.int32)}, extras)[0]), params


def test_hint_is_half_the_squared_distance_summed_over_features_and_averaged_over_examples():
    student = _sown(hidden_0=[[1.0, 2.0], [0.0, 0.0]])
    teacher = _sown(hidden_1=[[0.0, 0.0], [3.0, 4.0]])
    value, params = _loss({"term": "hint", "pairs": [["hidden_0", "hidden_1"]]}, student, teacher)
    assert params == {"hint": {}}  # equal widths: no regressor
    assert value == pytest.approx(0.5 * (5.0 + 25.0) / 2)


def test_a_width_mismatch_gets_a_learned_regressor_applied_on_the_feature_axis():
    student = _sown(hidden_0=[[1.0, 2.0], [0.0, 1.0]])
    teacher = _sown(hidden_0=[[1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    spec = {"term": "hint", "pairs": [["hidden_0", "hidden_0"]]}
    _, params = _loss(spec, student, teacher)
    assert jax.tree_util.tree_map(jnp.shape, params) == {"hint": {"0": {"kernel": (2, 3), "bias": (3,)}}}
    chosen = {"0": {"kernel": jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "bias": jnp.array([0.0, 0.0, 1.0])}}
    # r(s) = [[1, 2, 2], [0, 1, 1]]; differences [[0, 2, 0], [0, 1, 1]]: 0.5 * (4 + 2) / 2.
    assert _loss(spec, student, teacher, {"hint": chosen})[0] == pytest.approx(1.5)
    hidden = {"term": "hidden_mse", "pairs": [["hidden_0", "hidden_0"]]}
    assert _loss(hidden, student, teacher, {"hidden_mse": chosen})[0] == pytest.approx(6.0 / 6)  # TinyBERT's mean


def test_attention_mse_cosine_and_attention_maps_by_hand():
    a = [[[[0.5, 0.5], [1.0, 0.0]]]]  # [batch 1, heads 1, query 2, key 2]
    b = [[[[1.0, 0.0], [1.0, 0.0]]]]
    spec = {"term": "attention_mse", "pairs": [["block_0/attn/attention", "block_1/attn/attention"]]}
    student = {"intermediates": {"block_0": {"attn": {"attention": (jnp.asarray(a),)}}}}
    teacher = {"intermediates": {"block_1": {"attn": {"attention": (jnp.asarray(b),)}}}}
    assert _loss(spec, student, teacher)[0] == pytest.approx(0.5 / 4)
    cosine = {"term": "hidden_cosine", "pairs": [["hidden_0", "hidden_0"]]}
    s, t = _sown(hidden_0=[[1.0, 0.0], [1.0, 1.0]]), _sown(hidden_0=[[0.0, 2.0], [2.0, 2.0]])
    assert _loss(cosine, s, t)[0] == pytest.approx((1.0 + 0.0) / 2)  # orthogonal, then parallel
    # Channels 3 and 4 at one pixel, 0 at the other: mean of squares 12.5 and 0, normalised [1, 0].
    features = jnp.array([[[[3.0, 4.0], [0.0, 0.0]]]])  # [1, 1, 2, 2]
    np.testing.assert_allclose(distillation.attention_map(features), [[1.0, 0.0]])
    transfer = {"term": "attention_transfer", "pairs": [["features_0", "features_0"]]}
    other = jnp.array([[[[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]]])  # 3 channels: [0, 1]
    value = _loss(transfer, _sown(features_0=features), _sown(features_0=other))[0]
    assert value == pytest.approx((1.0 + 1.0) / 2)


@pytest.mark.parametrize("spec, student, teacher, why", [
    ({"term": "hint", "pairs": [["hidden_5", "hidden_0"]]}, {"hidden_0": [[1.0]]}, {"hidden_0": [[1.0]]},
     "the student sows no 'hidden_5'; it sows: hidden_0"),
    ({"term": "hint", "pairs": [["hidden_0", "hidden_0"]], "projection": "none"}, {"hidden_0": [[1.0]]},
     {"hidden_0": [[1.0, 2.0]]}, "has 1 features and teacher 'hidden_0' 2; set projection='auto'"),
    ({"term": "hidden_mse", "pairs": [["hidden_0", "hidden_0"]]}, {"hidden_0": [[1.0], [2.0]]},
     {"hidden_0": [[1.0]]}, r"differ in more than their last \(feature\) axis"),
    ({"term": "hidden_cosine", "pairs": [["hidden_0", "hidden_0"]]}, {"hidden_0": [[1.0]]},
     {"hidden_0": [[1.0, 2.0]]}, "differ in shape; the cosine compares hidden states of one width"),
    ({"term": "attention_transfer", "pairs": [["hidden_0", "hidden_0"]]}, {"hidden_0": [[1.0]]},
     {"hidden_0": [[1.0]]}, r"must be \[batch, height, width, channels\] maps"),
])
def test_feature_terms_name_a_missing_or_mismatched_layer(spec, student, teacher, why):
    with pytest.raises(ValueError, match=why):
        _loss(spec, _sown(**student), _sown(**teacher))


@pytest.mark.parametrize("settings, why", [
    ({"pairs": "hidden_0"}, "pairs must be a non-empty list of"),
    ({"pairs": [["hidden_0"]]}, r"entry \['hidden_0'\] is not a \[student layer, teacher layer\] pair"),
    ({"projection": "conv"}, "projection 'conv' is not one of"),
])
def test_a_bad_layer_mapping_or_projection_is_refused_when_built(settings, why):
    with pytest.raises(ValueError, match=why):
        losses.build_loss([{"term": "hint", **settings}])


# --------------------------------------------------------------------------
# A teacher precomputed over the transfer set, against the one in the step.


def test_top_k_storage_keeps_the_kept_probabilities_and_spreads_the_rest_evenly():
    logits = jnp.asarray([[2.0, 1.0, 0.0, -1.0, -3.0]])
    values, indices, lse = distillation.top_k_logits(logits, 2)
    assert indices.tolist() == [[0, 1]]
    probs = jax.nn.softmax(logits)[0]
    rebuilt = jax.nn.softmax(distillation.dense_from_top_k(values, indices, lse, 5))[0]
    np.testing.assert_allclose(rebuilt[:2], probs[:2], rtol=2e-3)  # float16 logits
    np.testing.assert_allclose(rebuilt[2:], np.full(3, float(probs[2:].sum()) / 3), rtol=2e-3)
    assert float(rebuilt.sum()) == pytest.approx(1.0, abs=1e-6)
    whole = distillation.dense_from_top_k(*distillation.top_k_logits(logits, 5), 5)
    np.testing.assert_allclose(whole, logits, atol=2e-3)


def _config(language_model=False, **settings):
    from tests.helpers import tiny_config

    config = tiny_config(**settings)
    if language_model:
        config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 32,
                          "train_size": 2048, "eval_size": 256, "seq_len": 8}
        config.model = {"name": "char_transformer", "num_layers": 1, "width": 16, "num_heads": 2, "head_dim": 8,
                        "ffn_dim": 32, "max_len": 8}
    return config


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """{language_model: a teacher run folder}, each trained 2 steps once for this module."""
    from experiments import train

    folders = {}
    for language_model in (False, True):
        teacher = _config(language_model, num_steps=2)
        if not language_model:
            teacher.model.hidden = (24, 24)
        folders[language_model] = str(tmp_path_factory.mktemp("teacher"))
        train.train_and_evaluate(teacher, folders[language_model], progress=False)
    return folders


def _teacher_and_student(teachers, language_model=False):
    from experiments import train

    student = _config(language_model, num_steps=3, batch_size=8)
    student.teacher.export = teachers[language_model]
    student.loss = [{"term": "knowledge_distillation", "temperature": 2.0, "alpha": 0.5}]
    return train, student


def test_a_precomputed_teacher_gives_the_in_step_teachers_loss_on_the_same_batch(tmp_path, teachers):
    train, student = _teacher_and_student(teachers)
    in_step = train.build_run(student)
    student.teacher.update(mode="precomputed", outputs=str(tmp_path / "outputs"))
    precomputed = train.build_run(student)
    assert precomputed.teacher_outputs is not None
    assert precomputed.teacher_outputs.arrays["logits"].shape == (3, 8, 10)
    batch = train.data_lib.train_batch(in_step.dataset, 0, 1, 8)
    _, expected = in_step.train_step(jax.tree_util.tree_map(jnp.copy, in_step.state), batch)
    _, got = precomputed.train_step(precomputed.state, {**batch, **precomputed.teacher_outputs.for_step(1)})
    assert float(got["loss"]) == pytest.approx(float(expected["loss"]), rel=1e-5)
    # Another transfer set (another seed's batches) is refused, naming what differs.
    student.seed = 1
    with pytest.raises(ValueError, match=r"computed for another transfer set or teacher \(seed: 0 there, 1 here;"):
        train.build_run(student)


def test_a_precomputed_language_model_teacher_keeps_its_top_k_logits(tmp_path, teachers):
    train, student = _teacher_and_student(teachers, language_model=True)
    student.teacher.update(mode="precomputed", outputs=str(tmp_path / "outputs"))
    with pytest.raises(ValueError, match="would not fit on disk: set teacher.top_k to a k in"):
        train.build_run(student)
    student.teacher.top_k = 4
    run = train.build_run(student)
    stored = run.teacher_outputs.for_step(2)
    assert stored["teacher_top_values"].shape == (8, 8, 4) and stored["teacher_top_values"].dtype == np.float16
    teacher_model, teacher_variables = run.teacher
    batch = train.data_lib.train_batch(run.dataset, 0, 2, 8, 8)
    logits = train.models.apply_model(teacher_model, teacher_variables["params"], batch["inputs"])
    np.testing.assert_array_equal(stored["teacher_top_indices"], np.asarray(jax.lax.top_k(logits, 4)[1]))
    run.train_step(run.state, {**batch, **stored})  # the step rebuilds the logits and trains


@pytest.mark.parametrize("teacher, why", [
    ({"mode": "later"}, r"teacher.mode 'later' is not one of \('in_step', 'precomputed'\)"),
    ({"mode": "precomputed"}, "needs teacher.outputs: the folder"),
    ({"mode": "precomputed", "outputs": "x", "top_k": 3}, "teacher.top_k applies to language models"),
])
def test_bad_teacher_settings_name_the_fix(teachers, teacher, why):
    train, student = _teacher_and_student(teachers)
    student.teacher.update(teacher)
    with pytest.raises(ValueError, match=why):
        train.build_run(student)


def test_a_shallow_student_starts_from_the_mapped_layers_of_a_deep_teacher(teachers):
    # DistilBERT's initialisation: the 784-24-24-10 teacher's Dense_0 and Dense_2 become the
    # 784-24-10 student's Dense_0 and Dense_1.
    from experiments import train

    export = os.path.join(teachers[False], "export", "params.safetensors")
    _, teacher_params, _ = train.read_export(export)
    student = _config(num_steps=1)
    student.model.hidden = (24,)
    student.init_from = export
    student.init_layers = [["Dense_1", "Dense_2"]]
    params = train.build_run(student).state["trainable"]["params"]
    for name, source in (("Dense_0", "Dense_0"), ("Dense_1", "Dense_2")):
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(params[name][leaf], teacher_params[source][leaf])
    for layers, why in (([["Dense_1", "Dense_7"]], "starts from the export's 'Dense_7', which the export lacks"),
                        ([["Dense_5", "Dense_2"]], r"names \['Dense_5'\], which the model does not have"),
                        ([["Dense_1", "Dense_1"]], r"Dense_1/kernel: \(24, 10\) vs \(24, 24\)")):
        student.init_layers = layers
        with pytest.raises(ValueError, match=why):
            train.build_run(student)


def test_the_teacher_costs_one_forward_pass_in_the_compiled_step_not_a_backward_one(teachers):
    # Its params are an argument of the step, not in the trainable; were gradients taken through
    # it, the step would grow by about three forward passes.
    from experiments import train

    def flops(computation):
        cost = computation.compile().cost_analysis()
        return (cost[0] if isinstance(cost, list) else cost)["flops"]

    plain = train.build_run(_config(num_steps=1))
    _, student = _teacher_and_student(teachers)
    distilled = train.build_run(student)
    batch = train.data_lib.train_batch(plain.dataset, 0, 0, 32)
    teacher_model, teacher_variables = distilled.teacher
    forward = flops(jax.jit(lambda p, x: train.models.apply_model(teacher_model, p, x)).lower(
        teacher_variables["params"], batch["inputs"]))
    extra = (flops(distilled.train_step.lower(distilled.state, batch))
             - flops(plain.train_step.lower(plain.state, batch)))
    assert 0.95 < extra / forward < 1.2


def test_the_distillation_benchmark_times_one_student_three_ways():
    from experiments import benchmark_distillation

    student, teacher = benchmark_distillation._student_and_teacher("tinybert")
    assert (student.model.num_layers, student.model.width, teacher.model.num_layers) == (2, 96, 4)
    runs = benchmark_distillation.variant_configs(student, "teacher_dir", "outputs_dir", timed_steps=40)
    assert (runs["plain"].teacher.export, runs["plain"].loss) == ("", [{"term": "cross_entropy"}])
    assert runs["in_step"].teacher.to_dict() == {"export": "teacher_dir", "mode": "in_step", "outputs": "",
                                                 "top_k": 0}
    assert runs["precomputed"].teacher.to_dict() == {"export": "teacher_dir", "mode": "precomputed",
                                                     "outputs": "outputs_dir", "top_k": 16}
    assert runs["in_step"].loss == runs["precomputed"].loss and runs["in_step"].loss[0]["term"] == \
        "knowledge_distillation"
    # The precomputed outputs cover the longest timed loop (base log_every + 40 steps).
    assert all(r.train.num_steps >= 40 + r.train.log_every for r in runs.values())


def test_recovery_twins_differ_only_by_the_dense_teacher():
    from configs import distillation_recovery

    for kind in distillation_recovery.KINDS:
        alone, taught = distillation_recovery.get_config(kind), distillation_recovery.get_config(f"{kind}_kd")
        assert alone.compression.stages and alone.compression.stages == taught.compression.stages
        assert taught.teacher.export == alone.init_from == taught.init_from and not alone.teacher.export
        assert taught.train.num_steps == alone.train.num_steps
        assert taught.loss[0]["term"] == "knowledge_distillation" and alone.loss == [{"term": "cross_entropy"}]


def test_tinybert_in_two_stages_trains_the_layer_losses_then_the_soft_targets_in_as_many_steps():
    from configs import distillation_common
    from configs import jiao2020_tinybert_char_transformer as tinybert
    from experiments import reproduce
    from experiments.provenance import seeded_path

    for quick, scale in (("", 1), ("_quick", 10)):
        layers, staged = tinybert.get_config(f"layers{quick}"), tinybert.get_config(f"staged{quick}")
        one_stage = tinybert.get_config(f"tinybert{quick}")
        assert [t["term"] for t in layers.loss] == ["hidden_mse", "attention_mse"]
        assert layers.loss == one_stage.loss[1:] and staged.loss == one_stage.loss[:1]
        assert layers.train.num_steps + staged.train.num_steps == one_stage.train.num_steps \
            == distillation_common.STUDENT_STEPS // scale
        assert staged.teacher.export == layers.teacher.export == one_stage.teacher.export
        assert staged.model == layers.model == one_stage.model
        # The second stage starts from the first stage's export of its own seed, which reproduce trains first.
        producer = reproduce.producer_of(seeded_path(staged.init_from, 2), reproduce.experiment_configs())
        assert (producer.config, producer.seed) == (f"jiao2020_tinybert_char_transformer:layers{quick}", 2)
        assert all(c.train.checkpoint_every <= c.train.num_steps for c in (layers, staged))


def test_the_omitted_class_analysis_by_hand():
    from experiments import omitted_class

    logits = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.9]])
    targets = np.array([0, 2, 2])
    # No offset: predictions 0, 1, 0: two errors, both on class 2. +0.6 on class 2: 0, 2, 2.
    assert omitted_class.errors(logits, targets, 2, 0.0) == (2, 2)
    assert omitted_class.errors(logits, targets, 2, 0.6) == (0, 0)
    assert omitted_class.errors(logits, targets, 2, 5.0) == (1, 0)  # now the class-0 example is lost
    assert omitted_class.choose_offset(logits, targets, 2, [0.0, 0.6, 1.0, 5.0]) == 0.6


def test_a_student_never_sees_a_dropped_class_and_the_analysis_reports_it(tmp_path):
    from experiments import omitted_class, train

    config = _config(num_steps=2)
    config.dataset.update(selection_size=64, drop_classes=[3])
    run = train.build_run(config)
    assert 3 not in run.dataset.train["targets"] and 3 in run.dataset.eval["targets"]
    train.train_and_evaluate(config, str(tmp_path / "run"), progress=False)
    results = omitted_class.analyse(str(tmp_path / "run"), config, [0.0, 1.0, 2.0])
    metrics = results["metrics"]
    assert metrics["bias_offset"] in (0.0, 1.0, 2.0) and metrics["test_examples"] == len(run.dataset.eval["targets"])
    assert metrics["test_errors_on_class_before"] <= metrics["test_examples_of_class"]
    with pytest.raises(ValueError, match=r"drop_classes must be a list of class ids in \[0, 10\)"):
        config.dataset.drop_classes = [12]
        train.build_run(config)


def test_fitnets_first_stage_trains_only_the_layers_below_the_guided_one(tmp_path):
    # configs/romero2015_fitnets_cnn.py's `hints` stage at toy size: the student's features_0
    # regressed onto the teacher's; the second stage and the dense head get no gradient.
    from configs import romero2015_fitnets_cnn
    from experiments import train

    teacher = _config(num_steps=1)
    teacher.model = {"name": "vgg", "stages": ((6,), (8,)), "dense": (8,)}
    train.train_and_evaluate(teacher, str(tmp_path / "teacher"), progress=False)
    hints = romero2015_fitnets_cnn.get_config("hints_quick")
    hints.dataset, hints.mesh = teacher.dataset, teacher.mesh
    hints.model = {"name": "vgg", "stages": ((4, 4), (4,)), "dense": (8,)}
    hints.teacher.export = str(tmp_path / "teacher")
    hints.train.update(num_steps=3, batch_size=32)
    run = train.build_run(hints)
    before = jax.tree_util.tree_map(np.asarray, run.state["trainable"]["params"])
    state = run.state
    for step in range(3):
        state, _ = run.train_step(state, train.data_lib.train_batch(run.dataset, 0, step, 32))
    after = state["trainable"]["params"]
    assert run.state is not state and jax.tree_util.tree_map(jnp.shape, state["loss_params"]["hint"]) == \
        {"0": {"kernel": (4, 6), "bias": (6,)}}
    for name in ("Conv_0", "Conv_1"):  # the first stage, below the guided layer: trained
        assert not np.allclose(after[name]["kernel"], before[name]["kernel"])
    for name in ("Conv_2", "Dense_0", "Dense_1"):  # above it: untouched
        np.testing.assert_array_equal(after[name]["kernel"], before[name]["kernel"])
