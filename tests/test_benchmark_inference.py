"""Inference benchmark of exports (tiny synthetic runs) and the structured-vs-unstructured pruning configs."""
import importlib
import json
import math

import jax
import numpy as np
import pytest

from compression import accounting, registry
from compression.transform import export_model
from configs import ablation_structured_lenet300, li2017_lenet5
from experiments import benchmark_inference, models, structures, train
from tests.helpers import tiny_config, tiny_lm_config

LEVELS = (25, 50, 75)
CONFIGS = {"li2017_lenet5": ("filters", li2017_lenet5),
           "ablation_structured_lenet300": ("neurons", ablation_structured_lenet300)}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Three tiny exports of a 784-16-10 MLP: dense; 8 of 16 neurons removed; 50% unstructured (sparse)."""
    root = tmp_path_factory.mktemp("bench")
    train.train_and_evaluate(tiny_config(num_steps=2), str(root / "dense"), progress=False)
    pretrained = str(root / "dense" / "export" / "params.safetensors")
    stages = {"structured": {"technique": "structured_prune", "sparsity": 0.5,
                             "groups": structures.mlp_neuron_groups((16,))},
              "unstructured": {"technique": "prune", "select": ".*kernel", "sparsity": 0.5, "scope": "global"}}
    for name, stage in stages.items():
        config = tiny_config(num_steps=2)
        config.init_from = pretrained
        config.compression.stages = [stage]
        if name == "unstructured":
            config.export.codecs = ((".*kernel", "sparse"), (".*", "dense"))
        train.train_and_evaluate(config, str(root / name), progress=False)
    return [str(root / name) for name in ("dense", "structured", "unstructured")]


def test_benchmark_times_every_export_beside_the_reference(tiny_runs):
    result = benchmark_inference.benchmark(tiny_runs, batch_sizes=(1, 4), repeats=1, seconds_per_repeat=0.001)
    dense, structured, sparse = result["rows"]
    assert [r["run"] for r in result["rows"]] == ["dense", "structured", "unstructured"]
    assert result["reference"] == "dense" and result["batch_sizes"] == [1, 4]
    assert structured["model"]["hidden"] == [8]  # rebuilt from the export header's shrunk config
    assert dense["params_total"] == 784 * 16 + 16 + 16 * 10 + 10
    assert structured["params_total"] == 784 * 8 + 8 + 8 * 10 + 10 < dense["params_total"]
    assert structured["flops_per_example"] < dense["flops_per_example"]
    # The sparse export is small on disk but loads as the dense shapes, zeros included.
    assert sparse["codecs"] == ["dense", "sparse"] and sparse["params_total"] == dense["params_total"]
    assert sparse["weights_nonzero"] == dense["weights_total"] // 2
    assert sparse["bytes_exported"] < dense["bytes_exported"]
    assert sparse["flops_per_example"] == dense["flops_per_example"]
    for r in result["rows"]:
        for b in ("1", "4"):
            assert math.isfinite(r["ms_median"][b]) and r["ms_median"][b] > 0
            assert len(r["ms_per_repeat"][b]) == 1 and r["calls_per_repeat"][b] >= 3
            assert math.isfinite(r["speedup"][b])
    assert dense["speedup"] == {"1": 1.0, "4": 1.0}
    table = benchmark_inference.format_table(result).splitlines()
    assert len(table) == 4 and "ms b=4" in table[0] and table[2].startswith("structured")
    json.dumps(result)  # what --out writes


def test_language_models_are_timed_on_token_windows_and_a_factored_export_costs_fewer_flops(tmp_path, tiny_runs):
    model = {"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 1, "num_heads": [2],
             "ffn_dim": [32], "head_dim": 8}
    dirs = []
    for name, stages in (("dense", []), ("factored", [{"technique": "low_rank", "select": ".*ffn_(in|out)/kernel",
                                                      "rank": 2}])):
        config = tiny_lm_config(model, num_steps=1)
        config.compression.stages = stages
        train.export_run(train.build_run(config), str(tmp_path / name))  # untrained: only the shapes matter
        dirs.append(str(tmp_path / name))
    result = benchmark_inference.benchmark(dirs, batch_sizes=(2,), repeats=1, seconds_per_repeat=0.001)
    dense, factored = result["rows"]
    assert factored["model"]["low_rank"] == {"block_0/ffn_in": 2, "block_0/ffn_out": 2}
    # Two 16 x 32 matrices become (16 + 32) * 2 each: 1,024 weights less 192, per position.
    assert dense["params_total"] - factored["params_total"] == 2 * (16 * 32 - 48 * 2)
    assert factored["flops_per_example"] < dense["flops_per_example"]
    assert result["input"].startswith("random int32 tokens (8,) below 32")
    with pytest.raises(ValueError, match="time models of one input kind side by side"):
        benchmark_inference.benchmark([dirs[0], tiny_runs[0]], repeats=1, seconds_per_repeat=0.001)


def test_batchnorm_models_are_timed_with_the_running_statistics_their_export_stores(tmp_path):
    # MobileNet's exports keep BatchNorm's statistics beside the params (the header's collections).
    dirs = []
    for blocks in ("full", "separable"):
        config = tiny_config(num_steps=1)
        config.model = {"name": "mobilenet_cnn", "features": [4, 8, 8], "strides": [1, 2, 1], "blocks": blocks}
        train.export_run(train.build_run(config), str(tmp_path / blocks))
        dirs.append(str(tmp_path / blocks))
    result = benchmark_inference.benchmark(dirs, batch_sizes=(2,), repeats=1, seconds_per_repeat=0.001)
    full, separable = result["rows"]
    # Blocks 1-2: full 3x3 convs 4->8 and 8->8 against depthwise 3x3 + pointwise 1x1 pairs, whose
    # depthwise halves add a BatchNorm (scale and bias) on 4 and 8 channels; statistics are not counted.
    assert full["params_total"] - separable["params_total"] == (9 * 4 * 8 + 9 * 8 * 8) - (9 * 4 + 4 * 8 + 9 * 8 + 8 * 8) - (4 + 8) * 2
    assert separable["flops_per_example"] < full["flops_per_example"]
    assert math.isfinite(separable["speedup"]["2"])


def test_benchmark_rejects_a_directory_without_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="export"):
        benchmark_inference.benchmark([str(tmp_path)], repeats=1)


def test_command_module_defines_its_flags_only_when_run():
    from absl import flags

    importlib.import_module("experiments.benchmark_inference")
    assert "seconds_per_repeat" not in flags.FLAGS  # test modules import several commands in one process


def _variants(kind):
    return [f"{k}_{p}{q}" for k in (kind, "unstructured") for p in LEVELS for q in ("", "_quick")]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_variant_resolves_from_the_pretrained_baseline(name):
    kind, module = CONFIGS[name]
    for variant in _variants(kind):
        config = module.get_config(variant)
        assert config.init_from == module.PRETRAINED and "seed_0/export" in config.init_from
        assert config.train.num_steps == (93 if variant.endswith("_quick") else 936)
        assert config.optimizer.schedule == "constant" and config.optimizer.learning_rate == 3e-4
        (stage,) = config.compression.stages
        if variant.startswith(kind):
            assert stage["technique"] == "structured_prune" and stage["scope"] == "layer"
            assert stage["sparsity"] == int(variant.split("_")[1]) / 100
        else:
            assert stage["technique"] == "prune" and stage["scope"] == "global" and stage["select"] == ".*kernel"
            assert dict(config.export.codecs)[".*kernel"] == "sparse"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bad_variants_are_errors(name):
    kind, module = CONFIGS[name]
    other = "neurons" if kind == "filters" else "filters"
    for variant in ("", f"{kind}_30", kind, "unstructured_25_ft", f"{other}_25", f"{kind}_25_quick_x"):
        with pytest.raises(ValueError, match="variant"):
            module.get_config(variant)


def _weights_after_init(config):
    """Kernel entries left by the config's compression: shrunk shapes (structured) or nonzeros (unstructured)."""
    model = models.build_model(config.model, 10)
    params = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 1), np.uint8))["params"]
    transform = registry.build_chain(list(config.compression.stages))
    trainable, state = transform.init(params, jax.random.PRNGKey(1))
    effective = jax.device_get(transform.apply(trainable, state))
    # Every transform has an export now (the identity where nothing is structural): only the
    # structured stage shrinks the model, the unstructured one leaves zeros in the dense shapes.
    (stage,) = config.compression.stages
    if stage["technique"] != "structured_prune":
        return accounting.params_nonzero(accounting.weight_matrices(effective)), None
    shrunk, model_config = export_model(transform, effective, jax.device_get(state), config.model.to_dict())
    return accounting.params_total(accounting.weight_matrices(shrunk)), model_config


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unstructured_variant_keeps_as_many_nonzero_weights_as_the_shrunk_structured_model(name, level):
    kind, module = CONFIGS[name]
    structured, model_config = _weights_after_init(module.get_config(f"{kind}_{level}"))
    unstructured, _ = _weights_after_init(module.get_config(f"unstructured_{level}"))
    assert structured == unstructured
    if kind == "filters":
        conv, dense = li2017_lenet5.shrunk_shape(level)
        assert (tuple(model_config["conv_features"]), model_config["dense_features"]) == (conv, dense)
        assert structured == li2017_lenet5.lenet5_weights(conv, dense)
    else:
        assert tuple(model_config["hidden"]) == ablation_structured_lenet300.shrunk_hidden(level)


def test_kept_counts_follow_the_exact_count_rule():
    # round half to even in float32: 12.5 -> 12 and 37.5 -> 38 of LeNet-5's 50 conv2 filters.
    assert li2017_lenet5.shrunk_shape(25) == ((15, 38), 375)
    assert li2017_lenet5.shrunk_shape(75) == ((5, 12), 125)
    assert ablation_structured_lenet300.shrunk_hidden(50) == (150, 50)
    assert li2017_lenet5.lenet5_weights((20, 50), 500) == 431_080 - (20 + 50 + 500 + 10)
    assert ablation_structured_lenet300.mlp_weights((300, 100)) == 266_610 - (300 + 100 + 10)
