"""The models: the parameter counts the papers quote, per-layer Transformer shapes, the package check."""
import sys
import types

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from compression.accounting import params_total
from experiments import models


def _params(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


IMAGE = jnp.zeros((1, 28, 28, 1), jnp.uint8)


@pytest.mark.parametrize("model, count", [
    (models.MLP((300, 100)), 266_610),  # LeNet-300-100 (Han et al. 2015)
    (models.LeNet5(), 431_080),  # LeNet-5, Caffe variant (Han et al. 2015)
    (models.MLP((1200, 1200)), 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 12010),  # Hinton 2015 teacher
    (models.MLP((800, 800)), 784 * 800 + 800 + 800 * 800 + 800 + 8010),  # Hinton 2015 student
])
def test_models_have_the_parameter_counts_the_papers_quote(model, count):
    assert params_total(_params(model, IMAGE)) == count


def test_transformer_layers_may_differ_in_heads_and_ffn_width():
    model = models.CharTransformer(vocab_size=256, max_len=16, width=64, num_heads=(4, 2, 0),
                                   ffn_dims=(128, 0, 32), head_dim=16)
    p = _params(model, jnp.zeros((2, 16), jnp.int32))
    assert p["block_0"]["attn"]["query"]["kernel"].shape == (64, 4, 16)
    assert p["block_1"]["attn"]["out"]["kernel"].shape == (2, 16, 64)
    assert "attn" not in p["block_2"] and "ffn_in" not in p["block_1"]
    assert p["block_2"]["ffn_in"]["kernel"].shape == (64, 32)
    logits = model.apply({"params": model.init(jax.random.key(0), jnp.zeros((2, 16), jnp.int32))["params"]},
                         jnp.zeros((2, 16), jnp.int32))
    assert logits.shape == (2, 16, 256)


def test_transformer_is_causal():
    model = models.CharTransformer(vocab_size=32, max_len=8, width=32, num_heads=(2,), ffn_dims=(64,),
                                   head_dim=16)
    x = jnp.arange(8)[None] % 32
    params = model.init(jax.random.key(0), x)["params"]
    y = x.at[0, 5].set(7)
    a, b = model.apply({"params": params}, x), model.apply({"params": params}, y)
    assert jnp.allclose(a[0, :5], b[0, :5]) and not jnp.allclose(a[0, 5:], b[0, 5:])


def test_factorized_embedding_uses_an_embedding_width_below_the_model_width():
    model = models.CharTransformer(vocab_size=256, max_len=8, width=64, num_heads=(2,), ffn_dims=(64,),
                                   head_dim=16, embed_dim=16)
    p = _params(model, jnp.zeros((1, 8), jnp.int32))
    assert p["embed"]["embedding"].shape == (256, 16) and p["embed_proj"]["kernel"].shape == (16, 64)


def test_build_model_reads_per_layer_lists_and_rejects_bad_settings():
    cfg = ml_collections.ConfigDict({"name": "char_transformer", "max_len": 8, "width": 32, "num_layers": 2,
                                     "num_heads": [2, 1], "ffn_dim": 64, "head_dim": 16})
    model = models.build_model(cfg, 256)
    assert model.num_heads == (2, 1) and model.ffn_dims == (64, 64)
    cfg.num_heads = [2, 1, 1]
    with pytest.raises(ValueError, match="num_heads has 3 entries but model.num_layers is 2"):
        models.build_model(cfg, 256)
    with pytest.raises(ValueError, match="does not accept settings"):
        models.build_model(ml_collections.ConfigDict({"name": "mlp", "hidden": [10], "widht": 3}), 10)


def test_import_compression_is_the_lab_and_a_foreign_package_fails_loudly(monkeypatch):
    import compression
    import experiments

    assert compression.LAB_PACKAGE == "compression-lab"
    # Python 3.14's standard library has a `compression` package; it must not pass for ours.
    monkeypatch.setitem(sys.modules, "compression", types.ModuleType("compression"))
    with pytest.raises(ImportError, match="not the compression lab"):
        experiments.ensure_lab_package()


def test_compression_imports_after_jax_and_jax_after_compression():
    # jax 0.10.2 runs `from compression import zstd` while it initializes (for Python 3.14's
    # standard library); our package must not import half-loaded jax modules at that moment.
    import subprocess

    for code in ("import jax; import compression; import compression.pruning",
                 "import compression; import jax; import compression.pruning"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]


def _three_layer_transformer(**kw):
    return models.CharTransformer(vocab_size=32, max_len=8, width=32, num_heads=(2, 2, 2), ffn_dims=(32,) * 3,
                                  head_dim=16, **kw)


def test_layer_drop_skips_whole_blocks_in_training_only_and_a_skipped_block_gets_no_gradient():
    x = jnp.arange(16).reshape(2, 8) % 32
    model = _three_layer_transformer(layer_drop_rate=0.5)
    params = model.init(jax.random.key(0), x)["params"]

    def hidden(train, seed):
        _, inter = model.apply({"params": params}, x, train=train, rngs={"dropout": jax.random.key(seed)},
                               mutable=["intermediates"])
        i = inter["intermediates"]
        return [i["embedding"][0]] + [i[f"hidden_{k}"][0] for k in range(3)]

    skipped = set()
    for seed in range(20):
        h = hidden(True, seed)
        # Each block either is skipped (passes its input on exactly) or runs.
        same = [bool(jnp.array_equal(h[k], h[k + 1])) for k in range(3)]
        skipped |= {k for k, s in enumerate(same) if s}
        if same[1]:
            grads = jax.grad(lambda p: model.apply({"params": p}, x, train=True,
                                                   rngs={"dropout": jax.random.key(seed)}).sum())(params)
            assert all(not jnp.any(g) for g in jax.tree_util.tree_leaves(grads["block_1"]))
    assert skipped == {0, 1, 2}  # every block is dropped at some step, at rate 0.5
    # In evaluation every block runs, whatever the rng.
    h = hidden(False, 0)
    assert not any(jnp.array_equal(h[k], h[k + 1]) for k in range(3))
    with pytest.raises(ValueError, match="layer_drop_rate 1.0 must be in \\[0, 1\\)"):
        _three_layer_transformer(layer_drop_rate=1.0).init(jax.random.key(0), x)


def test_layer_norm_epsilon_reaches_every_layer_norm():
    x = jnp.arange(8)[None] % 32
    a, b = _three_layer_transformer(), _three_layer_transformer(layer_norm_epsilon=1e-5)
    params = a.init(jax.random.key(0), x)["params"]
    # Same parameters, different epsilon: the logits differ (slightly), so the setting is not ignored.
    diff = jnp.abs(a.apply({"params": params}, x) - b.apply({"params": params}, x)).max()
    assert 0 < float(diff) < 1e-2
    with pytest.raises(ValueError, match="layer_norm_epsilon 0 must be > 0"):
        _three_layer_transformer(layer_norm_epsilon=0).init(jax.random.key(0), x)


def test_layer_drop_in_the_driver_is_a_function_of_seed_and_step_and_rate_zero_is_the_plain_model():
    from experiments import train
    from tests.helpers import tiny_lm_config

    def trained(seed, **model):
        config = tiny_lm_config({"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 3,
                                 "num_heads": 2, "ffn_dim": 16, "head_dim": 8, **model}, num_steps=3)
        config.seed = seed
        run = train.build_run(config)
        state = run.state
        for step in range(3):
            state, _ = run.train_step(state, train.data_lib.train_batch(run.dataset, seed, step, 8, 8))
        return jax.device_get(state["trainable"])

    same = lambda a, b: all(bool(jnp.array_equal(x, y)) for x, y in
                            zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    dropped = trained(0, layer_drop_rate=0.5)
    assert same(dropped, trained(0, layer_drop_rate=0.5))  # the same (seed, step): the same layers dropped
    assert not same(dropped, trained(0))
    assert same(trained(0, layer_drop_rate=0.0), trained(0))
