"""Low-rank factorization (compression/low_rank.py): SVD and DRONE factors, rank choices, the factored export."""
import jax
import numpy as np
import pytest

from compression import low_rank as lr
from compression.structured_export import drop_layers_config
from compression.transform import InitBatches
from experiments import models, train
from tests.helpers import tiny_config

RNG = np.random.default_rng(0)


def test_svd_at_full_rank_reproduces_the_kernel_and_rank_r_loses_exactly_the_discarded_energy():
    w = RNG.normal(size=(6, 4))
    u, v = lr.truncated_svd(w, 4)
    np.testing.assert_allclose(u @ v, w, atol=1e-12)
    s = np.linalg.svd(w, compute_uv=False)
    for r in (1, 2, 3):
        u, v = lr.truncated_svd(w, r)
        assert u.shape == (6, r) and v.shape == (r, 4)
        assert lr.output_error(w, u, v) == pytest.approx(np.sum(s[r:] ** 2), rel=1e-10)


def test_drone_is_never_worse_than_svd_on_the_output_error_and_is_svd_under_white_inputs():
    w = RNG.normal(size=(6, 5))
    x = RNG.normal(size=(40, 6)) @ RNG.normal(size=(6, 6))  # correlated input features
    xtx = x.T @ x
    for r in range(1, 6):
        drone, svd = lr.drone_factors(w, xtx, r), lr.truncated_svd(w, r)
        assert lr.output_error(w, *drone, xtx) <= lr.output_error(w, *svd, xtx) + 1e-9
        # The objective is the output error itself: X^T X stands for the rows.
        assert lr.output_error(w, *drone, xtx) == pytest.approx(np.sum((x @ w - x @ drone[0] @ drone[1]) ** 2))
        white_u, white_v = lr.drone_factors(w, np.eye(6), r)
        np.testing.assert_allclose(white_u @ white_v, svd[0] @ svd[1], atol=1e-10)
    # Three calibration rows span three directions: rank 3 reproduces every calibration output
    # exactly, which no rank-3 SVD of a generic 6 x 5 matrix does.
    x3 = x[:3]
    u, v = lr.drone_factors(w, x3.T @ x3, 3)
    np.testing.assert_allclose(x3 @ u @ v, x3 @ w, atol=1e-9)
    assert lr.output_error(w, *lr.truncated_svd(w, 3), x3.T @ x3) > 1e-3


def test_attention_kernels_are_matrices_over_their_input_and_output_features():
    assert lr.matrix_shapes((8, 2, 4), "block_0/attn/query/kernel") == ((8,), (2, 4))
    assert lr.matrix_shapes((2, 4, 8), "block_0/attn/out/kernel") == ((2, 4), (8,))
    assert lr.matrix_shapes((784, 300), "Dense_0/kernel") == ((784,), (300,))
    with pytest.raises(ValueError, match="Conv_0/kernel has shape .*narrow low_rank.select to dense kernels"):
        lr.matrix_shapes((5, 5, 1, 20), "Conv_0/kernel")


SHAPES = {"a": (4, 4), "b": (8, 2)}
SPECTRA = {"a": np.array([4.0, 2.0, 1.0, 1.0]), "b": np.array([3.0, 1.0])}  # energies 16,4,1,1 and 9,1


@pytest.mark.parametrize("which,value,expected", [
    ("rank", 2, {"a": 2, "b": 2}),
    ("ratio", 1.0, {"a": 2, "b": 1}),       # floor(16 / 8) and floor(16 / 10)
    ("ratio", 0.1, {"a": 1, "b": 1}),       # at least rank 1
    ("energy", 0.9, {"a": 2, "b": 1}),      # 20/22 >= 0.9 > 16/22; 9/10 >= 0.9
    ("energy", 1.0, {"a": 4, "b": 2}),
    ("budget", 0.75, {"a": 1, "b": 1}),     # 24 allowed; rank 1 costs 8 + 10, a's 2nd value 8 more
    ("budget", 0.85, {"a": 2, "b": 1}),     # 27.2 allowed: a's 2nd (4/8 per parameter) fits, b's does not
])
def test_ranks_chosen_by_each_setting_match_the_hand_computed_ones(which, value, expected):
    assert lr.choose_ranks(SPECTRA, SHAPES, which, value) == expected


def test_bad_rank_settings_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"low_rank.rank 3 exceeds min\(d_in, d_out\) = 2 of b"):
        lr.choose_ranks(SPECTRA, SHAPES, "rank", 3)
    with pytest.raises(ValueError, match="low_rank.budget 0.5 allows 16 parameters, fewer than rank 1"):
        lr.choose_ranks(SPECTRA, SHAPES, "budget", 0.5)
    with pytest.raises(ValueError, match="exactly one of .*got none"):
        lr.low_rank("Dense_0/kernel")
    with pytest.raises(ValueError, match=r"exactly one of .*got \['energy', 'rank'\]"):
        lr.low_rank("Dense_0/kernel", rank=2, energy=0.9)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="low_rank.rank .* must be a positive integer"):
            lr.low_rank("Dense_0/kernel", rank=bad)
    with pytest.raises(ValueError, match=r"low_rank.energy 1.5 must be a fraction in \(0, 1\]"):
        lr.low_rank("Dense_0/kernel", energy=1.5)
    with pytest.raises(ValueError, match="low_rank.method 'qr' is not one of"):
        lr.low_rank("Dense_0/kernel", method="qr", rank=1)


def test_drone_without_calibration_batches_is_refused_naming_the_setting():
    params = {"Dense_0": {"kernel": np.ones((4, 3), np.float32)}}
    t = lr.low_rank("Dense_0/kernel", method="drone", rank=1)
    for batches in (None, InitBatches([], lambda p, b: 0.0)):
        with pytest.raises(ValueError, match="init_batches > 0.*method 'svd' needs none"):
            t.init(params, None, batches)


def test_drone_reads_the_attention_output_projection_inputs_over_heads_times_head_dim():
    model = models.build_model({"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 1,
                                "num_heads": 2, "ffn_dim": 16, "head_dim": 8}, 32)
    tokens = RNG.integers(0, 32, size=(4, 8)).astype(np.int32)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), tokens)
    seen = {}

    def statistics(p, paths, kinds, **kw):
        for path, stats in models.module_statistics(model, p, paths, kinds, inputs=[tokens], **kw):
            seen[path] = stats["xtx"].shape
            yield path, stats

    batches = InitBatches([tokens], lambda p, b: 0.0, statistics)
    trainable, state = lr.low_rank(".*attn/out/kernel", method="drone", rank=3).init(params, None, batches)
    assert seen == {"block_0/attn/out": (16, 16)}  # heads * head_dim square, not head_dim
    factors = trainable["params"]["block_0"]["attn"]["out"]["kernel"]
    assert factors["u"].shape == (2, 8, 3) and factors["v"].shape == (3, 16)
    assert int(state["block_0/attn/out/kernel"]["rank"]) == 3


def low_rank_config(stages, **model):
    config = tiny_config(num_steps=4, checkpoint_every=100)
    config.model.hidden = (16,)
    config.model.update(model)
    config.compression.stages = stages
    return config


def test_factors_train_and_the_export_reloads_as_the_factored_model_predicting_as_in_training(tmp_path):
    config = low_rank_config([{"technique": "low_rank", "select": "Dense_0/kernel", "rank": 4}])
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    # The driver reloaded the export as the model its header names and compared predictions.
    assert results["compression"]["export_max_abs_logit_diff"] <= 1e-4
    header_model = train.read_export(str(tmp_path / "export" / "params.safetensors"))[0]
    assert header_model == {"name": "mlp", "hidden": [16], "low_rank": {"Dense_0": 4}}
    assert results["compression"]["params_exported"] == 784 * 4 + 4 * 16 + 16 + 16 * 10 + 10
    # The factors, not W, are what the optimizer trains: a step moves them, and W = u v keeps rank 4.
    run = train.build_run(config)
    before = jax.device_get(run.state["trainable"]["params"]["Dense_0"]["kernel"])
    assert set(before) == {"u", "v"} and before["u"].shape == (784, 4)
    batch = {"inputs": run.dataset.train["inputs"][:32], "targets": run.dataset.train["targets"][:32]}
    state, _ = run.train_step(run.state, batch)
    after = jax.device_get(state["trainable"]["params"]["Dense_0"]["kernel"])
    assert not np.allclose(after["u"], before["u"]) and not np.allclose(after["v"], before["v"])
    w = jax.device_get(run.apply_transform(state["trainable"], state["comp_state"]))["Dense_0"]["kernel"]
    assert w.shape == (784, 16) and np.linalg.matrix_rank(w) == 4


def test_a_factored_model_config_naming_a_layer_it_lacks_is_refused():
    model = models.build_model({"name": "mlp", "hidden": (16,), "low_rank": {"Dense_2": 4}}, 10)
    with pytest.raises(ValueError, match=r"model.low_rank names \['Dense_2'\], which are not dense layers"):
        models.init_variables(model, jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.uint8))


def test_dropping_layers_renames_the_factored_layers_of_the_kept_ones():
    config = {"num_layers": 3, "num_heads": [2, 2, 2], "ffn_dim": 16,
              "low_rank": {"block_0/ffn_in": 4, "block_1/attn/out": 3, "block_2/ffn_out": 2, "head": 5}}
    out = drop_layers_config(config, [1], layers=["block_0", "block_1", "block_2"])
    assert out["low_rank"] == {"block_0/ffn_in": 4, "block_1/ffn_out": 2, "head": 5}
    assert out["num_layers"] == 2
