"""HAT's SuperTransformer (compression/supernet.py): the space, its operators, slicing and masking."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import supernet
from compression.selection import leaves_by_path, nest_paths
from experiments import models

SUPERNET = {"name": "char_transformer", "max_len": 8, "width": 32, "num_layers": 3, "num_heads": 4,
            "head_dim": 8, "ffn_dim": 64, "embed_dim": None, "dropout_rate": 0.0}
SPACE = supernet.SearchSpace(depths=(1, 2, 3), heads=(1, 2, 4), ffn=(16, 32, 64), widths=(16, 32))
VOCAB = 20
TOKENS = (jnp.arange(16).reshape(2, 8) * 7) % VOCAB


def build(config):
    model = models.build_model(config, VOCAB)
    return model, model.init(jax.random.key(0), TOKENS)["params"]


def test_the_largest_architecture_sliced_is_the_supernet_itself():
    model, params = build(SUPERNET)
    arch = SPACE.largest()
    sliced = supernet.slice_params(params, arch)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), sliced, params))
    full = model.apply({"params": params}, TOKENS)
    standalone = models.build_model(arch.model_config(SUPERNET), VOCAB)
    assert jnp.array_equal(standalone.apply({"params": sliced}, TOKENS), full)


def masked(params, arch):
    masks = supernet.supernet_masks(params, arch)
    return nest_paths({p: w * masks[p] for p, w in leaves_by_path(params).items()})


@pytest.mark.parametrize("seed", range(5))
def test_a_sliced_sub_model_predicts_as_the_supernet_masked_at_its_width(seed):
    _, params = build(SUPERNET)
    arch = SPACE.sample(np.random.default_rng(seed))
    standalone = models.build_model(arch.model_config(SUPERNET), VOCAB)
    sliced = supernet.slice_params(params, arch)
    expected = standalone.apply({"params": sliced}, TOKENS)
    # The width bucket: every layer at the supernet's depth and maxima, cut to arch.width; then the masks.
    bucket = dataclasses.replace(arch, heads=(4,) * 3, ffn=(64,) * 3)
    at_width = supernet.slice_params(params, bucket)
    bucket_model = models.build_model(bucket.model_config(SUPERNET), VOCAB)
    got = bucket_model.apply({"params": masked(at_width, arch)}, TOKENS)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_sampling_mutation_and_crossover_stay_in_the_space_and_follow_the_seed():
    rng = np.random.default_rng(0)
    archs = [SPACE.sample(rng) for _ in range(200)]
    assert all(SPACE.contains(a) for a in archs)
    assert {a.depth for a in archs} == {1, 2, 3} and {a.width for a in archs} == {16, 32}
    for a, b in zip(archs, archs[1:]):
        assert SPACE.contains(SPACE.mutate(a, rng, 0.5)) and SPACE.contains(SPACE.crossover(a, b, rng))
    again = [SPACE.sample(np.random.default_rng(0)) for _ in range(1)]
    assert again[0] == archs[0]
    assert SPACE.mutate(archs[0], np.random.default_rng(1), 0.0) == archs[0]
    assert SPACE.smallest() == supernet.Architecture(16, (1,), (16,))


def test_spaces_the_supernet_cannot_hold_and_architectures_outside_are_refused():
    with pytest.raises(ValueError, match="heads up to 8 but the supernet's num_heads is 4.*enlarge config.model"):
        supernet.SearchSpace.from_config({"depths": [1], "heads": [8], "ffn": [16], "widths": [16]}, SUPERNET)
    with pytest.raises(ValueError, match="at most 3 width buckets"):
        supernet.SearchSpace((1,), (1,), (16,), (8, 16, 24, 32))
    with pytest.raises(ValueError, match="search space ffn must be a non-empty list of positive integers"):
        supernet.SearchSpace((1,), (1,), (), (16,))
    with pytest.raises(ValueError, match="unknown field"):
        supernet.SearchSpace.from_config({"depths": [1], "heads": [1], "ffn": [16], "widths": [16], "x": 1},
                                         SUPERNET)
    with pytest.raises(ValueError, match="not in the search space"):
        SPACE.check(supernet.Architecture(24, (1,), (16,)))
