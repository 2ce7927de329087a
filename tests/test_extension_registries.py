"""Extending the lab without editing it: a pruning criterion and a quantization scheme registered here,
run through `prune(criterion=...)` and `quantize(scheme=...)`, and the registries' errors."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from compression import pruning_criteria, quantization_schemes, registry
from compression.pruning import prune
from compression.pruning_criteria import Criterion, register_criterion
from compression.quantization import quantize
from compression.quantization_schemes import Scheme, register_scheme
from compression.transform import export_model

T, F = True, False


@register_criterion("toy_largest_first")
@dataclasses.dataclass(frozen=True)
class LargestFirst(Criterion):
    """-|w|: the largest weights go first (magnitude pruning upside down), re-read from the weights."""

    def current(self, weights, scores):
        del scores
        return {p: -jnp.abs(w) for p, w in weights.items()}


@register_criterion("toy_index_order")
@dataclasses.dataclass(frozen=True)
class IndexOrder(Criterion):
    """Scores start at each entry's flat index (the first entries go first) and add the gradients seen."""

    def init_scores(self, weights, key, batches, params):
        return {p: jnp.arange(w.size, dtype=jnp.float32).reshape(w.shape) for p, w in weights.items()}

    def accumulate(self, scores, weights, grads):
        return {p: s + grads[p] for p, s in scores.items()}


@register_scheme("toy_power_of_two")
@dataclasses.dataclass(frozen=True)
class PowerOfTwo(Scheme):
    """sign(w) 2^round(log2 |w|), the exponent clipped to [-max_exponent, max_exponent]; 0 stays 0."""

    max_exponent: int = 4

    def __post_init__(self):
        if isinstance(self.max_exponent, bool) or not isinstance(self.max_exponent, int) or self.max_exponent < 0:
            raise ValueError(f"quantize.max_exponent {self.max_exponent!r} must be an integer >= 0")

    def calibrate(self, w, bits, learned, axis):
        return {"max_exponent": jnp.asarray(self.max_exponent, jnp.float32)}

    def forward(self, w, state, learned):
        bound = state["max_exponent"]
        exponent = jnp.clip(jnp.round(jnp.log2(jnp.abs(w))), -bound, bound)
        power = jnp.ldexp(jnp.ones_like(w), exponent.astype(jnp.int32))  # exact, unlike exp2 on some backends
        return jnp.where(w == 0, jnp.zeros_like(w), jnp.sign(w) * power)


W = jnp.array([[0.1, -5.0],
               [3.0, 0.2]])


# --- a registered pruning criterion ----------------------------------------------------------------

def test_a_registered_criterion_prunes_by_its_own_scores_by_name_and_as_an_instance():
    # -|w| = [[-0.1, -5], [-3, -0.2]]: the two lowest are -5 and -3, so the two largest weights go.
    expected_mask = [[T, F], [F, T]]
    for t in (prune("k", 0.5, criterion="toy_largest_first"),
              registry.build("prune", select="k", sparsity=0.5, criterion="toy_largest_first"),
              prune("k", 0.5, criterion=LargestFirst())):
        trainable, state = t.init({"k": W})
        np.testing.assert_array_equal(state["masks"]["k"], expected_mask)
        np.testing.assert_array_equal(t.apply(trainable, state)["k"], np.float32([[0.1, 0.0], [0.0, 0.2]]))
    assert "toy_largest_first" in pruning_criteria.criteria()


def test_a_registered_criterion_sets_the_initial_scores_and_accumulates_the_gradients():
    w = jnp.array([0.1, -5.0, 3.0, 0.2])
    t = prune("k", {"kind": "one_shot", "sparsity": 0.5, "at_step": 1}, criterion="toy_index_order")
    trainable, state = t.init({"k": w})
    np.testing.assert_array_equal(state["scores"]["k"], [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(state["masks"]["k"], [T, T, T, T])  # sparsity 0 before step 1
    # The step's gradient lifts entry 0 to 10: the scores [10, 1, 2, 3] prune entries 1 and 2.
    trainable, state = t.update(trainable, state, {"params": {"k": jnp.array([10.0, 0.0, 0.0, 0.0])}}, 0)
    np.testing.assert_array_equal(state["scores"]["k"], [10.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(state["masks"]["k"], [T, F, F, T])
    np.testing.assert_array_equal(trainable["params"]["k"], np.float32([0.1, 0.0, 0.0, 0.2]))


def test_an_unknown_criterion_lists_the_registered_ones():
    with pytest.raises(ValueError) as error:
        prune("k", 0.5, criterion="gradient_magic")
    message = str(error.value)
    assert "prune.criterion 'gradient_magic'" in message
    for name in ("magnitude", "random", "snip", "taylor", "movement", "toy_largest_first"):
        assert repr(name) in message


def test_registering_another_criterion_under_a_taken_name_raises_and_the_same_class_again_is_allowed():
    with pytest.raises(ValueError, match="pruning criterion named 'magnitude' is already registered"):
        register_criterion("magnitude")(LargestFirst)
    assert register_criterion("toy_largest_first")(LargestFirst) is LargestFirst
    with pytest.raises(TypeError, match="Criterion subclass"):
        register_criterion("test_not_a_criterion")(dict)


# --- a registered quantization scheme --------------------------------------------------------------

POW2_W = np.array([[0.3, -1.5],
                   [3.0, 0.0],
                   [-20.0, 0.05]], np.float32)
# log2|w| = -1.74, 0.58, 1.58, -inf, 4.32, -4.32 -> exponents -2, 1, 2, (0 stays 0), 4 and -4,
# the last two clipped to +-3 by max_exponent=3.
POW2_Q = np.array([[0.25, -2.0],
                   [4.0, 0.0],
                   [-8.0, 0.125]], np.float32)


def test_a_registered_scheme_quantizes_with_its_own_settings_through_quantize():
    params = {"Dense_0": {"kernel": jnp.asarray(POW2_W), "bias": jnp.ones(2)}}
    for t in (quantize(scheme="toy_power_of_two", max_exponent=3),
              registry.build("quantize", scheme="toy_power_of_two", max_exponent=3),
              quantize(scheme=PowerOfTwo(max_exponent=3))):
        trainable, state = t.init(params)
        out = t.apply(trainable, state)
        np.testing.assert_array_equal(out["Dense_0"]["kernel"], POW2_Q)
        np.testing.assert_array_equal(out["Dense_0"]["bias"], [1.0, 1.0])  # not selected
        trainable, state = t.update(trainable, state, trainable, 0)
        np.testing.assert_array_equal(t.apply(trainable, state)["Dense_0"]["kernel"], POW2_Q)
        # No packed form of its own: the export hands the float values to the configured codec.
        exported, _ = export_model(t, out, state, {})
        np.testing.assert_array_equal(exported["Dense_0"]["kernel"], POW2_Q)
    assert "toy_power_of_two" in quantization_schemes.schemes()


def test_a_scheme_checks_its_own_settings_and_refuses_those_it_does_not_use():
    with pytest.raises(ValueError, match=r"quantize.max_exponent -1 must be an integer >= 0"):
        quantize(scheme="toy_power_of_two", max_exponent=-1)
    with pytest.raises(ValueError) as error:
        quantize(scheme="toy_power_of_two", symmetric=False)
    assert "scheme 'toy_power_of_two'" in str(error.value) and "['symmetric']" in str(error.value)
    # The built-in schemes alike: TWN has no straight-through setting, uniform no threshold.
    for scheme, setting in (("ternary", {"ste": "identity"}), ("uniform", {"threshold": 0.5}),
                            ("binary", {"calibration": "mse"}), ("ttq", {"max_exponent": 3})):
        with pytest.raises(ValueError) as error:
            quantize(scheme=scheme, **setting)
        assert f"scheme {scheme!r}" in str(error.value) and repr(sorted(setting)) in str(error.value)
    with pytest.raises(ValueError, match="set \\['max_exponent'\\] on it"):
        quantize(scheme=PowerOfTwo(), max_exponent=2)


def test_binary_scale_beside_another_scheme_is_still_checked_and_ignored():
    # Kept for the committed error test (tests/test_quantization.py gives uniform binary_scale='max').
    t = quantize(bits=8, binary_scale="mean")
    params = {"Dense_0": {"kernel": jnp.asarray(POW2_W)}}
    np.testing.assert_array_equal(t.apply(*t.init(params))["Dense_0"]["kernel"],
                                  quantize(bits=8).apply(*quantize(bits=8).init(params))["Dense_0"]["kernel"])
    with pytest.raises(ValueError, match="quantize.binary_scale 'max'"):
        quantize(scheme="ternary", binary_scale="max")


def test_an_unknown_scheme_lists_the_registered_ones():
    with pytest.raises(ValueError) as error:
        quantize(scheme="foo")
    message = str(error.value)
    assert "quantize.scheme 'foo'" in message
    for name in ("uniform", "fixed_point", "lsq", "binary", "ternary", "ttq", "toy_power_of_two"):
        assert repr(name) in message


def test_registering_another_scheme_under_a_taken_name_raises_and_the_same_class_again_is_allowed():
    with pytest.raises(ValueError, match="quantization scheme named 'uniform' is already registered"):
        register_scheme("uniform")(PowerOfTwo)
    assert register_scheme("toy_power_of_two")(PowerOfTwo) is PowerOfTwo
    with pytest.raises(TypeError, match="Scheme subclass"):
        register_scheme("test_not_a_scheme")(dict)
