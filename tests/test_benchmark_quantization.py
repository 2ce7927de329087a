"""The quantization benchmark: the step-time part runs end to end on a tiny MLP; the bytes part meets its formula.

Timings are checked for their structure and sign only (the ratios the issue
asks about are measured by `python -m experiments.benchmark_quantization`,
side by side, not asserted here); the bytes are exact invariants.
"""
import json
import math

import jax
import numpy as np
import pytest

from compression import registry
from configs import quantization_common as qc
from experiments import benchmark_quantization as bq
from experiments import data as data_lib
from experiments import models
from tests.helpers import tiny_config


def test_float_qat_and_qat_with_activations_are_timed_side_by_side():
    # No cadence checkpoint in the timed window: enough steps that the difference of two loop
    # times stands clear of the jitter of the once-per-loop costs (the final checkpoint).
    config = tiny_config(log_every=100, checkpoint_every=100_000)
    dataset = data_lib.load_dataset(config.dataset, ".data")
    configs = bq.variant_configs(config)
    assert [s["technique"] for s in configs["qat+act"].compression.stages] == ["quantize", "quantize_activations"]
    assert configs["float"].compression.stages == [] and configs["qat+act"].compression.init_batches == 2
    result = bq.benchmark_variants(configs, dataset, name="tiny", repeats=1, steps=1500, progress=False)
    assert result["steps"] == 1500 and result["base_steps"] == 100 and result["metric_fetches_timed"] == 15
    for which in bq.VARIANTS:
        assert len(result["ms_per_step"][which]) == 1
        assert result["compiles"][which] == 1
    for which in ("qat", "qat+act"):
        assert math.isfinite(result["ratio_to_float"][which]) and result["ratio_to_float"][which] > 0
    json.dumps(result)  # what --out writes
    table = bq.format_step_table([result])
    assert "qat/float" in table.splitlines()[0] and table.splitlines()[1].startswith("tiny")


def test_benchmark_configs_are_the_baselines_on_one_device():
    config, dataset = bq.benchmark_config("lenet5", "synthetic")
    assert config.model.name == "lenet5" and config.train.batch_size == 128 and config.mesh.data == 1
    assert dataset.train["inputs"].shape[1:] == (28, 28, 1)
    config, dataset = bq.benchmark_config("char_transformer")
    assert dataset.kind == "language_model" and config.model.name == "char_transformer"
    with pytest.raises(ValueError, match="unknown model"):
        bq.benchmark_config("resnet")


def test_transformer_weight_selection_quantizes_kernels_and_both_embeddings():
    config, dataset = bq.benchmark_config("char_transformer")
    model = models.build_model(config.model, dataset.num_classes)
    abstract = jax.eval_shape(lambda k: model.init(k, np.zeros((1, 8), np.int32))["params"], jax.random.PRNGKey(0))
    stage = dict(bq.variant_configs(config, bq.TRANSFORMER_WEIGHTS)["qat"].compression.stages[0])
    transform = registry.build(stage.pop("technique"), **stage)
    state = jax.eval_shape(lambda p: transform.init(p)[1], abstract)
    assert {"embed/embedding", "pos_embed"} <= set(state)
    assert sum(p.endswith("kernel") for p in state) >= 4 * config.model.num_layers


def test_packed_payload_is_the_formula_exactly_at_4_bits():
    row = bq.measure_bytes("lenet300", 4)
    # 784x300, 300x100, 100x10 kernels at 4 bits; one float32 scale per output channel; float32 biases.
    codes = sum(math.ceil(n * 4 / 8) for n in (784 * 300, 300 * 100, 100 * 10))
    expected = codes + 4 * (300 + 100 + 10) + 4 * (300 + 100 + 10)
    assert row["bytes_formula"] == expected
    assert row["bytes_payload"] == expected and row["index"] == ["dense"]
    assert row["bytes_file"] == row["bytes_payload"] + row["bytes_header"]


def test_exported_file_is_within_2_percent_of_the_formula_at_8_bits():
    row = bq.measure_bytes("lenet300", 8)
    assert row["bytes_payload"] == row["bytes_formula"]
    assert 0 <= row["file_vs_formula"] < 0.02
    table = bq.format_bytes_table([row])
    assert "8 bit (uniform)" in table


def test_formula_counts_binary_codebooks_and_nonzero_zero_points():
    params = {"dense": {"kernel": np.ones((10, 3), np.float32), "bias": np.zeros(3, np.float32)}}
    binary = {"dense/kernel": {"scale": np.ones((1, 3), np.float32)}}
    assert bq.formula_bytes(params, binary) == {"codes": 4, "scales": 24, "float_params": 12, "total": 40}
    for zero_point, scales in ((0.0, 12), (1.0, 24)):
        affine = {"dense/kernel": {"bits": 3, "qmin": 0.0, "qmax": 7.0, "scale": np.ones((1, 3)),
                                   "zero_point": np.full((1, 3), zero_point)}}
        assert bq.formula_bytes(params, affine)["codes"] == math.ceil(30 * 3 / 8)
        assert bq.formula_bytes(params, affine)["scales"] == scales
    assert qc.weight_stage(1)["scheme"] == "binary"
