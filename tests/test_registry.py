"""Tests for compression.registry: techniques looked up by name from a config."""
import jax.numpy as jnp
import numpy as np
import pytest

from compression import registry
from compression.transform import Transform, identity


def _scale_by(factor: float) -> Transform:
    """A test technique: the model sees every parameter times `factor`."""

    def init(params, key=None, batches=None):
        return {"params": params}, jnp.asarray(factor)

    def apply(trainable, state):
        return {k: v * state for k, v in trainable["params"].items()}

    def update(trainable, state, grads, step):
        return trainable, state

    return Transform(init, apply, update)


registry.register("test_registry_scale_by")(_scale_by)


def test_build_unknown_name_raises_listing_registered_names():
    with pytest.raises(ValueError) as err:
        registry.build("no_such_technique")
    message = str(err.value)
    assert "'no_such_technique'" in message
    assert "identity" in message and "test_registry_scale_by" in message


def test_build_with_unknown_setting_raises_naming_the_technique():
    with pytest.raises(ValueError, match="technique 'test_registry_scale_by' does not accept"):
        registry.build("test_registry_scale_by", factor=2.0, sparsity=0.5)


def test_build_with_missing_setting_raises_naming_the_technique():
    with pytest.raises(ValueError, match="technique 'test_registry_scale_by'"):
        registry.build("test_registry_scale_by")


def test_build_passes_settings_to_the_factory():
    t = registry.build("test_registry_scale_by", factor=3.0)
    trainable, state = t.init({"w": np.ones(2, np.float32)})
    np.testing.assert_array_equal(t.apply(trainable, state)["w"], [3.0, 3.0])


def test_build_chain_stage_without_technique_raises_with_stage_index():
    with pytest.raises(ValueError, match="stage 1 .* has no 'technique' field"):
        registry.build_chain([{"technique": "identity"}, {"factor": 2.0}])


def test_build_chain_of_identity_stages_leaves_params_unchanged():
    params = {"Dense_0": {"kernel": np.arange(4.0).reshape(2, 2), "bias": np.ones(2)}}
    t = registry.build_chain([{"technique": "identity"}, {"technique": "identity"}])
    trainable, state = t.init(params)
    assert state == {"identity_0": (), "identity_1": ()}
    out = t.apply(trainable, state)
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], params["Dense_0"]["kernel"])
    np.testing.assert_array_equal(out["Dense_0"]["bias"], params["Dense_0"]["bias"])


def test_build_chain_applies_stages_in_order_with_their_settings():
    t = registry.build_chain([{"technique": "test_registry_scale_by", "factor": 2.0},
                              {"technique": "identity"},
                              {"technique": "test_registry_scale_by", "factor": 5.0}])
    trainable, state = t.init({"w": np.ones(1, np.float32)})
    np.testing.assert_array_equal(t.apply(trainable, state)["w"], [10.0])


def test_build_chain_does_not_mutate_the_config_stages():
    stages = [{"technique": "test_registry_scale_by", "factor": 2.0}]
    registry.build_chain(stages)
    assert stages == [{"technique": "test_registry_scale_by", "factor": 2.0}]


def test_build_chain_of_no_stages_is_identity():
    t = registry.build_chain([])
    trainable, state = t.init({"w": np.ones(1)})
    assert state == {}


def test_registering_a_different_factory_under_a_taken_name_raises():
    with pytest.raises(ValueError, match="'identity' is already registered"):
        registry.register("identity")(lambda: identity())


def test_registering_the_same_factory_again_is_allowed():
    assert registry.register("test_registry_scale_by")(_scale_by) is _scale_by
    assert "test_registry_scale_by" in registry.names()
