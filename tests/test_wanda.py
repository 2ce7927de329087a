"""Wanda (Sun et al. 2024): |W| times input-feature norms, each output keeping the same share of its inputs."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import pruning_masks, registry
from compression.transform import InitBatches
from experiments import models

RNG = np.random.default_rng(0)


def test_each_output_keeps_the_same_share_of_its_inputs_on_a_hand_case():
    scores = jnp.array([[1.0, 5.0], [3.0, 2.0], [2.0, 4.0]])  # (in 3, out 2)
    mask = pruning_masks.per_output_mask(scores, 1 / 3)
    assert mask.tolist() == [[False, True], [True, False], [True, True]]
    # The attention output projection (heads, head_dim, width): each of the width outputs ranks its
    # heads * head_dim = 4 inputs together.
    out = jnp.asarray(RNG.normal(size=(2, 2, 3)))
    mask = pruning_masks.per_output_mask(out, 0.5, "block_0/attn/out/kernel")
    assert mask.reshape(4, 3).sum(axis=0).tolist() == [2, 2, 2]


def _mlp_batches(x):
    model = models.build_model({"name": "mlp", "hidden": (2,)}, 2)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), x)
    stats = lambda p, paths, kinds, **kw: models.module_statistics(model, p, paths, kinds, inputs=[x], **kw)
    return params, InitBatches([x], lambda p, b: 0.0, stats)


def test_wanda_scores_weights_by_their_input_norms_and_prunes_within_each_output():
    # Two input features (a 1x2x1 "image" in [0, 255] is divided by 255): rows (255, 0) and (255, 510 -> 2).
    x = np.array([[[[255], [0]]], [[[255], [255]]]], np.uint8)
    params, batches = _mlp_batches(x)
    params["Dense_0"]["kernel"] = jnp.array([[1.0, -3.0], [-2.0, 1.0]])
    t = registry.build("prune", select="Dense_0/kernel", sparsity=0.5, criterion="wanda", scope="output")
    trainable, state = t.init(params, None, batches)
    norms = np.sqrt([1.0 + 1.0, 0.0 + 1.0])  # ||X_0|| = sqrt(2), ||X_1|| = 1
    np.testing.assert_allclose(state["scores"]["Dense_0"]["kernel"],
                               np.abs([[1.0, -3.0], [-2.0, 1.0]]) * norms[:, None], rtol=1e-6)
    # Output 0: |1| sqrt(2) = 1.41 < |-2| * 1 = 2, so input 0 goes; magnitude alone would also drop it.
    # Output 1: |-3| sqrt(2) = 4.24 > |1| * 1, so input 1 goes.
    kernel = np.asarray(trainable["params"]["Dense_0"]["kernel"])
    np.testing.assert_array_equal(kernel, [[0.0, -3.0], [-2.0, 0.0]])


def test_wanda_without_calibration_batches_or_on_a_convolution_is_refused():
    x = np.zeros((2, 28, 28, 1), np.uint8)
    t = registry.build("prune", select="Dense_0/kernel", criterion="wanda", scope="output")
    params, batches = _mlp_batches(np.zeros((2, 1, 2, 1), np.uint8))
    with pytest.raises(ValueError, match="criterion='wanda'.*init_batches > 0"):
        t.init(params, None, None)
    # A convolution's module sees its input channels (20 here) as features; its kernel sums over 5 x 5 x 20.
    conv_params = {"Conv_1": {"kernel": jnp.ones((5, 5, 20, 50))}}
    channels = lambda p, paths, kinds, **kw: iter([(paths[0], {"sq_norm": jnp.ones(20)})])
    conv = registry.build("prune", select="Conv_1/kernel", criterion="wanda", scope="output")
    with pytest.raises(ValueError, match="Conv_1 received 20 input features but Conv_1/kernel .* sums over 500"):
        conv.init(conv_params, None, InitBatches([x], lambda p, b: 0.0, channels))
