"""Quantization: the quantize and quantize_activations transforms, mixed precision, chains, the driver.

Small kernels are chosen so every expected value is exact in float32 (scales
that are powers of two, no round-half ties) and can be checked by hand.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import export
from compression.activation_quantization import quantize_activations
from compression.intercept import INTERCEPT_KEY, run_hooks, split_params
from compression.mixed_precision import allocate_bits
from compression.pruning import prune
from compression.quantization import quantize
from compression.transform import InitBatches, chain
from experiments import models, train
from tests.helpers import tiny_config

# Per output channel (column) max|w| = 127/64, 127/128, 127/32: 8-bit symmetric scales 1/64, 1/128, 1/32.
KERNEL = np.array([[1.984375, 0.3, -3.96875],
                   [-0.1, -0.9921875, 1.0],
                   [0.05, 0.01, 0.05]], np.float32)
# round(w / scale) * scale per column, worked out by hand:
# col 0: 1.984375 -> 127/64, -0.1*64 = -6.4 -> -6/64, 0.05*64 = 3.2 -> 3/64
# col 1: 0.3*128 = 38.4 -> 38/128, -127/128, 0.01*128 = 1.28 -> 1/128
# col 2: -127/32, 1.0*32 = 32 -> 1.0, 0.05*32 = 1.6 -> 2/32
KERNEL_Q8 = np.array([[1.984375, 38 / 128, -3.96875],
                      [-6 / 64, -0.9921875, 1.0],
                      [3 / 64, 1 / 128, 2 / 32]], np.float32)
BIAS = np.array([0.5, -0.25, 0.125], np.float32)


def _params(kernel=KERNEL, bias=None):
    kernel = np.asarray(kernel, np.float32)
    bias = np.zeros(kernel.shape[-1], np.float32) if bias is None else bias
    return {"Dense_0": {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}}


def _two_layer_params():
    return {"Dense_0": {"kernel": jnp.array([[0.5, -1.0], [0.2, 0.6]]), "bias": jnp.zeros(2)},
            "Dense_1": {"kernel": jnp.array([[0.3], [-0.7]]), "bias": jnp.zeros(1)}}


def _linear_loss(t, cotangent):
    """loss(trainable) = sum(cotangent * the kernel the model sees): its gradient is the VJP of apply."""

    def loss(trainable, state):
        return jnp.sum(cotangent * t.apply(trainable, state)["Dense_0"]["kernel"])

    return loss


# --- uniform weight quantization ---------------------------------------------------------------

def test_apply_quantizes_each_output_channel_symmetrically_to_8_bits():
    t = quantize()
    trainable, state = t.init(_params(bias=BIAS))
    out = t.apply(trainable, state)
    np.testing.assert_array_equal(out["Dense_0"]["kernel"], KERNEL_Q8)
    np.testing.assert_array_equal(out["Dense_0"]["bias"], BIAS)  # '.*kernel' leaves the bias alone
    s = state["Dense_0/kernel"]
    np.testing.assert_array_equal(s["scale"], [[1 / 64, 1 / 128, 1 / 32]])
    np.testing.assert_array_equal(s["zero_point"], [[0.0, 0.0, 0.0]])
    assert (int(s["bits"]), float(s["qmin"]), float(s["qmax"])) == (8, -127.0, 127.0)
    # One scale for the whole tensor (1/32) rounds the small columns away: per-channel matters here.
    per_tensor = quantize(per_channel=False)
    out_tensor = per_tensor.apply(*per_tensor.init(_params()))["Dense_0"]["kernel"]
    np.testing.assert_array_equal(out_tensor[:, 1], np.float32([0.3125, -1.0, 0.0]))


def test_trainable_keeps_the_float_shadow_weights():
    t = quantize(bits=2)
    trainable, state = t.init(_params(bias=BIAS))
    np.testing.assert_array_equal(trainable["params"]["Dense_0"]["kernel"], KERNEL)
    np.testing.assert_array_equal(trainable["params"]["Dense_0"]["bias"], BIAS)
    assert "scales" not in trainable  # uniform has no learned scales
    assert not np.array_equal(t.apply(trainable, state)["Dense_0"]["kernel"], KERNEL)


def test_gradient_through_apply_is_the_clipped_straight_through_mask():
    # The 90th / 10th percentiles of these ten weights are 1.9 and -0.95, so the symmetric range is
    # [-1.9, 1.9]: the outliers -5 and 10 are clipped and get no gradient; the rest pass g unchanged.
    w = np.array([-5.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 10.0], np.float32).reshape(10, 1)
    t = quantize(calibration="percentile", percentile=90.0)
    trainable, state = t.init(_params(w))
    np.testing.assert_allclose(state["Dense_0/kernel"]["scale"], [[1.9 / 127]], rtol=1e-5)
    g = np.arange(1.0, 11.0, dtype=np.float32).reshape(10, 1)
    grads = jax.grad(_linear_loss(t, g))(trainable, state)
    inside = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 0], np.float32).reshape(10, 1)
    np.testing.assert_array_equal(grads["params"]["Dense_0"]["kernel"], g * inside)
    # ste='identity' passes the gradient everywhere, outliers included.
    t = quantize(calibration="percentile", percentile=90.0, ste="identity")
    trainable, state = t.init(_params(w))
    np.testing.assert_array_equal(jax.grad(_linear_loss(t, g))(trainable, state)["params"]["Dense_0"]["kernel"], g)


def _scales_over_steps(recalibrate_every):
    w = np.array([[0.5, -2.0], [-1.5, 1.0]], np.float32)
    t = quantize(recalibrate_every=recalibrate_every)
    trainable, state = t.init(_params(w))
    update = jax.jit(t.update)
    seen = []
    for step in range(7):
        trainable = {"params": _params(w * (step + 2))}  # an optimizer step that grew every weight
        trainable, state = update(trainable, state, trainable, jnp.int32(step))
        seen.append(np.asarray(state["Dense_0/kernel"]["scale"]))
    return w, seen


def test_update_recalibrates_the_scale_to_the_new_max_over_qmax_every_step():
    w, seen = _scales_over_steps(1)
    for step, scale in enumerate(seen):
        np.testing.assert_allclose(scale, np.max(np.abs(w * (step + 2)), axis=0, keepdims=True) / 127, rtol=1e-6)


def test_recalibrate_every_3_changes_the_scale_only_at_steps_divisible_by_3():
    w, seen = _scales_over_steps(3)
    initial = np.max(np.abs(w), axis=0, keepdims=True) / 127
    expected, current = [], initial
    for step in range(7):
        if step % 3 == 0:
            current = np.max(np.abs(w * (step + 2)), axis=0, keepdims=True) / 127
        expected.append(current)
    np.testing.assert_allclose(np.stack(seen), np.stack(expected), rtol=1e-6)
    assert not np.allclose(seen[0], initial) and np.array_equal(seen[1], seen[0])


def test_recalibrate_every_0_keeps_the_init_calibration():
    w, seen = _scales_over_steps(0)
    for scale in seen:
        np.testing.assert_allclose(scale, np.max(np.abs(w), axis=0, keepdims=True) / 127, rtol=1e-6)


# --- learned scales: LSQ and TTQ ---------------------------------------------------------------

def test_lsq_step_lives_in_the_trainable_gets_a_gradient_and_is_mirrored_into_the_state():
    w = np.array([[0.3], [-2.6], [20.0]], np.float32)
    t = quantize(scheme="lsq", bits=4, per_channel=False)  # qmax = 7
    trainable, state = t.init(_params(w))
    step = trainable["scales"]["Dense_0"]["kernel"]["step"]
    np.testing.assert_allclose(step, [[2 * (22.9 / 3) / np.sqrt(7)]], rtol=1e-6)  # 2 mean|w| / sqrt(Qp)
    np.testing.assert_allclose(state["Dense_0/kernel"]["scale"], step)

    trainable["scales"]["Dense_0"]["kernel"]["step"] = jnp.ones((1, 1))
    np.testing.assert_array_equal(t.apply(trainable, state)["Dense_0"]["kernel"], [[0.0], [-3.0], [7.0]])
    grads = jax.grad(_linear_loss(t, np.ones((3, 1), np.float32)))(trainable, state)
    # d/ds: round(w/s) - w/s inside the range, qmax where clipped: -0.3 - 0.4 + 7, scaled by 1/sqrt(N Qp).
    np.testing.assert_allclose(grads["scales"]["Dense_0"]["kernel"]["step"], [[6.3 / np.sqrt(21)]],
                               rtol=1e-5)
    np.testing.assert_array_equal(grads["params"]["Dense_0"]["kernel"], [[1.0], [1.0], [0.0]])

    trainable["scales"]["Dense_0"]["kernel"]["step"] = jnp.full((1, 1), 1.25)
    trainable, state = t.update(trainable, state, grads, 5)
    np.testing.assert_array_equal(state["Dense_0/kernel"]["scale"], [[1.25]])


def test_ttq_scales_get_the_sum_of_the_gradient_over_their_sets():
    w = np.array([[1.0, -2.0],
                  [-0.5, 0.05],
                  [0.02, 4.0],
                  [-3.0, -0.1]], np.float32)
    # Thresholds 0.05 max|w| per column: 0.15 and 0.2. Column 0: + {1.0}, - {-0.5, -3.0}, 0 {0.02};
    # column 1: + {4.0}, - {-2.0}, 0 {0.05, -0.1}.
    t = quantize(scheme="ttq")
    trainable, state = t.init(_params(w))
    learned = trainable["scales"]["Dense_0"]["kernel"]
    np.testing.assert_array_equal(learned["positive"], [[1.0, 4.0]])
    np.testing.assert_array_equal(learned["negative"], [[1.75, 2.0]])
    np.testing.assert_array_equal(t.apply(trainable, state)["Dense_0"]["kernel"],
                                  [[1.0, -2.0], [-1.75, 0.0], [0.0, 4.0], [-1.75, 0.0]])
    g = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]], np.float32)
    grads = jax.grad(_linear_loss(t, g))(trainable, state)
    np.testing.assert_array_equal(grads["scales"]["Dense_0"]["kernel"]["positive"], [[1.0, 6.0]])
    np.testing.assert_array_equal(grads["scales"]["Dense_0"]["kernel"]["negative"], [[-10.0, -2.0]])
    # The shadow weights: positive * g, g, negative * g on the positive / zero / negative sets.
    np.testing.assert_array_equal(grads["params"]["Dense_0"]["kernel"], [[1.0, 4.0], [5.25, 4.0], [5.0, 24.0], [12.25, 8.0]])


# --- binary --------------------------------------------------------------------------------------

def test_binaryconnect_clips_the_shadow_weights_to_plus_minus_one_in_update():
    w = np.array([[1.5, -0.3], [-2.0, 0.8]], np.float32)
    t = quantize(scheme="binary", binary_scale="none")
    trainable, state = t.init(_params(w))
    np.testing.assert_array_equal(t.apply(trainable, state)["Dense_0"]["kernel"], [[1.0, -1.0], [-1.0, 1.0]])
    trainable, state = t.update(trainable, state, trainable, 0)
    np.testing.assert_array_equal(trainable["params"]["Dense_0"]["kernel"], np.float32([[1.0, -0.3], [-1.0, 0.8]]))


def test_bwn_scales_by_the_mean_magnitude_per_channel_and_does_not_clip():
    w = np.array([[1.5, -0.3], [-2.0, 0.8]], np.float32)
    t = quantize(scheme="binary", binary_scale="mean")
    trainable, state = t.init(_params(w))
    np.testing.assert_allclose(t.apply(trainable, state)["Dense_0"]["kernel"],
                               [[1.75, -0.55], [-1.75, 0.55]], rtol=1e-6)
    trainable, state = t.update(trainable, state, trainable, 0)
    np.testing.assert_array_equal(trainable["params"]["Dense_0"]["kernel"], w)


# --- mixed precision -----------------------------------------------------------------------------

def test_bit_rules_give_each_layer_its_own_width_in_the_state():
    t = quantize(bits=[["Dense_0/kernel", 2], [".*", 8]])
    trainable, state = t.init(_two_layer_params())
    assert int(state["Dense_0/kernel"]["bits"]) == 2 and int(state["Dense_1/kernel"]["bits"]) == 8
    assert float(state["Dense_0/kernel"]["qmax"]) == 1.0 and float(state["Dense_1/kernel"]["qmax"]) == 127.0
    # 2 bits symmetric: {-s, 0, s} with s = max|w| per column (0.5 and 1.0).
    np.testing.assert_array_equal(t.apply(trainable, state)["Dense_0"]["kernel"], [[0.5, -1.0], [0.0, 1.0]])


def test_allocate_bits_picks_the_least_sensitive_allocation_within_the_budget():
    # Budget 5 bits x 200 weights = 1000 bits. Feasible (a, b): (4, 4) 800 bits, sensitivity 1.1;
    # (8, 2) 1000, 2.0; (2, 8) 1000, 5.0; (4, 2) 600, 2.1; (2, 4) 600, 6.0; (2, 2) 400, 7.0.
    sensitivity = {"a": {8: 0.0, 4: 0.1, 2: 5.0}, "b": {8: 0.0, 4: 1.0, 2: 2.0}}
    assert allocate_bits(sensitivity, {"a": 100, "b": 100}, 5.0) == {"a": 4, "b": 4}
    # Budget 1200 bits also allows (4, 8): sensitivity 0.1, the least.
    assert allocate_bits(sensitivity, {"a": 100, "b": 100}, 6.0) == {"a": 4, "b": 8}
    with pytest.raises(ValueError, match="budget of 1.5 bits per weight cannot be met.*2.000"):
        allocate_bits(sensitivity, {"a": 100, "b": 100}, 1.5)


def test_auto_bits_measure_sensitivity_on_init_batches_and_meet_the_budget():
    k0, k1, kx = jax.random.split(jax.random.key(0), 3)
    params = {"Dense_0": {"kernel": jax.random.normal(k0, (6, 8)), "bias": jnp.zeros(8)},
              "Dense_1": {"kernel": jax.random.normal(k1, (8, 2)), "bias": jnp.zeros(2)}}
    x = jax.random.normal(kx, (2, 16, 6))

    def loss_fn(p, batch):
        h = jax.nn.relu(batch @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
        return jnp.mean((h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]) ** 2)

    t = quantize(bits="auto", budget_bits_per_weight=4.0, candidate_bits=(8, 4, 2))
    trainable, state = t.init(params, None, InitBatches(list(x), loss_fn))
    sizes = {"Dense_0/kernel": 48, "Dense_1/kernel": 16}
    bits = {p: int(state[p]["bits"]) for p in sizes}
    assert set(bits.values()) <= {8, 4, 2}
    assert sum(sizes[p] * bits[p] for p in sizes) <= 4.0 * sum(sizes.values())
    assert np.all(np.isfinite(t.apply(trainable, state)["Dense_0"]["kernel"]))


# --- the chain algebra with pruning --------------------------------------------------------------

# 3-bit symmetric (qmax 3), per-column max 0.75, 1.5, 0.375: scales 1/4, 1/2, 1/8.
CHAIN_W = np.array([[0.75, -0.3, 0.2],
                    [0.05, 1.5, -0.375]], np.float32)
CHAIN_MASK = np.array([[1, 0, 0], [0, 1, 1]], np.float32)  # half pruned by magnitude: 0.05, 0.2, 0.3 go
CHAIN_Q = np.array([[0.75, -0.5, 0.25],   # -0.3 * 2 = -0.6 -> -1; 0.2 * 8 = 1.6 -> 2
                    [0.0, 1.5, -0.375]], np.float32)  # 0.05 * 4 = 0.2 -> 0


def test_prune_then_quantize_gives_q_of_masked_and_quantize_then_prune_gives_masked_q():
    prune_then_quantize = chain(prune(".*kernel", 0.5), quantize(bits=3))
    quantize_then_prune = chain(quantize(bits=3), prune(".*kernel", 0.5))
    a = prune_then_quantize.apply(*prune_then_quantize.init(_params(CHAIN_W)))["Dense_0"]["kernel"]
    b = quantize_then_prune.apply(*quantize_then_prune.init(_params(CHAIN_W)))["Dense_0"]["kernel"]
    q_of_masked = np.array([[0.75, 0.0, 0.0], [0.0, 1.5, -0.375]], np.float32)  # Q(W * m), by hand
    np.testing.assert_array_equal(a, q_of_masked)
    np.testing.assert_array_equal(b, CHAIN_Q * CHAIN_MASK)  # Q(W) * m
    # Q(0) = 0 and a mask fixed at init: the two orders give the same params.
    np.testing.assert_array_equal(a, b)


def test_orders_differ_for_binary_weights_where_q_of_zero_is_not_zero():
    # sign(0) = +1, so the pruned zeros come back as +1 when the quantizer runs after the mask.
    prune_then_binary = chain(prune(".*kernel", 0.5), quantize(scheme="binary", binary_scale="none"))
    binary_then_prune = chain(quantize(scheme="binary", binary_scale="none"), prune(".*kernel", 0.5))
    a = prune_then_binary.apply(*prune_then_binary.init(_params(CHAIN_W)))["Dense_0"]["kernel"]
    b = binary_then_prune.apply(*binary_then_prune.init(_params(CHAIN_W)))["Dense_0"]["kernel"]
    np.testing.assert_array_equal(a, [[1.0, 1.0, 1.0], [1.0, 1.0, -1.0]])    # Q(W * m)
    np.testing.assert_array_equal(b, [[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]])    # Q(W) * m


def test_orders_differ_once_prune_rescores_on_the_quantized_weights():
    # 3 bits, max 0.75: scale 1/4, Q(W) = [0.25, 0.25, 0.75, -0.5]. Pruning one of four at step 1:
    # scored on W the smallest is 0.26 (index 1); scored on Q(W) indices 0 and 1 tie at 0.25 and
    # the lower index goes first.
    w = {"k": jnp.array([0.30, 0.26, 0.75, -0.6])}
    schedule = {"kind": "one_shot", "sparsity": 0.25, "at_step": 1}
    zeros = {"params": {"k": jnp.zeros(4)}}

    prune_then_quantize = chain(prune("k", schedule), quantize("k", bits=3, per_channel=False))
    tr, st = prune_then_quantize.init(w)
    tr, st = prune_then_quantize.update(tr, st, zeros, 0)
    np.testing.assert_array_equal(st["prune"]["masks"]["k"], [True, False, True, True])  # m(W)
    np.testing.assert_array_equal(prune_then_quantize.apply(tr, st)["k"], [0.25, 0.0, 0.75, -0.5])  # Q(W m(W))

    quantize_then_prune = chain(quantize("k", bits=3, per_channel=False), prune("k", schedule))
    tr, st = quantize_then_prune.init(w)
    tr, st = quantize_then_prune.update(tr, st, zeros, 0)
    np.testing.assert_array_equal(st["prune"]["masks"]["k"], [False, True, True, True])  # m(Q(W))
    np.testing.assert_array_equal(quantize_then_prune.apply(tr, st)["k"], [0.0, 0.25, 0.75, -0.5])  # Q(W) m(Q(W))


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("settings, substrings", [
    ({"bits": 0}, ["quantize.bits", "bit-width 0", "1 to 16"]),
    ({"bits": 17}, ["quantize.bits", "bit-width 17", "1 to 16"]),
    ({"bits": [["Dense_0/kernel", 20], [".*", 8]]}, ["quantize.bits rule", "bit-width 20", "1 to 16"]),
    ({"scheme": "foo"}, ["quantize.scheme 'foo'", "'uniform'", "'fixed_point'", "'lsq'", "'ttq'"]),
    ({"calibration": "foo"}, ["quantize.calibration 'foo'", "['minmax', 'percentile', 'mse']"]),
    ({"ste": "foo"}, ["quantize.ste", "'foo'", "['clipped', 'identity']"]),
    ({"scheme": "fixed_point"}, ["scheme='fixed_point'", "integer_bits and fraction_bits", "1 + m + n = bits"]),
    ({"scheme": "fixed_point", "bits": 8, "integer_bits": 3, "fraction_bits": 5},
     ["Q3.5", "8 bits", "= 9", "m + n = 7"]),
    ({"scheme": "binary", "bits": 4}, ["quantize.scheme 'binary'", "1 bit", "bits=4"]),
    ({"bits": 1}, ["symmetric", "at least 2 bits", "scheme='binary'", "symmetric=False"]),
    ({"bits": "auto"}, ["bits='auto'", "budget_bits_per_weight"]),
    ({"bits": "foo", "symmetric": False}, ["quantize.bits 'foo'", "integer 1-16", "(regex, bits) rules", "'auto'"]),
    ({"bits": "8"}, ["quantize.bits '8'", "integer 1-16"]),
    ({"binary_scale": "max"}, ["quantize.binary_scale 'max'", "'mean'", "'none'"]),
    ({"recalibrate_every": -1}, ["quantize.recalibrate_every", ">= 0", "(got -1)"]),
    ({"percentile": 40.0}, ["quantize.percentile", "(50, 100]", "(got 40.0)"]),
])
def test_bad_quantize_settings_name_the_setting_and_the_allowed_values(settings, substrings):
    with pytest.raises(ValueError) as error:
        quantize(**settings)
    for s in substrings:
        assert s in str(error.value)


def test_asymmetric_one_bit_quantization_is_allowed():
    t = quantize(bits=1, symmetric=False)
    out = t.apply(*t.init(_params(np.array([[0.0], [1.0]], np.float32))))["Dense_0"]["kernel"]
    np.testing.assert_array_equal(out, [[0.0], [1.0]])


def test_auto_bits_reject_a_one_bit_candidate_for_symmetric_quantization():
    def loss_fn(p, batch):
        return jnp.sum((p["Dense_0"]["kernel"] - batch) ** 2)

    try:
        t = quantize(bits="auto", budget_bits_per_weight=4.5, candidate_bits=(8, 1))
        trainable, state = t.init(_two_layer_params(), None, InitBatches([jnp.zeros((2, 2))], loss_fn))
    except ValueError:
        return
    out = t.apply(trainable, state)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(out)), "NaN weights"


def test_auto_bits_without_init_batches_raise_at_init():
    t = quantize(bits="auto", budget_bits_per_weight=4.0)
    with pytest.raises(ValueError, match=r"bits='auto'.*compression.init_batches > 0"):
        t.init(_two_layer_params())


@pytest.mark.parametrize("settings, substrings", [
    ({"scheme": "foo"}, ["quantize_activations.scheme 'foo'", "['lsq', 'pact', 'uniform']"]),
    ({"scheme": "pact", "symmetric": True}, ["PACT", "[0, alpha]", "symmetric"]),
    ({"bits": 0}, ["quantize_activations.bits", "bit-width 0", "1 to 16"]),
    ({"calibration": "foo"}, ["quantize_activations.calibration 'foo'", "['minmax', 'percentile', 'mse']"]),
])
def test_bad_quantize_activations_settings_name_the_setting_and_the_allowed_values(settings, substrings):
    with pytest.raises(ValueError) as error:
        quantize_activations(**settings)
    for s in substrings:
        assert s in str(error.value)


@pytest.mark.parametrize("scheme", ["uniform", "lsq", "pact"])
def test_activation_calibration_without_init_batches_asks_for_them(scheme):
    with pytest.raises(ValueError) as error:
        quantize_activations(scheme=scheme).init(_two_layer_params())
    assert f"({scheme})" in str(error.value) and "compression.init_batches > 0" in str(error.value)
    assert "initial_alpha" in str(error.value)


# --- activation hooks on a tiny model ------------------------------------------------------------

TINY_K0 = np.array([[1.0, -0.5, 0.25], [0.5, 2.0, -1.0]], np.float32)   # (in 2, hidden 3)
TINY_B0 = np.array([0.1, -0.2, 0.3], np.float32)
TINY_K1 = np.array([[0.5, -1.0], [0.25, 0.75], [-0.5, 1.5]], np.float32)  # (hidden 3, out 2)
TINY_B1 = np.array([0.05, -0.05], np.float32)


def _tiny_mlp():
    model = models.MLP(hidden=(3,), num_classes=2)
    params = {"Dense_0": {"kernel": TINY_K0, "bias": TINY_B0}, "Dense_1": {"kernel": TINY_K1, "bias": TINY_B1}}
    return model, params


def test_capture_module_inputs_returns_each_layers_input_over_the_batches():
    model, params = _tiny_mlp()
    batches = [np.array([[1.0, 2.0], [-1.0, 0.5]], np.float32), np.array([[0.0, -3.0]], np.float32)]
    got = models.capture_module_inputs(model, params, batches, ["Dense_0", "Dense_1"])
    x = np.concatenate(batches)
    np.testing.assert_array_equal(got["Dense_0"], x)
    # By hand: relu(x K0 + b0) = relu([[2.1, 3.3, -1.45], [-0.4, 1.3, -0.45], [-1.4, -6.2, 3.3]]).
    np.testing.assert_allclose(got["Dense_1"], [[2.1, 3.3, 0.0], [0.0, 1.3, 0.0], [0.0, 0.0, 3.3]], atol=1e-6)
    with pytest.raises(ValueError, match="Dense_7"):
        models.capture_module_inputs(model, params, batches, ["Dense_7"])


def test_apply_model_without_hooks_is_model_apply_exactly():
    model, params = _tiny_mlp()
    x = np.array([[1.0, 2.0], [-1.0, 0.5], [0.3, -0.7]], np.float32)
    np.testing.assert_array_equal(models.apply_model(model, params, x), model.apply({"params": params}, x))


def test_two_bit_input_hooks_change_what_the_layer_sees():
    # Inputs in [0, 3] with 2-bit asymmetric min-max calibration: scale 1, zero point 0, so the
    # hook rounds Dense_0's inputs to integers.
    model, params = _tiny_mlp()
    x = np.array([[0.0, 3.0], [1.4, 0.6], [2.2, 2.7]], np.float32)
    batches = InitBatches([x], lambda p, b: 0.0,
                          lambda p, paths, kinds: models.module_statistics(model, p, paths, kinds, inputs=[x]))
    t = quantize_activations("Dense_0", bits=2)
    trainable, state = t.init(params, None, batches)
    hooked = t.apply(trainable, state)
    hook = hooked[INTERCEPT_KEY]["Dense_0"]["fake_quant_input"]
    assert (float(hook["scale"]), float(hook["zero_point"]), float(hook["qmin"]), float(hook["qmax"])) == (
        1.0, 0.0, 0.0, 3.0)
    assert "Dense_1" not in hooked[INTERCEPT_KEY]  # only the selected module
    logits = models.apply_model(model, hooked, x)
    np.testing.assert_array_equal(logits, model.apply({"params": params}, np.round(x)))
    without = {k: v for k, v in hooked.items() if k != INTERCEPT_KEY}
    assert not np.allclose(models.apply_model(model, without, x), logits)
    # What a later stage would calibrate on is the hooked input.
    seen = models.capture_module_inputs(model, hooked, [x], ["Dense_0"])["Dense_0"]
    np.testing.assert_array_equal(seen, np.round(x))


def test_pact_alpha_gradient_is_the_sum_of_g_where_the_input_reaches_alpha():
    model, params = _tiny_mlp()
    t = quantize_activations("Dense_0", scheme="pact", bits=4, initial_alpha=1.0)
    trainable, state = t.init(params)
    np.testing.assert_array_equal(trainable["scales"]["Dense_0"]["alpha"], 1.0)
    x = np.array([[0.45, 3.0], [1.5, -2.0]], np.float32)
    g = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    _, hooks = split_params(t.apply(trainable, state))

    def loss(tr):
        _, h = split_params(t.apply(tr, state))
        return jnp.sum(g * run_hooks(h[("Dense_0",)], x))

    # clip to [0, 1], then 15 steps of 1/15: 0.45 * 15 = 6.75 -> 7.
    np.testing.assert_allclose(run_hooks(hooks[("Dense_0",)], x), [[7 / 15, 1.0], [1.0, 0.0]], rtol=1e-6)
    grad = jax.grad(loss)(trainable)["scales"]["Dense_0"]["alpha"]
    assert float(grad) == 2.0 + 4.0  # x >= alpha at 3.0 and 1.5


# --- the driver ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def activation_run(tmp_path_factory):
    """4-bit weights and 8-bit activations trained for 6 steps through train_and_evaluate."""
    workdir = tmp_path_factory.mktemp("act_quant")
    config = tiny_config(num_steps=6, log_every=3)
    config.compression.init_batches = 2
    config.compression.stages = [{"technique": "quantize", "bits": 4},
                                 {"technique": "quantize_activations", "bits": 8}]
    results = train.train_and_evaluate(config, str(workdir), progress=False)
    return config, workdir, results


def test_driver_trains_quantized_weights_and_activations_compiling_once_with_an_exact_export(activation_run):
    _, workdir, results = activation_run
    with open(workdir / "results.json") as f:
        assert json.load(f)["timing"]["compiles"] == 1
    assert results["timing"]["compiles"] == 1
    assert results["compression"]["export_max_abs_logit_diff"] == 0.0
    header = export.read_header(str(workdir / "export" / "params.safetensors"))["params"]
    for layer in ("Dense_0", "Dense_1"):
        for name in ("scale", "zero_point", "qmin", "qmax"):
            assert f"{INTERCEPT_KEY}/{layer}/fake_quant_input/{name}" in header
        assert header[f"{layer}/kernel"]["codec"] == "packed" and header[f"{layer}/kernel"]["bits"] == 4


def test_loaded_export_with_its_hooks_predicts_the_trained_model_exactly(activation_run):
    config, workdir, _ = activation_run
    run = train.build_run(config)
    train.train_loop(run, str(workdir), progress=False)  # restores the final checkpoint
    effective = jax.device_get(run.apply_transform(run.state["trainable"], run.state["comp_state"]))
    x = run.dataset.eval["inputs"][:16]
    expected = np.asarray(models.apply_model(run.model, effective, x))
    loaded = export.load_params(str(workdir / "export" / "params.safetensors"))
    assert set(loaded[INTERCEPT_KEY]) == {"Dense_0", "Dense_1"}
    np.testing.assert_array_equal(np.asarray(models.apply_model(run.model, loaded, x)), expected)
    # The hooks act: without them the same weights give other logits.
    bare = {k: v for k, v in loaded.items() if k != INTERCEPT_KEY}
    assert not np.array_equal(np.asarray(models.apply_model(run.model, bare, x)), expected)


def test_pact_and_lsq_activation_scales_train_through_the_driver(tmp_path):
    # PACT on Dense_0's inputs (alpha given, no calibration) chained with LSQ on Dense_1's (step
    # calibrated on the init batches): two activation stages, one compiled step, an exact export.
    config = tiny_config(num_steps=4, log_every=2)
    config.compression.init_batches = 2
    config.compression.stages = [
        {"technique": "quantize_activations", "select": "Dense_0", "scheme": "pact", "bits": 4,
         "initial_alpha": 0.5},
        {"technique": "quantize_activations", "select": "Dense_1", "scheme": "lsq", "bits": 4}]
    run = train.build_run(config)
    learned = {("Dense_0", "pact_input", "alpha"), ("Dense_1", "lsq_input", "step")}
    # Each stage's learned scale sits in the trainable under that stage's name (numbered: two
    # quantize_activations stages), nested by module path.
    stage = {"Dense_0": "quantize_activations_0", "Dense_1": "quantize_activations_1"}
    before = {k: np.array(run.state["trainable"][stage[k[0]]]["scales"][k[0]][k[2]]) for k in learned}
    assert before[("Dense_0", "pact_input", "alpha")] == np.float32(0.5)
    assert before[("Dense_1", "lsq_input", "step")] > 0
    timing = train.train_loop(run, str(tmp_path), progress=False)
    _, report = train.export_run(run, str(tmp_path))
    assert timing["compiles"] == 1
    assert report["export_max_abs_logit_diff"] == 0.0
    loaded = export.load_params(str(tmp_path / "export" / "params.safetensors"))
    assert set(loaded[INTERCEPT_KEY]["Dense_0"]) == {"pact_input"}
    assert set(loaded[INTERCEPT_KEY]["Dense_1"]) == {"lsq_input"}
    for k in learned:  # each learned scale got a gradient and moved
        assert loaded[INTERCEPT_KEY][k[0]][k[1]][k[2]] != before[k], k


def test_allocate_bits_does_not_sink_the_largest_layer_when_two_small_ones_would_do():
    # Measured on LeNet-300-100 (loss increase of quantizing one kernel alone): a greedy
    # cheapest-per-bit rule drops Dense_0 to 2 bits (+1.2 loss); the optimum is 3 bits everywhere.
    sens = {"Dense_0": {8: 0.0002, 6: 0.0005, 4: 0.0068, 3: 0.0687, 2: 1.1975},
            "Dense_1": {8: -0.0002, 6: 0.0003, 4: 0.003, 3: 0.0072, 2: 0.5072},
            "Dense_2": {8: -0.0001, 6: -0.0014, 4: -0.0013, 3: 0.0846, 2: 0.6324}}
    sizes = {"Dense_0": 235_200, "Dense_1": 30_000, "Dense_2": 1_000}
    assert allocate_bits(sens, sizes, 3.0) == {"Dense_0": 3, "Dense_1": 3, "Dense_2": 3}


def test_allocate_bits_matches_exhaustive_search_on_random_problems():
    import itertools

    rng = np.random.default_rng(0)
    for _ in range(30):
        paths = [f"l{i}" for i in range(4)]
        sizes = {p: int(rng.integers(1, 50)) for p in paths}
        sens = {p: {b: float(rng.normal()) for b in (8, 4, 3, 2)} for p in paths}
        budget = float(rng.uniform(2.0, 8.0))
        total = sum(sizes.values())
        feasible = [dict(zip(paths, c)) for c in itertools.product((8, 4, 3, 2), repeat=4)
                    if sum(sizes[p] * b for p, b in zip(paths, c)) <= budget * total + 1e-9]
        best = min(sum(sens[p][b] for p, b in c.items()) for c in feasible)
        got = allocate_bits(sens, sizes, budget)
        assert sum(sizes[p] * b for p, b in got.items()) <= budget * total + 1e-9
        assert sum(sens[p][b] for p, b in got.items()) == pytest.approx(best)


def test_lsq_weights_need_the_signed_grid():
    with pytest.raises(ValueError, match="symmetric=False would clip every negative weight"):
        quantize(scheme="lsq", bits=4, symmetric=False)
