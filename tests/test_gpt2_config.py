"""configs/gpt2_small.py: GPT-2 small's shape, its partition rules, and the model options it needs.

The run itself (124 M parameters, about 18 GB on an 8-device CPU mesh) is
too large for the test budget; its quick variants are run by hand and their
numbers are in the closing note of the issue that added them. Here the
shape is checked abstractly (jax.eval_shape), and tied embeddings and remat
on a small Transformer.
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from compression import registry
from configs import gpt2_small
from experiments import models, train


def _abstract_params(config):
    model = models.build_model(config.model, gpt2_small.VOCAB, config.precision.compute)
    example = np.zeros((1, config.dataset.seq_len), np.int32)
    return jax.eval_shape(lambda k: models.init_variables(model, k, example), jax.random.PRNGKey(0))[0]


def test_the_config_has_gpt2_smalls_shape_and_parameter_count():
    config = gpt2_small.get_config()
    params = _abstract_params(config)
    # 124,439,808: GPT-2 small's count (tied token embedding, 1024 positions, biases and LayerNorms).
    assert sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params)) == 124_439_808
    assert "head" not in params  # the output projection is the token embedding
    assert params["block_11"]["attn"]["query"]["kernel"].shape == (768, 12, 64)
    assert params["block_0"]["ffn_in"]["kernel"].shape == (768, 3072)
    assert config.dataset.seq_len == 1024 and config.precision.compute == "bfloat16"


def test_partition_rules_shard_heads_and_ffn_columns_over_model_and_the_rest_over_data():
    config = gpt2_small.get_config("quick")
    mesh = train.create_mesh(config.mesh)
    assert dict(mesh.shape) == {"data": 4, "model": 2}
    specs = train.param_specs(_abstract_params(config), config.mesh.partition_rules, mesh)
    P = jax.sharding.PartitionSpec
    block = specs["block_3"]
    assert block["attn"]["key"]["kernel"] == P("data", "model", None)
    assert block["attn"]["out"]["kernel"] == P("model", None, "data")
    assert block["ffn_in"]["kernel"] == P("data", "model") and block["ffn_out"]["kernel"] == P("model", "data")
    assert specs["embed"]["embedding"] == P(None, "model")  # 50,257 rows split over nothing
    assert block["ln_attn"]["scale"] == P()
    # Every kernel is split over all 8 devices: one copy of the weights in all.
    shardings = train.param_shardings(_abstract_params(config), config.mesh.partition_rules, mesh)
    kernel = jax.ShapeDtypeStruct((768, 3072), np.float32, sharding=shardings["block_0"]["ffn_in"]["kernel"])
    assert kernel.sharding.shard_shape(kernel.shape) == (192, 1536)


@pytest.mark.parametrize("variant,techniques", [("quick", []), ("quick_prune", ["prune"]),
                                                ("quick_quantize", ["quantize"]),
                                                ("quick_prune_quantize", ["prune", "quantize"])])
def test_the_compression_variants_build_their_chains(variant, techniques):
    config = gpt2_small.get_config(variant)
    assert [s["technique"] for s in config.compression.stages] == techniques
    registry.build_chain(list(config.compression.stages))  # each technique checks its settings here
    assert config.train.num_steps == 3 and config.dataset.seq_len == 128


def _small(**options):
    return models.build_model(ml_collections.ConfigDict(
        {"name": "char_transformer", "max_len": 16, "width": 32, "num_layers": 2, "num_heads": 2, "head_dim": 16,
         "ffn_dim": 64, **options}), 64)


def test_tied_embeddings_compute_the_logits_with_the_embedding_transpose():
    model = _small(tie_embeddings=True)
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), tokens)
    logits, sown = model.apply({"params": params}, tokens, mutable=["intermediates"])
    hidden = sown["intermediates"]["hidden_1"][0]
    ln = params["ln_final"]
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    normed = (hidden - mean) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
    np.testing.assert_allclose(logits, normed @ params["embed"]["embedding"].T, rtol=1e-4, atol=1e-5)
    # Factorized (ALBERT): the output goes width -> E through head_proj, then the embedding's transpose.
    factored = _small(tie_embeddings=True, embed_dim=16)
    params, _ = models.init_variables(factored, jax.random.PRNGKey(0), tokens)
    assert params["head_proj"]["kernel"].shape == (factored.width, 16) and "head" not in params
    logits, sown = factored.apply({"params": params}, tokens, mutable=["intermediates"])
    hidden = sown["intermediates"]["hidden_1"][0]
    ln = params["ln_final"]
    mean, var = hidden.mean(-1, keepdims=True), hidden.var(-1, keepdims=True)
    normed = (hidden - mean) / jnp.sqrt(var + 1e-6) * ln["scale"] + ln["bias"]
    np.testing.assert_allclose(logits, normed @ params["head_proj"]["kernel"] @ params["embed"]["embedding"].T,
                               rtol=1e-4, atol=1e-5)


def test_remat_changes_no_value_or_gradient():
    tokens = np.arange(16, dtype=np.int32).reshape(2, 8)
    plain, remat = _small(), _small(remat=True)
    params, _ = models.init_variables(plain, jax.random.PRNGKey(0), tokens)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(
        models.init_variables(remat, jax.random.PRNGKey(0), tokens)[0])

    def loss(model, p):
        return jnp.mean(model.apply({"params": p}, tokens, train=True) ** 2)

    for a, b in zip(jax.tree_util.tree_leaves(jax.grad(lambda p: loss(plain, p))(params)),
                    jax.tree_util.tree_leaves(jax.grad(lambda p: loss(remat, p))(params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
