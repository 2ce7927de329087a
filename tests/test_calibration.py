"""Calibration statistics (compression/calibration.py) and the driver's collection of them (models.module_statistics)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import calibration
from experiments import models, train
from tests.helpers import tiny_config

X1 = np.array([[1.0, 2.0], [3.0, -1.0]], np.float32)
X2 = np.array([[0.0, 4.0]], np.float32)


def test_statistics_of_two_batches_merge_into_those_of_their_concatenation():
    kinds = ("xtx", "sq_norm", "min", "max", "count")
    merged = calibration.merge(calibration.batch_statistics(X1, kinds), calibration.batch_statistics(X2, kinds))
    rows = np.concatenate([X1, X2])
    np.testing.assert_array_equal(merged["xtx"], rows.T @ rows)
    np.testing.assert_array_equal(merged["xtx"], [[10.0, -1.0], [-1.0, 21.0]])  # 1*2 + 3*(-1) + 0*4 = -1
    np.testing.assert_array_equal(merged["sq_norm"], [10.0, 21.0])
    np.testing.assert_array_equal(calibration.column_norms(merged), np.sqrt(np.float32([10.0, 21.0])))
    np.testing.assert_array_equal(merged["min"], [0.0, -1.0])
    np.testing.assert_array_equal(merged["max"], [3.0, 4.0])
    assert float(merged["count"]) == 3.0


def test_rows_flatten_every_leading_axis():
    x = np.arange(12, dtype=np.float32).reshape(2, 3, 2)  # batch 2, positions 3, features 2
    stats = calibration.batch_statistics(x, ("xtx", "count"))
    rows = x.reshape(6, 2)
    np.testing.assert_array_equal(stats["xtx"], rows.T @ rows)
    assert float(stats["count"]) == 6.0


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match=r"choose one or more of \['xtx'"):
        calibration.check_kinds(("hessian",))


def test_sequential_calibrates_each_block_on_what_the_solved_blocks_before_it_produce():
    # A two-layer linear chain y = x a b; "solving" a block replaces its weight by 2. The second
    # block's statistics must see the inputs x * 2 produced by the already solved first block.
    params = {"a": jnp.float32(1.0), "b": jnp.float32(1.0)}
    x = jnp.array([[1.0], [2.0]])
    seen = []

    def statistics(p, block):
        inputs = {"a": x, "b": x * p["a"]}[block[0]]
        seen.append((block[0], float(calibration.batch_statistics(inputs, ("xtx",))["xtx"][0, 0])))
        return calibration.batch_statistics(inputs, ("xtx",))

    def solve(p, block, stats):
        return dict(p, **{block[0]: jnp.float32(2.0)})

    out = calibration.sequential(params, [["a"], ["b"]], statistics, solve)
    assert seen == [("a", 5.0), ("b", 20.0)]
    assert float(out["a"]) == float(out["b"]) == 2.0


def _tiny_mlp():
    model = models.build_model(train.ml_collections.ConfigDict({"name": "mlp", "hidden": (3,)}), 2)
    x = np.random.default_rng(0).integers(0, 256, (8, 2, 2, 1)).astype(np.uint8)
    params = model.init(jax.random.key(0), x)["params"]
    return model, params, x


def test_module_statistics_equal_the_moments_of_the_captured_inputs():
    model, params, x = _tiny_mlp()
    batches = [x[:4], x[4:]]
    stats = models.module_statistics(model, params, ["Dense_0", "Dense_1"], ("xtx", "sq_norm", "min", "max", "count"),
                                     inputs=batches)
    captured = models.capture_module_inputs(model, params, batches, ["Dense_0", "Dense_1"])
    for path in ("Dense_0", "Dense_1"):
        rows = captured[path].astype(np.float64)
        np.testing.assert_allclose(stats[path]["xtx"], rows.T @ rows, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats[path]["sq_norm"], (rows ** 2).sum(0), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats[path]["min"], rows.min(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats[path]["max"], rows.max(0), rtol=1e-6, atol=1e-6)
        assert float(stats[path]["count"]) == 8.0
    one = dict(models.module_statistics(model, params, ["Dense_0", "Dense_1"], ("xtx",), inputs=batches,
                                        one_at_a_time=True))
    for path in ("Dense_0", "Dense_1"):
        np.testing.assert_allclose(one[path]["xtx"], stats[path]["xtx"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"modules \['Dense_9'\] were never called"):
        models.module_statistics(model, params, ["Dense_9"], inputs=batches)


def test_statistics_sharded_over_the_data_axis_equal_the_single_device_ones():
    assert jax.device_count() >= 8, "tests/conftest.py should give 8 host devices"
    model, params, x = _tiny_mlp()
    mesh = train.create_mesh({"data": 4, "model": 2})
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    sharded = models.module_statistics(model, params, ["Dense_0"], ("xtx", "sq_norm"), inputs=[x],
                                       put=lambda b: jax.device_put(b, sharding))
    single = models.module_statistics(model, params, ["Dense_0"], ("xtx", "sq_norm"), inputs=[x])
    for kind in ("xtx", "sq_norm"):
        np.testing.assert_allclose(sharded["Dense_0"][kind], single["Dense_0"][kind], rtol=1e-5)


def test_the_driver_hands_data_aware_stages_the_statistics_of_the_model_they_see():
    config = tiny_config(num_steps=0)
    config.compression.init_batches = 2
    config.compression.stages = [{"technique": "quantize_activations", "select": "Dense_1", "bits": 8}]
    run = train.build_run(config)
    hook = run.apply_transform(run.state["trainable"], run.state["comp_state"])["~intercept"]["Dense_1"]
    assert float(hook["fake_quant_input"]["scale"]) > 0
