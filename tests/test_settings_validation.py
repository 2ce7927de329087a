"""Every numeric setting of a technique is range-checked when it is built, through the public path.

A setting that would train nonsense and exit 0 (N:M with n = 0 pruning every
weight, a NaN threshold, a budget no allocation can meet) is a ValueError
from `registry.build` / `build_chain` / `losses.build_loss` whose message
names the setting; the edge values that still mean something build. The
data-aware techniques refuse no batches and an empty list alike, with one
message (`compression.transform.require_batches`).
"""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from compression import losses, registry
from compression.settings import require_float, require_int
from compression.transform import InitBatches

NAN, INF = float("nan"), float("inf")
GROUP = {"name": "Dense_0_neurons", "members": [["Dense_0/kernel", 1], ["Dense_0/bias", 0]]}
LAYERS = ["block_0", "block_1"]
POLY = {"kind": "polynomial", "final_sparsity": 0.9, "begin_step": 0, "end_step": 10}


def _params():
    return {"Dense_0": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}


def _loss(params, batch):
    return jnp.sum(params["Dense_0"]["kernel"] * batch)


# (technique, bad settings, a regex the message must contain: it names the setting)
BAD = [
    # prune: the sparsity (a number or a schedule), N:M, the re-scoring period, the seed
    ("prune", {"sparsity": 1.0}, r"prune\.sparsity must be in \[0, 1\)"),
    ("prune", {"sparsity": NAN}, r"prune\.sparsity must be in \[0, 1\).*nan"),
    ("prune", {"sparsity": INF}, r"prune\.sparsity must be in \[0, 1\).*inf"),
    ("prune", {"sparsity": True}, r"prune\.sparsity must be a number in \[0, 1\) or a schedule"),
    ("prune", {"sparsity": "0.5"}, r"prune\.sparsity must be a number in \[0, 1\) or a schedule"),
    ("prune", {"sparsity": dict(POLY, end_step=0)},
     r"prune\.sparsity schedule 'polynomial': end_step must be > begin_step"),
    ("prune", {"sparsity": dict(POLY, begin_step=-1)},
     r"prune\.sparsity schedule 'polynomial': begin_step must be >= 0"),
    ("prune", {"sparsity": dict(POLY, frequency=0)}, r"prune\.sparsity schedule 'polynomial': frequency must be >= 1"),
    ("prune", {"sparsity": dict(POLY, power=INF)}, r"power must be a positive number, got inf"),
    ("prune", {"sparsity": dict(POLY, final_sparsity=NAN)}, r"final_sparsity must be in \[0, 1\)"),
    ("prune", {"sparsity": {"kind": "one_shot", "sparsity": 0.5, "at_step": -1}}, r"at_step must be >= 0, got -1"),
    ("prune", {"sparsity": {"kind": "one_shot", "sparsity": 0.5, "at_step": 1.5}}, r"at_step must be an integer"),
    ("prune", {"sparsity": {"kind": "iterative", "sparsities": [0.5, 0.4], "steps": [0, 10]}},
     r"prune\.sparsity schedule 'iterative': sparsities must be non-decreasing"),
    ("prune", {"scope": "nm", "n": 0, "m": 4}, r"prune\.n must be an integer >= 1 \(got 0\)"),
    ("prune", {"scope": "nm", "n": -1, "m": 4}, r"prune\.n must be an integer >= 1 \(got -1\)"),
    ("prune", {"scope": "nm", "n": 4, "m": 4}, r"prune\.n must be less than prune\.m \(got n=4, m=4\)"),
    ("prune", {"scope": "nm", "n": 1, "m": 1}, r"prune\.m must be an integer >= 2 \(got 1\)"),
    ("prune", {"scope": "nm", "n": 2.0, "m": 4}, r"prune\.n must be an integer >= 1 \(got 2\.0\)"),
    ("prune", {"scope": "nm", "n": 2, "m": True}, r"prune\.m must be an integer >= 2 \(got True\)"),
    ("prune", {"scope": "nm", "n": 2, "m": 4, "sparsity": 0.0}, r"prune\.sparsity is 0 at every step"),
    ("prune", {"scope": "layer", "n": 2, "m": 4}, r"prune\.n and prune\.m are read only with scope='nm'"),
    ("prune", {"update_every": 0}, r"prune\.update_every must be an integer >= 1 \(got 0\)"),
    ("prune", {"update_every": 1.5}, r"prune\.update_every must be an integer >= 1 \(got 1\.5\)"),
    ("prune", {"seed": 0.5}, r"prune\.seed must be an integer \(got 0\.5\)"),
    # structured_prune
    ("structured_prune", {"groups": [GROUP], "sparsity": NAN}, r"structured_prune\.sparsity must be in \[0, 1\)"),
    ("structured_prune", {"groups": [GROUP], "sparsity": dict(POLY, end_step=0)},
     r"structured_prune\.sparsity schedule 'polynomial': end_step"),
    ("structured_prune", {"groups": [GROUP], "update_every": 0},
     r"structured_prune\.update_every must be an integer >= 1 \(got 0\)"),
    ("structured_prune", {"groups": [GROUP], "update_every": True},
     r"structured_prune\.update_every must be an integer >= 1 \(got True\)"),
    ("structured_prune", {"groups": [GROUP], "multiple_of": 2.0},
     r"structured_prune\.multiple_of must be an integer >= 1 \(got 2\.0\)"),
    ("structured_prune", {"groups": [GROUP], "norm": 0}, r"structured_prune\.norm 0"),
    ("structured_prune", {"groups": [dict(GROUP, config_field=["hidden", -1])]},
     r"config_field \['hidden', -1\].*index >= 0"),
    ("structured_prune", {"groups": [dict(GROUP, members=[["Dense_0/kernel", 1.0]])]},
     r"group 'Dense_0_neurons'.*integer axis"),
    # layer_drop
    ("layer_drop", {"layers": LAYERS, "drop": {"policy": "top", "count": -1}},
     r"layer_drop\.drop count -1 must be an integer in \[0, 2\]"),
    ("layer_drop", {"layers": LAYERS, "drop": {"policy": "top", "count": 1.0}}, r"layer_drop\.drop count 1\.0"),
    ("layer_drop", {"layers": LAYERS, "drop": [0.5]}, r"layer_drop\.drop entry 0\.5 is not an integer"),
    ("layer_drop", {"layers": LAYERS, "drop": [0, 0]}, r"layer_drop\.drop \[0, 0\] names a layer twice"),
    # quantize: every scheme's settings
    ("quantize", {"bits": 2.5}, r"quantize\.bits: bit-width 2\.5 is not allowed.*1 to 16"),
    ("quantize", {"bits": True}, r"quantize\.bits: bit-width True"),
    ("quantize", {"bits": [["Dense_0/kernel"]]}, r"quantize\.bits rule \['Dense_0/kernel'\] must be a \(path regex"),
    ("quantize", {"recalibrate_every": 0.5}, r"quantize\.recalibrate_every must be an integer >= 0 \(got 0\.5\)"),
    ("quantize", {"channel_axis": 1.0}, r"quantize\.channel_axis must be an integer \(got 1\.0\)"),
    ("quantize", {"bits": "auto", "budget_bits_per_weight": 1.5},
     r"quantize\.budget_bits_per_weight must be a finite number >= 2 \(got 1\.5\).*narrowest"),
    ("quantize", {"bits": "auto", "budget_bits_per_weight": NAN}, r"quantize\.budget_bits_per_weight .*got nan"),
    ("quantize", {"bits": "auto", "budget_bits_per_weight": "4"}, r"quantize\.budget_bits_per_weight .*got '4'"),
    ("quantize", {"bits": 8, "budget_bits_per_weight": 4.0},
     r"quantize\.budget_bits_per_weight is read only with bits='auto'"),
    ("quantize", {"bits": "auto", "budget_bits_per_weight": 4.0, "candidate_bits": []},
     r"quantize\.candidate_bits must be a non-empty list"),
    ("quantize", {"candidate_bits": [8, 0]}, r"quantize\.candidate_bits: bit-width 0"),
    # the uniform scheme
    ("quantize", {"percentile": NAN}, r"quantize\.percentile must be a finite number in \(50, 100\] \(got nan\)"),
    ("quantize", {"percentile": 100.5}, r"quantize\.percentile must be a finite number in \(50, 100\]"),
    ("quantize", {"percentile": 50}, r"quantize\.percentile must be a finite number in \(50, 100\] \(got 50\)"),
    ("quantize", {"mse_grid": 0}, r"quantize\.mse_grid must be an integer >= 1 \(got 0\)"),
    ("quantize", {"mse_grid": 10.0}, r"quantize\.mse_grid must be an integer >= 1 \(got 10\.0\)"),
    # fixed point, TWN, TTQ
    ("quantize", {"scheme": "fixed_point", "integer_bits": 1.5, "fraction_bits": 5.5},
     r"fixed_point.*integer_bits must be an integer \(got 1\.5\)"),
    ("quantize", {"scheme": "fixed_point", "integer_bits": -1, "fraction_bits": 8}, r"Q-1\.8"),
    ("quantize", {"scheme": "ternary", "threshold": NAN},
     r"quantize\.threshold must be a finite number >= 0 \(got nan\)"),
    ("quantize", {"scheme": "ternary", "threshold": -0.1}, r"quantize\.threshold must be a finite number >= 0"),
    ("quantize", {"scheme": "ternary", "threshold": INF}, r"quantize\.threshold .*got inf"),
    ("quantize", {"scheme": "ttq", "threshold": 1.0}, r"quantize\.threshold must be a finite number in \[0, 1\)"),
    ("quantize", {"scheme": "ttq", "threshold": NAN}, r"quantize\.threshold must be a finite number in \[0, 1\)"),
    # quantize_activations
    ("quantize_activations", {"bits": True}, r"quantize_activations\.bits: bit-width True"),
    ("quantize_activations", {"percentile": 50.0},
     r"quantize_activations\.percentile must be a finite number in \(50, 100\] \(got 50\.0\)"),
    ("quantize_activations", {"percentile": NAN}, r"quantize_activations\.percentile .*got nan"),
    ("quantize_activations", {"mse_grid": 0}, r"quantize_activations\.mse_grid must be an integer >= 1 \(got 0\)"),
    ("quantize_activations", {"initial_alpha": 6.0},
     r"quantize_activations\.initial_alpha is read only with scheme='pact'"),
    ("quantize_activations", {"scheme": "pact", "initial_alpha": 0.0},
     r"quantize_activations\.initial_alpha must be a finite number > 0 \(got 0\.0\)"),
    ("quantize_activations", {"scheme": "pact", "initial_alpha": -1.0}, r"quantize_activations\.initial_alpha .*> 0"),
    ("quantize_activations", {"scheme": "pact", "initial_alpha": INF},
     r"quantize_activations\.initial_alpha .*got inf"),
]


@pytest.mark.parametrize("technique, settings, message", BAD,
                         ids=[f"{t}-{'-'.join(map(str, s))}-{i}" for i, (t, s, _) in enumerate(BAD)])
def test_a_bad_setting_is_refused_at_build_naming_the_setting(technique, settings, message):
    with pytest.raises(ValueError, match=message):
        registry.build(technique, **settings)


def test_build_chain_refuses_a_bad_stage_before_any_init():
    stages = [{"technique": "prune", "sparsity": 0.5},
              {"technique": "prune", "name": "nm", "scope": "nm", "n": 0, "m": 4}]
    with pytest.raises(ValueError, match=r"prune\.n must be an integer >= 1 \(got 0\)"):
        registry.build_chain(stages)


# (technique, edge settings that still mean something): each builds and initializes
GOOD = [
    ("prune", {"sparsity": 0.0}),  # a dense control
    ("prune", {"scope": "nm", "n": 2, "m": 4}),
    ("prune", {"scope": "nm", "n": 1, "m": 2}),
    ("prune", {"scope": "nm", "n": 3, "m": 4, "sparsity": {"kind": "one_shot", "sparsity": 0.5, "at_step": 10}}),
    ("prune", {"sparsity": dict(POLY, initial_sparsity=0.0, frequency=100, power=1)}),
    ("prune", {"sparsity": {"kind": "iterative", "sparsities": [0.0, 0.5], "steps": [0, 1]}}),
    ("structured_prune", {"groups": [GROUP], "sparsity": 0.0, "multiple_of": 1, "update_every": 1}),
    ("quantize", {"scheme": "binary"}),  # bits fixed at 1
    ("quantize", {"scheme": "binary", "bits": 1}),
    ("quantize", {"bits": 1, "symmetric": False}),
    ("quantize", {"bits": 16, "percentile": 100, "calibration": "percentile", "recalibrate_every": 0}),
    ("quantize", {"bits": 2, "mse_grid": 1, "calibration": "mse", "channel_axis": 0}),
    ("quantize", {"scheme": "fixed_point", "bits": 8, "integer_bits": 0, "fraction_bits": 7}),
    ("quantize", {"scheme": "ternary", "threshold": 0.0}),
    ("quantize", {"scheme": "ttq", "threshold": 0.0}),
    ("quantize_activations", {"scheme": "pact", "initial_alpha": 1e-3, "bits": 1}),  # PACT needs no batch
]


@pytest.mark.parametrize("technique, settings", GOOD,
                         ids=[f"{t}-{'-'.join(map(str, s))}-{i}" for i, (t, s) in enumerate(GOOD)])
def test_edge_values_that_mean_something_build_and_initialize(technique, settings):
    t = registry.build(technique, **settings)
    trainable, state = t.init(_params())
    assert t.apply(trainable, state)["Dense_0"]["kernel"].shape == (4, 3)


@pytest.mark.parametrize("drop", [[], {"policy": "top", "count": 0}, [1], {"policy": "bottom", "count": 1}])
def test_layer_drop_may_drop_no_layer_or_all_but_one(drop):
    registry.build("layer_drop", layers=LAYERS, drop=drop)


def test_auto_bits_accept_a_budget_equal_to_the_narrowest_candidate():
    registry.build("quantize", bits="auto", budget_bits_per_weight=2, candidate_bits=[4, 2])


def test_a_channel_axis_out_of_range_is_refused_at_init_naming_the_weight():
    t = registry.build("quantize", channel_axis=2)
    with pytest.raises(ValueError, match=r"quantize\.channel_axis 2 is out of range for Dense_0/kernel of shape"):
        t.init(_params())


# ------------------------------------------------------------------ loss terms

@pytest.mark.parametrize("specs, message", [
    ([{"term": "cross_entropy", "weight": NAN}], r"config\.loss\[0\] \(cross_entropy\) weight must be a finite number"),
    ([{"term": "cross_entropy", "weight": INF}], r"weight must be a finite number >= 0 \(got inf\)"),
    ([{"term": "cross_entropy", "weight": True}], r"weight must be a finite number >= 0 \(got True\)"),
    ([{"term": "cross_entropy", "weight": "1"}], r"weight must be a finite number >= 0 \(got '1'\)"),
    ([{"term": "cross_entropy", "weight": 0}], r"all have weight 0, so the loss would train nothing"),
    ([{"term": "cross_entropy", "weight": 0.0}, {"term": "l2", "weight": 0}], r"all have weight 0"),
    ([{"term": "cross_entropy", "label_smoothing": NAN}], r"cross_entropy\.label_smoothing .*got nan"),
    ([{"term": "cross_entropy", "label_smoothing": -0.1}],
     r"cross_entropy\.label_smoothing must be a finite number in \[0, 1\) \(got -0\.1\)"),
    ([{"term": "cross_entropy", "label_smoothing": "0.1"}], r"cross_entropy\.label_smoothing .*got '0\.1'"),
])
def test_a_bad_loss_setting_is_refused_naming_it(specs, message):
    with pytest.raises(ValueError, match=message):
        losses.build_loss(specs)


def test_loss_edge_values_build():
    losses.build_loss([{"term": "cross_entropy", "label_smoothing": 0.0}])
    losses.build_loss([{"term": "cross_entropy", "label_smoothing": 0.99, "weight": 1e-9}])
    losses.build_loss([{"term": "cross_entropy"}, {"term": "l2", "weight": 0}])  # a logged-only term


# ------------------------------------------------------------------ zero calibration batches

DATA_AWARE = [
    ("prune", {"criterion": "snip"}, "prune with criterion='snip'"),
    ("quantize_activations", {}, "quantize_activations (uniform)"),
    ("quantize_activations", {"scheme": "lsq"}, "quantize_activations (lsq)"),
    ("quantize", {"bits": "auto", "budget_bits_per_weight": 4.0}, "quantize.bits='auto'"),
]


def _no_batches(empty: bool):
    statistics = lambda params, paths, kinds: {p: {"inputs": jnp.ones((2, 4))} for p in paths}  # noqa: E731
    return InitBatches([], _loss, statistics) if empty else None


@pytest.mark.parametrize("technique, settings, who", DATA_AWARE, ids=[w for _, _, w in DATA_AWARE])
def test_no_batches_and_an_empty_list_get_the_same_message(technique, settings, who):
    t = registry.build(technique, **settings)
    messages = []
    for empty in (False, True):
        with pytest.raises(ValueError, match="needs at least one batch") as error:
            t.init(_params(), None, _no_batches(empty))
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith(who) and "config.compression.init_batches > 0" in messages[0]


def test_an_empty_list_of_batches_reaches_a_data_aware_stage_of_a_chain():
    t = registry.build_chain([{"technique": "prune", "criterion": "snip"}, {"technique": "quantize", "bits": 8}])
    with pytest.raises(ValueError, match=r"prune with criterion='snip' needs at least one batch"):
        t.init(_params(), None, InitBatches([], _loss))


def test_one_batch_is_enough():
    t = registry.build("prune", criterion="snip", sparsity=0.5)
    _, state = t.init(_params(), None, InitBatches([jnp.arange(12.0).reshape(4, 3)], _loss))
    assert int(jnp.sum(state["masks"]["Dense_0"]["kernel"])) == 6


# ------------------------------------------------------------------ the helpers' one format

def test_the_helpers_refuse_bools_non_finite_floats_and_values_out_of_range_in_one_format():
    assert require_int("x", 3, low=1, high=3) == 3 and require_float("y", 0, low=0, high=1, high_open=True) == 0.0
    assert require_int("x", np.int64(2), low=1) == 2 and require_float("y", np.float32(0.5), low=0) == 0.5
    for call, message in [
        (lambda: require_int("t.n", np.True_, low=1), r"^t\.n must be an integer >= 1 \(got np\.True_\)$"),
        (lambda: require_int("t.n", True, low=1), r"^t\.n must be an integer >= 1 \(got True\)$"),
        (lambda: require_int("t.n", 4, low=1, high=3, fix="fewer"),
         r"^t\.n must be an integer in \[1, 3\] \(got 4\); fewer$"),
        (lambda: require_float("t.s", math.nan, low=0, high=1, high_open=True),
         r"^t\.s must be a finite number in \[0, 1\) \(got nan\)$"),
        (lambda: require_float("t.a", 0, low=0, low_open=True), r"^t\.a must be a finite number > 0 \(got 0\)$"),
        (lambda: require_float("t.a", -math.inf), r"^t\.a must be a finite number \(got -inf\)$"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


def test_mixed_precision_refuses_a_non_finite_budget_or_sensitivity():
    from compression.mixed_precision import allocate_bits

    with pytest.raises(ValueError, match=r"budget_bits_per_weight must be a finite number > 0 \(got nan\)"):
        allocate_bits({"a": {8: 0.0, 4: 0.1}}, {"a": 10}, NAN)
    with pytest.raises(ValueError, match=r"sensitivity of a .*\{8: nan, 4: 0\.1\}.* not finite"):
        allocate_bits({"a": {8: NAN, 4: 0.1}}, {"a": 10}, 4.0)
