"""SparseGPT and GPTQ on one layer (compression/sparsegpt.py, compression/gptq.py): exact cases and error bounds."""
import json

import jax
import numpy as np
import pytest

from compression import gptq, packed_export, registry, sparsegpt
from compression.transform import InitBatches
from experiments import models

RNG = np.random.default_rng(0)
W = RNG.normal(size=(16, 6))  # (d_in, d_out)
X = RNG.normal(size=(200, 16)) @ RNG.normal(size=(16, 16))  # correlated inputs
XTX = X.T @ X


def output_error(w_hat, x=X):
    return float(np.sum((x @ W - x @ w_hat) ** 2))


def magnitude_prune(w, sparsity):
    k = int(round(w.size * sparsity))
    order = np.argsort(np.abs(w), axis=None, kind="stable")[:k]
    out = w.copy().reshape(-1)
    out[order] = 0.0
    return out.reshape(w.shape)


def round_to_nearest(w, bits, group_size=0):
    scale, zero = gptq.group_grid(w.T, bits, group_size)
    codes = np.clip(np.round(w.T / scale) + zero, 0, 2 ** bits - 1)
    return ((codes - zero) * scale).T


def test_under_white_inputs_sparsegpt_is_magnitude_pruning_and_gptq_is_round_to_nearest():
    white = 7.0 * np.eye(16)  # U is diagonal: no error is fed to other inputs
    pruned, keep = sparsegpt.prune_layer(W, white, 0.5, block_size=16, dampening=0.0)
    np.testing.assert_allclose(pruned, magnitude_prune(W, 0.5), atol=1e-12)
    assert keep.sum() == W.size // 2
    out = gptq.quantize_layer(W, white, 3, dampening=0.0)
    np.testing.assert_allclose(out["kernel"], round_to_nearest(W, 3), atol=1e-12)


def test_error_feedback_beats_the_baselines_on_correlated_inputs():
    for sparsity in (0.25, 0.5, 0.75):
        pruned, keep = sparsegpt.prune_layer(W, XTX, sparsity, block_size=8)
        assert np.all(pruned[~keep] == 0) and (~keep).sum() == int(round(W.size * sparsity))
        assert output_error(pruned) < output_error(magnitude_prune(W, sparsity))
    for bits in (2, 3, 4):
        for group_size, act_order in ((0, False), (8, False), (0, True), (8, True)):
            out = gptq.quantize_layer(W, XTX, bits, group_size=group_size, act_order=act_order, block_size=4)
            assert output_error(out["kernel"]) < output_error(round_to_nearest(W, bits, group_size))
            assert out["codes"].max() < 2 ** bits
            np.testing.assert_array_equal(out["kernel"], (out["codes"] - out["zero_point"]) * out["scale"])


def test_n_m_sparsity_prunes_n_of_every_m_inputs_of_each_output_and_zero_sparsity_changes_nothing():
    pruned, keep = sparsegpt.prune_layer(W, XTX, n=2, m=4, block_size=8)
    assert np.all(keep.reshape(4, 4, 6).sum(axis=1) == 2)
    assert np.all(pruned[~keep] == 0)
    same, keep = sparsegpt.prune_layer(W, XTX, 0.0)
    np.testing.assert_allclose(same, W, atol=1e-10)
    assert keep.all()


def test_gptq_at_16_bits_reproduces_the_layer_to_its_grid_step():
    out = gptq.quantize_layer(W, XTX, 16)
    step = (W.max(axis=0) - np.minimum(W.min(axis=0), 0)) / (2 ** 16 - 1)  # per output
    assert np.all(np.abs(out["kernel"] - W) <= step[None, :])
    assert output_error(out["kernel"]) <= output_error(round_to_nearest(W, 16))


def test_an_input_no_calibration_row_reached_is_pruned_and_quantized_to_zero():
    x = X.copy()
    x[:, 3] = 0.0
    pruned, keep = sparsegpt.prune_layer(W, x.T @ x, 0.25)
    assert not keep[3].any() and np.all(pruned[3] == 0)
    assert np.all(gptq.quantize_layer(W, x.T @ x, 4)["kernel"][3] == 0)


def test_bad_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match="sparsegpt.sparsity 1.0 must be in"):
        sparsegpt.prune_layer(W, XTX, 1.0)
    with pytest.raises(ValueError, match="n:m needs integers 1 <= n < m"):
        sparsegpt.prune_layer(W, XTX, n=4, m=4)
    with pytest.raises(ValueError, match="gptq.bits 1 must be an integer from 2 to 16"):
        gptq.quantize_layer(W, XTX, 1)
    with pytest.raises(ValueError, match="gptq.group_size 5 must be 0 .* or divide the 16 inputs"):
        gptq.quantize_layer(W, XTX, 4, group_size=5)
    with pytest.raises(ValueError, match="not positive definite .* raise the dampening"):
        sparsegpt.prune_layer(W, X[:3].T @ X[:3], 0.5, dampening=0.0)


def test_the_sparsegpt_transform_solves_layer_by_layer_on_the_inputs_the_pruned_layers_before_produce():
    model = models.build_model({"name": "mlp", "hidden": (32,)}, 10)
    x = RNG.integers(0, 256, size=(64, 28, 28, 1)).astype(np.uint8)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), x)
    seen = []

    def statistics(p, paths, kinds, **kw):
        seen.append((list(paths), bool(np.any(np.asarray(p["Dense_0"]["kernel"]) == 0))))
        return models.module_statistics(model, p, paths, kinds, inputs=[x], **kw)

    t = registry.build("sparsegpt", select=".*kernel", sparsity=0.5, block_size=64)
    trainable, state = t.init(params, None, InitBatches([x], lambda p, b: 0.0, statistics))
    # Dense_0 is solved on the raw inputs; Dense_1 on what the pruned Dense_0 produces.
    assert seen == [(["Dense_0"], False), (["Dense_1"], True)]
    for path, mask in state["masks"].items():
        assert float(np.mean(np.asarray(mask))) == 0.5, path
    effective = t.apply(trainable, state)
    assert np.all(np.asarray(effective["Dense_0"]["kernel"])[~np.asarray(state["masks"]["Dense_0/kernel"])] == 0)
    # On the calibration inputs, the first layer's outputs move less than under magnitude pruning.
    inputs = x.reshape(64, -1).astype(np.float64) / 255.0
    dense = np.asarray(params["Dense_0"]["kernel"], np.float64)
    error = lambda k: float(np.sum((inputs @ dense - inputs @ np.asarray(k, np.float64)) ** 2))
    assert error(effective["Dense_0"]["kernel"]) < error(magnitude_prune(dense, 0.5))
    with pytest.raises(ValueError, match="sparsegpt, which reads each layer's inputs.*init_batches > 0"):
        t.init(params, None, None)


def test_gptq_keeps_zero_weights_zero_and_beats_rounding_a_pruned_layer():
    # A pruned layer quantized by GPTQ keeps its mask (joint sparsity + quantization, SparseGPT's Section 3.5).
    pruned = magnitude_prune(W, 0.5)
    out = gptq.quantize_layer(pruned, XTX, 3, group_size=8)
    assert np.all(out["kernel"][pruned == 0] == 0)
    assert np.array_equal(out["kernel"] != 0, (pruned != 0) & (out["codes"] != out["zero_point"]))
    rounded = np.where(pruned == 0, 0.0, round_to_nearest(pruned, 3, 8))
    err = lambda k: float(np.sum((X @ pruned - X @ k) ** 2))
    assert err(out["kernel"]) < err(rounded)


def mlp_and_inputs(hidden=(32,)):
    model = models.build_model({"name": "mlp", "hidden": hidden}, 10)
    x = RNG.integers(0, 256, size=(64, 28, 28, 1)).astype(np.uint8)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), x)
    statistics = lambda p, paths, kinds, **kw: models.module_statistics(model, p, paths, kinds, inputs=[x], **kw)
    return params, InitBatches([x], lambda p, b: 0.0, statistics), x


def distinct_per_group(kernel, group_size):
    # The most distinct values any output takes within one group of `group_size` inputs.
    k = np.asarray(kernel)
    groups = k.reshape(k.shape[0] // group_size, group_size, k.shape[1])
    return max(len(np.unique(groups[g, :, o])) for g in range(groups.shape[0]) for o in range(k.shape[1]))


def test_the_gptq_transform_puts_every_layer_on_its_grid_and_stays_there_through_a_fine_tune():
    params, batches, x = mlp_and_inputs()
    t = registry.build("gptq", select=".*kernel", bits=3, group_size=16, block_size=64)
    trainable, state = t.init(params, None, batches)
    assert state["Dense_0/kernel"]["scale"].shape == (784 // 16, 32)
    effective = t.apply(trainable, state)
    # The solved weights are a fixed point of the grid, so apply changes nothing.
    for name in ("Dense_0", "Dense_1"):
        np.testing.assert_array_equal(effective[name]["kernel"], trainable["params"][name]["kernel"])
        assert distinct_per_group(effective[name]["kernel"], 16) <= 2 ** 3
    # A gradient step moves the float weights; the effective ones stay on the same grid (straight-through).
    grads = jax.grad(lambda tr: sum(jax.numpy.sum(k ** 2) for k in jax.tree_util.tree_leaves(t.apply(tr, state))))(
        trainable)
    assert float(np.abs(np.asarray(grads["params"]["Dense_0"]["kernel"])).max()) > 0
    moved = jax.tree_util.tree_map(lambda w, g: w - 0.3 * g, trainable, grads)
    after = t.apply(moved, state)
    assert not np.array_equal(after["Dense_0"]["kernel"], effective["Dense_0"]["kernel"])
    grid = state["Dense_0/kernel"]
    values = np.asarray(after["Dense_0"]["kernel"]).reshape(49, 16, 32)
    codes = values / np.asarray(grid["scale"])[:, None, :] + np.asarray(grid["zero_point"])[:, None, :]
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    assert codes.min() > -0.5 and codes.max() < 7.5
    # On its calibration inputs the first layer moves less than rounding each group to nearest.
    inputs = x.reshape(64, -1).astype(np.float64) / 255.0
    dense = np.asarray(params["Dense_0"]["kernel"], np.float64)
    error = lambda k: float(np.sum((inputs @ dense - inputs @ np.asarray(k, np.float64)) ** 2))
    assert error(effective["Dense_0"]["kernel"]) < error(round_to_nearest(dense, 3, 16))


def test_the_gptq_export_stores_3_bit_codes_and_one_scale_and_zero_point_per_group():
    params, batches, _ = mlp_and_inputs()
    t = registry.build("gptq", select="Dense_0/kernel", bits=3, group_size=16)
    trainable, state = t.init(params, None, batches)
    effective = t.apply(trainable, state)
    coded = t.encode(effective, state)["Dense_0"]["kernel"]
    tensors, record = packed_export.encode_packed(coded.values, **coded.settings)
    assert tensors["codes"].nbytes == -(-784 * 32 * 3 // 8)
    assert tensors["scale"].shape == tensors["zero_point"].shape == (49, 32)
    np.testing.assert_array_equal(tensors["row_starts"], np.arange(0, 784, 16))
    decoded = packed_export.decode_packed(tensors, {**record, "shape": [784, 32], "dtype": "float32"})
    np.testing.assert_array_equal(decoded, np.asarray(effective["Dense_0"]["kernel"]))


def test_gptq_settings_and_shapes_it_cannot_group_are_refused_naming_the_fix():
    params, batches, _ = mlp_and_inputs(hidden=(30,))
    with pytest.raises(ValueError, match="gptq.bits 1 must be an integer from 2 to 16"):
        registry.build("gptq", bits=1)
    with pytest.raises(ValueError, match="gptq.act_order must be True or False"):
        registry.build("gptq", act_order="yes")
    with pytest.raises(ValueError, match="gptq.dampening -1 must be a number >= 0"):
        registry.build("gptq", dampening=-1)
    t = registry.build("gptq", select=".*kernel", group_size=16)
    with pytest.raises(ValueError, match="divide the 30 inputs of Dense_1/kernel"):
        t.init(params, None, batches)
    with pytest.raises(ValueError, match="gptq, which reads each layer's inputs.*init_batches > 0"):
        t.init(params, None, None)


def test_without_error_feedback_gptq_is_round_to_nearest_on_its_grid():
    for group_size in (0, 8):
        out = gptq.quantize_layer(W, XTX, 3, group_size=group_size, act_order=True, error_feedback=False)
        np.testing.assert_allclose(out["kernel"], round_to_nearest(W, 3, group_size), atol=1e-12)


def test_a_one_shot_run_records_its_calibration_batches_time_and_the_statistics_peak_bytes(tmp_path):
    from experiments import train
    from tests.helpers import tiny_config
    config = tiny_config(num_steps=0)
    config.model = {"name": "mlp", "hidden": (16,)}
    config.compression.stages = [{"technique": "gptq", "select": ".*kernel", "bits": 4, "block_size": 64}]
    config.compression.init_batches = 2
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    calibration = results["calibration"]
    assert calibration["batches"] == 2 and calibration["init_s"] > 0
    # Sequential: one call per layer; the largest statistics held at once are Dense_0's X^T X, 784 x 784 float32.
    assert calibration["statistics_calls"] == 2
    assert calibration["statistics_peak_bytes"] == 784 * 784 * 4
    assert json.load(open(tmp_path / "results.json"))["calibration"] == calibration


def test_joint_sparsity_and_quantization_in_the_solver_and_as_a_chain_of_the_two_stages():
    # In the solver (SparseGPT's Section 3.5): each kept column is quantized before its error is fed back.
    grid = 0.05
    snap = lambda column: np.round(column / grid) * grid
    joint, keep = sparsegpt.prune_layer(W, XTX, 0.5, block_size=8, quantize=snap)
    assert np.all(joint[~keep] == 0) and (~keep).sum() == W.size // 2
    np.testing.assert_allclose(joint, snap(joint), atol=1e-12)
    # As stages: SparseGPT, then GPTQ on the pruned model, which keeps its zeros.
    params, batches, _ = mlp_and_inputs()
    chain = registry.build_chain([{"technique": "sparsegpt", "select": ".*kernel", "sparsity": 0.5},
                                  {"technique": "gptq", "select": ".*kernel", "bits": 4, "group_size": 16}])
    trainable, state = chain.init(params, jax.random.PRNGKey(0), batches)
    kernel = np.asarray(chain.apply(trainable, state)["Dense_0"]["kernel"])
    mask = np.asarray(state["sparsegpt"]["masks"]["Dense_0/kernel"])
    assert mask.mean() == 0.5 and np.all(kernel[~mask] == 0)  # (a kept weight may also round to 0)
    assert distinct_per_group(kernel, 16) <= 2 ** 4
