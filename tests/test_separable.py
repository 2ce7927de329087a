"""Depthwise-separable convolutions: the MobileNet-style model and the split of a trained conv (compression/separable.py)."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import accounting
from compression import separable as sep
from experiments import models, train
from tests.helpers import tiny_config

RNG = np.random.default_rng(0)


def test_an_exactly_separable_kernel_is_split_exactly_and_others_lose_their_discarded_energy():
    dw, pw = RNG.normal(size=(3, 3, 1, 4)), RNG.normal(size=(1, 1, 4, 5))
    kernel = sep.join(dw, pw)
    d2, p2 = sep.rank1_split(kernel)
    np.testing.assert_allclose(sep.join(d2, p2), kernel, atol=1e-12)
    assert d2.shape == (3, 3, 1, 4) and p2.shape == (1, 1, 4, 5)
    w = RNG.normal(size=(3, 3, 2, 5))
    discarded = sum(np.sum(np.linalg.svd(w[:, :, c, :].reshape(9, 5), compute_uv=False)[1:] ** 2) for c in range(2))
    assert sep.split_error(w) == pytest.approx(discarded, rel=1e-10)


def test_a_kernel_that_cannot_be_split_is_refused():
    with pytest.raises(ValueError, match=r"needs a K x K convolution kernel .* got shape \(1, 1, 4, 5\)"):
        sep.rank1_split(np.ones((1, 1, 4, 5)))
    with pytest.raises(ValueError, match="got shape"):
        sep.rank1_split(np.ones((4, 5)))


@pytest.mark.parametrize("size, stride", [(9, 1), (9, 2), (8, 2), (7, 3)])
def test_the_depthwise_conv_is_the_grouped_convolution_with_its_parameter_values_and_flops(size, stride):
    # Same-padding's split (more after than before on an odd total) and strided windows, against lax.
    x = jnp.asarray(RNG.normal(size=(2, size, size, 4)), jnp.float32)
    grouped = nn.Conv(4, (3, 3), (stride, stride), padding="SAME", feature_group_count=4, use_bias=False)
    ours = models.DepthwiseConv(3, stride)
    params = grouped.init(jax.random.PRNGKey(1), x)
    np.testing.assert_array_equal(ours.init(jax.random.PRNGKey(1), x)["params"]["kernel"], params["params"]["kernel"])
    np.testing.assert_allclose(ours.apply(params, x), grouped.apply(params, x), atol=1e-5)
    loss = lambda m: jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree_util.tree_leaves(loss(ours)), jax.tree_util.tree_leaves(loss(grouped))):
        np.testing.assert_allclose(a, b, atol=1e-4)
    out = -(-size // stride)
    flops = accounting.count_flops(lambda p, x: ours.apply(p, x), params, x)
    assert flops == accounting.count_flops(lambda p, x: grouped.apply(p, x), params, x) == 2 * 2 * out * out * 4 * 9


def _mobilenet(blocks):
    return models.build_model({"name": "mobilenet_cnn", "features": [4, 8, 8], "strides": [1, 2, 1],
                               "blocks": blocks}, 10)


def test_separable_blocks_hold_the_depthwise_and_pointwise_weights_only():
    x = np.zeros((1, 28, 28, 1), np.uint8)
    shapes = lambda m: jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), x))["params"]
    count = lambda m: sum(leaf.size for k, v in shapes(m).items() if k.startswith("conv_")
                          for leaf in jax.tree_util.tree_leaves(v))
    # conv_0 (full): 9*1*4 + 4; then full 9*4*8 + 8 and 9*8*8 + 8, or separable 9*4 + (4*8 + 8) and 9*8 + (8*8 + 8).
    assert count(_mobilenet("full")) == 40 + 296 + 584
    assert count(_mobilenet("separable")) == 40 + 36 + 40 + 72 + 72
    with pytest.raises(ValueError, match="block 0 'full'"):
        shapes(_mobilenet(["separable", "full", "full"]))


def test_a_split_conv_between_pruning_and_quantization_exports_the_factored_model_predicting_as_before(tmp_path):
    # Split conv_1 and conv_2; a stage before the split acts on what it stores (the chain's algebra), so
    # prune takes half of conv_2's pointwise weights; then quantize the head. The export runs the pairs
    # (blocks "factored") and the driver checks its predictions.
    config = tiny_config(num_steps=0, checkpoint_every=100)
    config.model = {"name": "mobilenet_cnn", "features": [4, 8, 8], "strides": [1, 2, 1]}
    config.compression.stages = [{"technique": "prune", "select": "conv_2/kernel/pointwise", "sparsity": 0.5},
                                 {"technique": "separable", "select": "conv_[12]/kernel"},
                                 {"technique": "quantize", "select": "head/kernel", "bits": 4}]
    report = train.export_run(train.build_run(config), str(tmp_path))[1]
    assert report["export_max_abs_logit_diff"] <= 1e-4
    header_model = train.read_export(str(tmp_path / "export" / "params.safetensors"))[0]
    assert header_model["blocks"] == ["full", "factored", "factored"]
    assert report["params_exported"] < report["params_total"]
