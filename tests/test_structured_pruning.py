"""Structured pruning: hand-computed unit scores, exact counts, monotone masks, and the export invariant
(the physically smaller model predicts exactly what the masked model does) on MLP, LeNet-5 and the
CharTransformer, plus layer dropping."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import registry
from compression.layer_drop import dropped_indices, layer_drop
from compression.structured_export import drop_layers_config, drop_layers_params, shrink_config, shrink_params
from compression.selection import leaves_by_path
from compression.structured_pruning import structured_prune
from compression.unit_groups import check_groups, parse_groups
from experiments import structures
from experiments.models import build_model
from tests.helpers import transformer_ffn_groups

# Columns of "a/kernel": L1 norms (4, 2.5, 3) but L2 norms (3.16, 2.5, 2.12), so L1 and L2 prune different units.
A = jnp.array([[1.0, -2.5, 1.5],
               [3.0, 0.0, -1.5]])


def _params():
    return {"a": {"kernel": A, "bias": jnp.array([1.0, 2.0, 3.0])},
            "b": {"kernel": jnp.arange(1.0, 7.0).reshape(3, 2), "bias": jnp.array([0.5, 0.5])}}


GROUP = {"name": "a_neurons", "members": [["a/kernel", 1], ["a/bias", 0], ["b/kernel", 0]]}


def unit_scores(params, group, norm=1):
    """What structured_prune ranks one group's units by: the summed slice norms of its score members."""
    (g,) = parse_groups([group])
    check_groups([g], params)
    return g.scores(leaves_by_path(params), norm)


def _count(params):
    return sum(int(np.size(x)) for x in jax.tree_util.tree_leaves(params))


@pytest.mark.parametrize("norm, scores, pruned", [(1, [4.0, 2.5, 3.0], 1),
                                                  (2, [np.sqrt(10.0), 2.5, np.sqrt(4.5)], 2)])
def test_unit_scores_and_masks_by_l1_and_l2_norm(norm, scores, pruned):
    np.testing.assert_allclose(unit_scores(_params(), GROUP, norm=norm), scores, rtol=1e-6)
    t = structured_prune([GROUP], 1 / 3, norm=norm)
    trainable, state = t.init(_params())
    keep = [u != pruned for u in range(3)]
    np.testing.assert_array_equal(state["masks"]["a_neurons"], keep)
    out = t.apply(trainable, state)
    expected_a = np.where(keep, np.asarray(A), 0.0)
    np.testing.assert_array_equal(out["a"]["kernel"], expected_a)
    np.testing.assert_array_equal(out["a"]["bias"], np.where(keep, [1.0, 2.0, 3.0], 0.0))
    b = np.arange(1.0, 7.0).reshape(3, 2)
    np.testing.assert_array_equal(out["b"]["kernel"], np.where(np.array(keep)[:, None], b, 0.0))
    np.testing.assert_array_equal(out["b"]["bias"], [0.5, 0.5])  # no member: untouched
    # Scores summed over several score members (here a's columns + b's rows, L1): 4+3, 2.5+7, 3+11.
    two = dict(GROUP, score=[["a/kernel", 1], ["b/kernel", 0]])
    if norm == 1:
        np.testing.assert_allclose(unit_scores(_params(), two, norm=1), [7.0, 9.5, 14.0])


def test_periodic_member_folds_a_flattened_channel_axis():
    # d/kernel reads a flattened (2 positions x 3 channels) map, channels fastest: unit u = rows u, u + 3.
    d = jnp.array([[1.0, 1.0], [0.1, 0.0], [2.0, 0.0], [1.0, 0.0], [0.2, 0.0], [0.0, 0.0]])
    params = {"c": {"kernel": jnp.array([[0.0, 5.0, 0.0]])}, "d": {"kernel": d}}
    group = {"name": "ch", "members": [["c/kernel", 1], ["d/kernel", 0, 3]], "score": [["d/kernel", 0, 3]]}
    np.testing.assert_allclose(unit_scores(params, group), [3.0, 0.3, 2.0], rtol=1e-6)
    t = structured_prune([group], 0.34)  # round(1.02) = 1 unit: channel 1
    trainable, state = t.init(params)
    np.testing.assert_array_equal(state["masks"]["ch"], [True, False, True])
    out = t.apply(trainable, state)
    np.testing.assert_array_equal(out["c"]["kernel"], [[0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(np.asarray(out["d"]["kernel"])[[1, 4]], 0.0)
    np.testing.assert_array_equal(np.asarray(out["d"]["kernel"])[[0, 2, 3, 5]], np.asarray(d)[[0, 2, 3, 5]])
    small = shrink_params(out, [group], state["masks"])
    np.testing.assert_array_equal(small["d"]["kernel"], np.asarray(d)[[0, 2, 3, 5]])
    assert small["c"]["kernel"].shape == (1, 2)


def _groups(sizes):
    return [{"name": f"g{i}", "members": [[f"l{i}/kernel", 1]]} for i in range(len(sizes))]


def test_exact_counts_per_group_and_global_and_at_least_one_unit_kept():
    key = jax.random.key(0)
    params = {"l0": {"kernel": 10.0 + jax.random.uniform(key, (4, 10))},  # large weights
              "l1": {"kernel": 0.01 * jax.random.uniform(key, (4, 6))},  # tiny weights
              "l2": {"kernel": jnp.ones((4, 2))}}
    groups = _groups((10, 6, 2))
    _, state = jax.jit(structured_prune(groups, 0.5).init)(params)
    assert [int((~state["masks"][f"g{i}"]).sum()) for i in range(3)] == [5, 3, 1]
    # 0.9: round(9)=9 of 10, round(5.4)=5 of 6, round(1.8)=2 of 2 clipped to 1.
    _, state = jax.jit(structured_prune(groups, 0.9).init)(params)
    assert [int((~state["masks"][f"g{i}"]).sum()) for i in range(3)] == [9, 5, 1]
    # Global, 0.5 of 18 = 9: the 6 tiny units of l1 rank lowest but its best survives, then l2 (norm 4)
    # loses 1 unit (its other is protected) and l0 (norms > 40) loses 3.
    _, state = jax.jit(structured_prune(groups, 0.5, scope="global").init)(params)
    assert [int((~state["masks"][f"g{i}"]).sum()) for i in range(3)] == [3, 5, 1]
    # Global at 0.95: round(17.1)=17 capped to 18 - 3 groups = 15; each group keeps one unit.
    _, state = jax.jit(structured_prune(groups, 0.95, scope="global").init)(params)
    assert [int(state["masks"][f"g{i}"].sum()) for i in range(3)] == [1, 1, 1]


def test_masks_are_monotone_under_a_schedule_with_one_compile():
    key = jax.random.key(1)
    params = {"l0": {"kernel": jax.random.normal(key, (5, 12))}, "l1": {"kernel": jax.random.normal(key, (3, 8))}}
    t = structured_prune(_groups((12, 8)), {"kind": "polynomial", "final_sparsity": 0.75, "begin_step": 0,
                                            "end_step": 4}, norm=2)
    trainable, state = t.init(params)
    update = jax.jit(t.update)
    previous = dict(state["masks"])
    shuffle = jax.jit(lambda tree, step: jax.tree_util.tree_map(
        lambda w: 3 * jax.random.normal(jax.random.fold_in(key, step), w.shape), tree))
    for step in range(6):
        # Shuffle the weights so that a fresh ranking would revive pruned units if masks were not monotone.
        noise = shuffle(trainable, step)
        trainable = jax.tree_util.tree_map(jnp.add, trainable, noise)
        trainable, state = update(trainable, state, noise, jnp.int32(step))
        s = 0.75 * (1 - (1 - min(step + 1, 4) / 4) ** 3)
        for name, n in (("g0", 12), ("g1", 8)):
            mask = state["masks"][name]
            assert not bool(jnp.any(mask & ~previous[name]))  # only shrinks
            assert int((~mask).sum()) == min(round(s * n), n - 1)
        previous = dict(state["masks"])
        out = np.asarray(trainable["params"]["l0"]["kernel"])
        assert not np.any(out[:, ~np.asarray(state["masks"]["g0"])])  # update re-zeroed the pruned units
    assert update._cache_size() == 1


def test_two_sparsities_share_one_compiled_update_and_update_every_is_respected():
    params = {"l0": {"kernel": jax.random.normal(jax.random.key(2), (3, 8))}}
    t = structured_prune(_groups((8,)), {"kind": "iterative", "sparsities": [0.25, 0.5], "steps": [0, 3]},
                         update_every=2)
    trainable, state = t.init(params)
    update = jax.jit(t.update)
    pruned = []
    for step in range(5):
        trainable, state = update(trainable, state, trainable, jnp.int32(step))
        pruned.append(int((~state["masks"]["g0"]).sum()))
    # 2 units (0.25) pruned at init; re-scored only after steps 1 and 3 (step + 1 even): 0.5 -> 4 at step 3.
    assert pruned == [2, 2, 2, 4, 4]
    assert float(state["sparsity"]) == 0.5
    assert update._cache_size() == 1


def _init(config, x, seed=0):
    """The model and random params of its shapes (from jax.eval_shape: no slow Flax init on a busy CPU).

    Kernels are normal / sqrt(fan-in), LayerNorm scales near 1 and biases random too, so a pruned
    unit's zeroed bias matters to the invariant."""
    model = build_model(config, 10 if config["name"] != "char_transformer" else 11)
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]

    def fill(kp, leaf):
        rng = np.random.default_rng([seed, zlib.crc32(str(kp).encode())])
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        name = str(kp[-1].key)
        if name == "kernel":
            return jnp.asarray(noise / np.sqrt(np.prod(leaf.shape[:-1])))
        return jnp.asarray(1.0 + 0.1 * noise if name == "scale" else 0.1 * noise)

    return model, jax.tree_util.tree_map_with_path(fill, shapes)


def _assert_small_model_matches(config, groups, x, sparsity, expected_config, removed=None, **settings):
    model, params = _init(config, x)
    t = structured_prune(groups, sparsity, **settings)
    trainable, state = jax.jit(t.init)(params)  # one compilation instead of many eager ops
    masked = jax.jit(t.apply)(trainable, state)
    small_config = shrink_config(config, groups, state["masks"])
    for key, value in expected_config.items():
        assert tuple(np.atleast_1d(small_config[key])) == tuple(np.atleast_1d(value)), key
    small_model = build_model(small_config, 10 if config["name"] != "char_transformer" else 11)
    small = shrink_params(masked, groups, state["masks"])
    shapes = jax.eval_shape(small_model.init, jax.random.key(0), x)["params"]
    assert jax.tree_util.tree_map(np.shape, small) == jax.tree_util.tree_map(lambda s: s.shape, shapes)
    np.testing.assert_allclose(np.asarray(jax.jit(small_model.apply)({"params": small}, x)),
                               np.asarray(jax.jit(model.apply)({"params": masked}, x)), rtol=1e-5, atol=1e-5)
    assert _count(small) < _count(params)
    if removed is not None:
        assert _count(params) - _count(small) == removed
    return small


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_mlp_shrunk_model_equals_masked_model(scope):
    config = {"name": "mlp", "hidden": (32, 16)}
    x = jax.random.uniform(jax.random.key(3), (4, 28, 28, 1))
    groups = structures.mlp_neuron_groups(config["hidden"])
    if scope == "layer":
        # 784-32-16-10 -> 784-16-8-10: 25,818 -> 12,786 parameters.
        _assert_small_model_matches(config, groups, x, 0.5, {"hidden": (16, 8)}, removed=25818 - 12786)
    else:
        small = _assert_small_model_matches(config, groups, x, 0.5, {}, scope="global")
        assert small["Dense_0"]["kernel"].shape[1] + small["Dense_1"]["kernel"].shape[1] == 24


def test_lenet5_shrunk_filters_and_neurons_equal_masked_model():
    config = {"name": "lenet5", "conv_features": (4, 6), "dense_features": 20}
    x = jax.random.uniform(jax.random.key(4), (3, 28, 28, 1))
    groups = structures.lenet5_filter_groups(config["conv_features"]) + structures.lenet5_neuron_groups()
    assert groups[1]["members"][2] == ["Dense_0/kernel", 0, 6]  # 4x4x6 map, channels fastest
    # conv 4, 6 and dense 20 -> 2, 3 and 10: 2,860 -> 805 parameters.
    _assert_small_model_matches(config, groups, x, 0.5,
                                {"conv_features": (2, 3), "dense_features": 10}, removed=2860 - 805)


TRANSFORMER = {"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 3, "num_heads": [4, 4, 4],
               "head_dim": 4, "ffn_dim": [32, 32, 32]}
TOKENS = jax.random.randint(jax.random.key(5), (2, 8), 0, 11)


def test_transformer_shrunk_heads_and_ffn_equal_masked_model():
    groups = structures.transformer_head_groups(3) + transformer_ffn_groups(3)
    # Per layer 2 heads (3 * 16 * 4 + 3 * 4 + 4 * 16 = 268 each) and 16 FFN units (16 + 1 + 16 each) go.
    _assert_small_model_matches(TRANSFORMER, groups, TOKENS, 0.5,
                                {"num_heads": (2, 2, 2), "ffn_dim": (16, 16, 16)},
                                removed=3 * (2 * 268 + 16 * 33), norm=2)


@pytest.mark.parametrize("drop, dropped", [([1], [1]), ({"policy": "top", "count": 1}, [2]),
                                           ({"policy": "bottom", "count": 2}, [0, 1])])
def test_layer_drop_small_model_equals_zeroed_model(drop, dropped):
    model, params = _init(TRANSFORMER, TOKENS)
    layers = structures.transformer_layers(3)
    assert dropped_indices(3, drop) == dropped
    t = registry.build("layer_drop", layers=layers, drop=drop)
    trainable, state = t.init(params)
    zeroed = t.apply(trainable, state)
    for i in dropped:
        assert not np.any(np.asarray(zeroed[f"block_{i}"]["attn"]["out"]["kernel"]))
        assert not np.any(np.asarray(zeroed[f"block_{i}"]["ffn_out"]["bias"]))
    trainable, state = t.update(jax.tree_util.tree_map(lambda w: w + 1.0, trainable), state, trainable, 0)
    assert not np.any(np.asarray(trainable["params"][f"block_{dropped[0]}"]["ffn_out"]["kernel"]))  # re-zeroed
    small = drop_layers_params(zeroed, layers, dropped)
    small_config = drop_layers_config(TRANSFORMER, dropped)
    assert small_config["num_layers"] == 3 - len(dropped) and len(small_config["num_heads"]) == 3 - len(dropped)
    assert sorted(k for k in small if k.startswith("block_")) == layers[:3 - len(dropped)]
    kept = [i for i in range(3) if i not in dropped]
    np.testing.assert_array_equal(small["block_0"]["ffn_in"]["kernel"], zeroed[f"block_{kept[0]}"]["ffn_in"]["kernel"])
    small_model = build_model(small_config, 11)
    np.testing.assert_allclose(np.asarray(small_model.apply({"params": small}, TOKENS)),
                               np.asarray(model.apply({"params": zeroed}, TOKENS)), rtol=1e-5, atol=1e-5)


def test_structured_prune_then_layer_drop_export_in_a_chain():
    model, params = _init(TRANSFORMER, TOKENS, seed=1)
    groups = structures.transformer_head_groups(3)
    layers = structures.transformer_layers(3)
    t = registry.build_chain([{"technique": "structured_prune", "groups": groups, "sparsity": 0.25},
                              {"technique": "layer_drop", "layers": layers, "drop": [0]}])
    trainable, state = t.init(params)
    assert sorted(state) == ["layer_drop", "structured_prune"]
    prune_state = state["structured_prune"]
    effective = t.apply(trainable, state)
    small = drop_layers_params(shrink_params(effective, groups, prune_state["masks"]), layers, [0])
    small_config = drop_layers_config(shrink_config(TRANSFORMER, groups, prune_state["masks"]), [0])
    assert small_config["num_heads"] == [3, 3] and small_config["num_layers"] == 2
    np.testing.assert_allclose(np.asarray(build_model(small_config, 11).apply({"params": small}, TOKENS)),
                               np.asarray(model.apply({"params": effective}, TOKENS)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("settings, message", [
    ({"sparsity": 1.0}, "sparsity must be in \\[0, 1\\).*1.0"),
    ({"sparsity": -0.1}, "-0.1"),
    ({"norm": 3}, "norm 3"),
    ({"scope": "channel"}, "scope 'channel'"),
    ({"update_every": 0}, "update_every"),
    ({"groups": [{"name": "g", "members": [["a/kernel"]]}]}, "group 'g'.*\\['a/kernel'\\]"),
    ({"groups": [{"name": "g", "members": [["a/kernel", 1, 0]]}]}, "group 'g'.*period"),
    ({"groups": [{"name": "g", "members": [["a/kernel", 1], ["b/kernel", 1]]}]},
     "group 'g': b/kernel \\(axis 1\\) has 2 units but a/kernel \\(axis 1\\) has 3"),
    ({"groups": [{"name": "g", "members": [["a/kernal", 1]]}]}, "group 'g'.*a/kernal"),
    ({"groups": [{"name": "g", "members": [["a/kernel", 2]]}]}, "axis 2 is out of range for a/kernel"),
    ({"groups": [{"name": "g", "members": [["b/kernel", 0, 2]]}]}, "period 2 does not divide"),
    ({"groups": [{"name": "g", "members": [["a/kernel", 1]], "scores": []}]}, "unknown key.*scores"),
    ({"groups": [GROUP, GROUP]}, "'a_neurons' is used twice"),
    ({"groups": [GROUP, dict(GROUP, name="again")]}, "belongs to both groups"),
])
def test_bad_structured_prune_settings_name_the_group_and_value(settings, message):
    with pytest.raises(ValueError, match=message):
        registry.build("structured_prune", **{"groups": [GROUP], **settings}).init(_params())


def test_bad_layer_drop_and_export_settings_raise():
    layers = structures.transformer_layers(3)
    _, params = _init(TRANSFORMER, TOKENS)
    with pytest.raises(ValueError, match="index 3 is out of range for 3 layers"):
        layer_drop(layers, [3])
    with pytest.raises(ValueError, match="policy 'middle'"):
        layer_drop(layers, {"policy": "middle", "count": 1})
    with pytest.raises(ValueError, match="count 4"):
        layer_drop(layers, {"policy": "top", "count": 4})
    with pytest.raises(ValueError, match="'block_9'"):
        layer_drop(layers + ["block_9"], [0]).init(params)
    with pytest.raises(ValueError, match="zero 'ffn_outt/.\\*' matches no parameter"):
        layer_drop(layers, [0], zero=["ffn_outt/.*"]).init(params)
    # A later chain stage (clustering, sharing) took block_1's ffn_out kernel out of the stored parameters:
    # zeroing its bias alone would leave the block's FFN on, so the drop is refused, naming the leaf.
    restructured = {**params, "block_1": dict(params["block_1"])}
    restructured["block_1"]["ffn_out"] = {"bias": params["block_1"]["ffn_out"]["bias"]}
    with pytest.raises(ValueError, match="layer 'block_1' has no 'ffn_out/kernel', which layer 'block_0' has"):
        layer_drop(layers, [1]).init(restructured)
    with pytest.raises(ValueError, match="index 5 is out of range"):
        drop_layers_config(TRANSFORMER, [5])
    masks = {"block_0_heads": np.array([True, False, True, True])}
    with pytest.raises(ValueError, match="num_heads\\[0\\].*not a per-layer list"):
        shrink_config(dict(TRANSFORMER, num_heads=4), structures.transformer_head_groups(1), masks)
    with pytest.raises(ValueError, match="no unit mask for group 'block_0_heads'"):
        shrink_params(params, structures.transformer_head_groups(1), {})


def test_driver_exports_a_structurally_pruned_mlp_as_a_smaller_model(tmp_path):
    from compression import export
    from experiments import structures, train
    from tests.helpers import tiny_config

    config = tiny_config(num_steps=8)
    config.model.hidden = (32, 16)
    config.compression.stages = [{"technique": "structured_prune", "sparsity": 0.5,
                                  "groups": structures.mlp_neuron_groups((32, 16))}]
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    header = export.read_header(str(tmp_path / "export" / "params.safetensors"))
    assert list(header["metadata"]["model"]["hidden"]) == [16, 8]
    small = 784 * 16 + 16 + 16 * 8 + 8 + 8 * 10 + 10
    assert results["compression"]["params_exported"] == small
    assert results["compression"]["params_total"] == 784 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    assert results["compression"]["bytes_exported"] < 4 * small + 4096
    assert results["compression"]["export_max_abs_logit_diff"] < 1e-4
    assert results["compression"]["flops_per_example"] == 2 * (784 * 16 + 16 * 8 + 8 * 10)  # the smaller model


def _tiny_lm_config(**train):
    from tests.helpers import tiny_config

    config = tiny_config(**train)
    config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 32,
                      "train_size": 4096, "eval_size": 300, "seq_len": 16}
    config.model = {"name": "char_transformer", "max_len": 16, "width": 32, "num_layers": 3,
                    "num_heads": [4, 4, 4], "head_dim": 8, "ffn_dim": [32, 32, 32], "embed_dim": None,
                    "dropout_rate": 0.0}
    config.train.eval_batch_size = 8
    return config


@pytest.mark.parametrize("stage, model_check", [
    ({"technique": "structured_prune", "scope": "global", "sparsity": 0.5, "groups": "heads"},
     lambda m: sum(m["num_heads"]) == 6),
    ({"technique": "layer_drop", "layers": "layers", "drop": {"policy": "top", "count": 2}},
     lambda m: m["num_layers"] == 1 and list(m["num_heads"]) == [4]),
])
def test_pretrained_transformer_pruned_without_finetuning_exports_a_smaller_model(tmp_path, stage, model_check):
    from compression import export
    from experiments import structures, train

    pretrained = train.train_and_evaluate(_tiny_lm_config(num_steps=4), str(tmp_path / "pre"), progress=False)
    config = _tiny_lm_config(num_steps=0)
    config.init_from = str(tmp_path / "pre" / "export" / "params.safetensors")
    stage = dict(stage)
    if stage.get("groups") == "heads":
        stage["groups"] = structures.transformer_head_groups(3)
    if stage.get("layers") == "layers":
        stage["layers"] = structures.transformer_layers(3)
    config.compression.stages = [stage]
    results = train.train_and_evaluate(config, str(tmp_path / "pruned"), progress=False)
    header = export.read_header(str(tmp_path / "pruned" / "export" / "params.safetensors"))
    assert model_check(header["metadata"]["model"])
    assert results["compression"]["params_exported"] < results["compression"]["params_total"]
    assert results["metrics"]["val_loss_nats"] != pretrained["metrics"]["val_loss_nats"]


def test_multiple_of_rounds_each_groups_kept_count_up_and_needs_the_layer_scope():
    model = build_model({"name": "lenet5"}, 10)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    groups = structures.lenet5_filter_groups((20, 50)) + structures.lenet5_neuron_groups()
    # 25% of 20, 50, 500 keeps 15, 38 (50 - round(12.5) = 50 - 12), 375; up to multiples of 8: 16, 40, 376.
    _, state = structured_prune(groups, 0.25, multiple_of=8).init(params)
    kept = {name: int(np.sum(mask)) for name, mask in state["masks"].items()}
    assert kept == {"Conv_0_filters": 16, "Conv_1_filters": 40, "Dense_0_neurons": 376}
    _, state = structured_prune(groups, 0.25).init(params)
    assert {name: int(np.sum(mask)) for name, mask in state["masks"].items()} == {
        "Conv_0_filters": 15, "Conv_1_filters": 38, "Dense_0_neurons": 375}
    with pytest.raises(ValueError, match="multiple_of must be an integer >= 1"):
        structured_prune(groups, 0.25, multiple_of=0)
    with pytest.raises(ValueError, match="scope='layer'"):
        structured_prune(groups, 0.25, multiple_of=8, scope="global")
