"""The quantizers' arithmetic on small cases worked out by hand: grids, ranges, rounding, STEs, LSQ, PACT,
binary, ternary, calibration."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import quantizers as qz


def _eq(actual, expected):
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected, np.float32))


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected, np.float32), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------ grids and ranges


def test_integer_grid_is_narrow_signed_when_symmetric_and_unsigned_when_not():
    _eq(qz.integer_grid(4, True), (-7, 7))  # 2^(4-1) - 1 = 7, and -7 (not -8)
    _eq(qz.integer_grid(8, True), (-127, 127))
    _eq(qz.integer_grid(2, True), (-1, 1))  # 2^1 - 1 = 1
    _eq(qz.integer_grid(3, False), (0, 7))  # 2^3 - 1 = 7
    _eq(qz.integer_grid(1, False), (0, 1))


def test_integer_grid_takes_a_traced_bit_width():
    qmin, qmax = jax.jit(lambda b: qz.integer_grid(b, True))(jnp.int32(5))  # 2^4 - 1 = 15
    _eq((qmin, qmax), (-15, 15))


def test_fixed_point_grid_is_the_full_twos_complement_range():
    _eq(qz.fixed_point_grid(8), (-128, 127))  # -2^7, 2^7 - 1
    _eq(qz.fixed_point_grid(4), (-8, 7))


def test_symmetric_affine_range_uses_the_larger_magnitude_and_zero_point_zero():
    scale, zp = qz.affine_from_range(-1.0, 3.0, -7.0, 7.0, True)
    _close(scale, 3.0 / 7.0)  # max(|-1|, |3|) / 7
    _eq(zp, 0.0)
    scale, zp = qz.affine_from_range(-6.0, 3.0, -7.0, 7.0, True)
    _close(scale, 6.0 / 7.0)


def test_asymmetric_affine_range_maps_zero_to_an_integer_zero_point():
    # 2 bits unsigned: [0, 3]. scale = (3 - (-1)) / (3 - 0) = 4/3; zero point round(0 - (-1)/(4/3)) = round(0.75) = 1.
    scale, zp = qz.affine_from_range(-1.0, 3.0, 0.0, 3.0, False)
    _close(scale, 4.0 / 3.0)
    _eq(zp, 1.0)
    # A range not containing 0 is widened to contain it: [1, 3] -> [0, 3], scale 3/3 = 1, zero point 0.
    scale, zp = qz.affine_from_range(1.0, 3.0, 0.0, 3.0, False)
    _close(scale, 1.0)
    _eq(zp, 0.0)
    # All negative: [-3, -1] -> [-3, 0], scale 1, zero point round(0 - (-3)/1) = 3 (the top of the grid).
    scale, zp = qz.affine_from_range(-3.0, -1.0, 0.0, 3.0, False)
    _close(scale, 1.0)
    _eq(zp, 3.0)


def test_a_zero_range_gets_scale_one():
    for symmetric, (qmin, qmax) in ((True, (-7.0, 7.0)), (False, (0.0, 15.0))):
        scale, zp = qz.affine_from_range(0.0, 0.0, qmin, qmax, symmetric)
        _eq(scale, 1.0)
        _eq(zp, 0.0)


def test_affine_range_works_per_channel():
    lo, hi = jnp.array([[-1.0, -2.0]]), jnp.array([[3.0, 1.0]])
    scale, zp = qz.affine_from_range(lo, hi, -7.0, 7.0, True)
    _close(scale, [[3.0 / 7.0, 2.0 / 7.0]])
    scale, zp = qz.affine_from_range(lo, hi, 0.0, 3.0, False)
    # Channel 0: 4/3 and round(0.75) = 1. Channel 1: (1 + 2)/3 = 1 and round(2/1) = 2.
    _close(scale, [[4.0 / 3.0, 1.0]])
    _eq(zp, [[1.0, 2.0]])


# ------------------------------------------------------------ fake quantization


def test_fake_quantize_rounds_half_to_even_and_clips_both_ends():
    # 3-bit symmetric grid [-3, 3], scale 0.5, zero point 0.
    x = jnp.array([0.25, 0.75, -0.25, 1.25, 0.3, 2.0, -5.0])
    # x / 0.5 = [0.5, 1.5, -0.5, 2.5, 0.6, 4, -10]
    # round (half to even) = [0, 2, -0, 2, 1, 4, -10]; clip to [-3, 3] = [0, 2, 0, 2, 1, 3, -3]
    # times 0.5 = [0, 1, 0, 1, 0.5, 1.5, -1.5]
    _eq(qz.fake_quantize(x, 0.5, 0.0, -3.0, 3.0), [0.0, 1.0, 0.0, 1.0, 0.5, 1.5, -1.5])


def test_fake_quantize_applies_the_zero_point():
    # 2-bit unsigned grid [0, 3], scale 0.5, zero point 1: representable values (q - 1) * 0.5 = -0.5 .. 1.0.
    x = jnp.array([-2.0, -0.5, 0.0, 0.3, 0.75, 5.0])
    # x / 0.5 = [-4, -1, 0, 0.6, 1.5, 10]; round = [-4, -1, 0, 1, 2, 10]; + 1 = [-3, 0, 1, 2, 3, 11]
    # clip [0, 3] = [0, 0, 1, 2, 3, 3]; (q - 1) * 0.5 = [-0.5, -0.5, 0, 0.5, 1, 1]
    _eq(qz.fake_quantize(x, 0.5, 1.0, 0.0, 3.0), [-0.5, -0.5, 0.0, 0.5, 1.0, 1.0])


def test_fake_quantize_broadcasts_per_channel_scales_along_the_last_axis():
    x = jnp.array([[1.2, 1.2, 1.2],
                   [-3.0, 2.6, 10.0]])
    scale = jnp.array([[1.0, 0.5, 0.25]])
    # x / scale = [[1.2, 2.4, 4.8], [-3, 5.2, 40]]; round, clip [-7, 7] = [[1, 2, 5], [-3, 5, 7]]
    # times scale = [[1, 1, 1.25], [-3, 2.5, 1.75]]
    _eq(qz.fake_quantize(x, scale, jnp.zeros_like(scale), -7.0, 7.0), [[1.0, 1.0, 1.25], [-3.0, 2.5, 1.75]])


def test_clipped_ste_passes_gradient_exactly_inside_the_range():
    # Grid [0, 3], scale 0.5, zero point 1: the range is [(0 - 1) 0.5, (3 - 1) 0.5] = [-0.5, 1.0], ends included.
    x = jnp.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.1])
    dx = jax.grad(lambda x: jnp.sum(qz.fake_quantize(x, 0.5, 1.0, 0.0, 3.0, "clipped")))(x)
    _eq(dx, [0.0, 1.0, 1.0, 1.0, 1.0, 0.0])


def test_identity_ste_passes_gradient_everywhere():
    x = jnp.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.1])
    dx = jax.grad(lambda x: jnp.sum(qz.fake_quantize(x, 0.5, 1.0, 0.0, 3.0, "identity")))(x)
    _eq(dx, np.ones(6))


def test_clipped_ste_passes_the_incoming_gradient_unchanged_inside():
    x = jnp.array([-2.0, 0.3, 0.9])
    g = jnp.array([5.0, -3.0, 7.0])
    dx = jax.grad(lambda x: jnp.sum(g * qz.fake_quantize(x, 0.5, 0.0, -1.0, 1.0)))(x)  # range [-0.5, 0.5]
    _eq(dx, [0.0, -3.0, 0.0])


@pytest.mark.parametrize("ste", ["clipped", "identity"])
def test_scale_and_zero_point_get_no_gradient_through_fake_quantize(ste):
    x = jnp.array([[-2.0, 0.3], [0.75, 1.1]])
    grads = jax.grad(lambda s, z: jnp.sum(qz.fake_quantize(x, s, z, 0.0, 3.0, ste)), argnums=(0, 1))(
        jnp.array([[0.5, 0.25]]), jnp.array([[1.0, 2.0]]))
    _eq(grads[0], [[0.0, 0.0]])
    _eq(grads[1], [[0.0, 0.0]])


# ------------------------------------------------------------ argument checks


def test_fixed_point_format_must_fill_the_bits():
    assert qz.fixed_point_bits(2, 5, 8, "w") == 5  # 1 sign + 2 + 5 = 8
    assert qz.fixed_point_bits(0, 7, 8, "w") == 7
    with pytest.raises(ValueError, match=r"Q3\.5.*8 bits"):  # 1 + 3 + 5 = 9
        qz.fixed_point_bits(3, 5, 8, "w")
    with pytest.raises(ValueError, match="integer_bits and fraction_bits"):
        qz.fixed_point_bits(None, 5, 8, "w")
    with pytest.raises(ValueError, match=r"Q-1\.8"):
        qz.fixed_point_bits(-1, 8, 8, "w")


@pytest.mark.parametrize("bits", [0, 17, 2.5, True, "4"])
def test_bit_widths_outside_1_to_16_or_not_integers_are_refused(bits):
    with pytest.raises(ValueError, match="quantize.bits.*1 to 16"):
        qz.check_bits(bits, "quantize.bits")


def test_bit_widths_1_to_16_are_accepted():
    assert [qz.check_bits(b, "w") for b in (1, 8, 16)] == [1, 8, 16]


def test_unknown_straight_through_estimator_is_refused_with_the_allowed_names():
    assert qz.check_ste("identity", "w") == "identity"
    with pytest.raises(ValueError, match=r"'foo'.*\['clipped', 'identity'\]"):
        qz.check_ste("foo", "w")


# ------------------------------------------------------------ LSQ


def test_lsq_forward_rounds_the_clipped_ratio_to_steps():
    x = jnp.array([0.26, -1.0, 5.0])
    # x / 0.5 = [0.52, -2, 10]; clip [-3, 3] = [0.52, -2, 3]; round = [1, -2, 3]; times 0.5 = [0.5, -1, 1.5]
    _eq(qz.lsq_quantize(x, 0.5, -3.0, 3.0), [0.5, -1.0, 1.5])


def test_lsq_input_gradient_is_the_inside_mask():
    x = jnp.array([0.26, -1.0, 5.0, -4.0, 1.4])  # x / 0.5 = [0.52, -2, 10, -8, 2.8]
    dx = jax.grad(lambda x: jnp.sum(qz.lsq_quantize(x, 0.5, -3.0, 3.0)))(x)
    _eq(dx, [1.0, 1.0, 0.0, 0.0, 1.0])


def test_lsq_step_gradient_follows_esser_et_al():
    x = jnp.array([0.26, 0.7, -1.0, 5.0])
    ds = jax.grad(lambda s: jnp.sum(qz.lsq_quantize(x, s, -3.0, 3.0)))(0.5)
    # x / s = [0.52, 1.4, -2, 10]. Inside: round(x/s) - x/s = 1 - 0.52 = 0.48, 1 - 1.4 = -0.4, -2 - (-2) = 0;
    # outside above: qmax = 3. Sum 0.48 - 0.4 + 0 + 3 = 3.08, times 1 / sqrt(N qmax) = 1 / sqrt(4 * 3).
    _close(ds, 3.08 / np.sqrt(12.0))


def test_lsq_step_gradient_below_the_range_is_qmin():
    ds = jax.grad(lambda s: jnp.sum(qz.lsq_quantize(jnp.array([-4.0]), s, -3.0, 3.0)))(0.5)
    # x / s = -8 < -3: the gradient is qmin = -3, times 1 / sqrt(1 * 3).
    _close(ds, -3.0 / np.sqrt(3.0))


def test_lsq_initial_step_is_twice_the_mean_magnitude_over_root_qmax():
    x = jnp.array([1.0, -3.0, 2.0, -2.0])  # mean |x| = 8 / 4 = 2
    _close(qz.lsq_initial_step(x, 4.0), [2.0])  # 2 * 2 / sqrt(4) = 2
    w = jnp.array([[1.0, -3.0], [-1.0, 5.0]])  # mean |w| per column = [1, 4]
    step = qz.lsq_initial_step(w, 4.0, channel_axis=-1)
    assert step.shape == (1, 2)
    _close(step, [[1.0, 4.0]])  # 2 * [1, 4] / 2


# ------------------------------------------------------------ PACT


def test_pact_clips_to_alpha_and_quantizes_to_its_levels():
    # bits 2, alpha 3: 2^2 - 1 = 3 steps of 3 / 3 = 1, levels 0, 1, 2, 3.
    x = jnp.array([-1.0, 0.4, 0.5, 1.5, 2.6, 4.0])
    # clip [0, 3] = [0, 0.4, 0.5, 1.5, 2.6, 3]; round (half to even) = [0, 0, 0, 2, 3, 3]
    _eq(qz.pact_quantize(x, 3.0, 2), [0.0, 0.0, 0.0, 2.0, 3.0, 3.0])
    # bits 3, alpha 1.4: steps of 1.4 / 7 = 0.2; 0.45 / 0.2 = 2.25 -> 2 -> 0.4; 0.71 / 0.2 = 3.55 -> 4 -> 0.8.
    _close(qz.pact_quantize(jnp.array([0.45, 0.71, 9.0]), 1.4, 3), [0.4, 0.8, 1.4])


def test_pact_alpha_gradient_counts_the_clipped_inputs():
    x = jnp.array([-1.0, 0.4, 1.5, 2.6, 3.5, 4.0, 7.0])  # three inputs above alpha = 3
    da = jax.grad(lambda a: jnp.sum(qz.pact_quantize(x, a, 2)))(3.0)
    _eq(da, 3.0)


def test_pact_input_gradient_is_one_between_zero_and_alpha():
    x = jnp.array([-1.0, 0.4, 1.5, 2.6, 2.99, 3.5])
    dx = jax.grad(lambda x: jnp.sum(qz.pact_quantize(x, 3.0, 2)))(x)
    _eq(dx, [0.0, 1.0, 1.0, 1.0, 1.0, 0.0])


def test_pact_gradients_at_the_ends_of_the_range_follow_the_documented_half_open_interval():
    x = jnp.array([0.0, 3.0])
    _eq(jax.grad(lambda a: jnp.sum(qz.pact_quantize(x, a, 2)))(3.0), 1.0)  # x >= alpha: the one at 3
    _eq(jax.grad(lambda x: jnp.sum(qz.pact_quantize(x, 3.0, 2)))(x), [1.0, 0.0])  # [0, alpha)


# ------------------------------------------------------------ binary


def test_binarize_is_the_sign_times_the_scale_with_sign_of_zero_positive():
    w = jnp.array([-2.0, -0.5, 0.0, 0.3, 1.0, 1.5])
    _eq(qz.binarize(w, 0.5), [-0.5, -0.5, 0.5, 0.5, 0.5, 0.5])
    _eq(qz.binarize(w, 1.0), [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0])


def test_binarize_per_channel_scale():
    w = jnp.array([[1.0, -2.0], [-3.0, 0.5]])
    _eq(qz.binarize(w, jnp.array([[2.0, 0.25]])), [[2.0, -0.25], [-2.0, 0.25]])


def test_binarize_gradient_is_clipped_to_unit_magnitude_or_the_identity():
    w = jnp.array([-2.0, -1.0, 0.0, 0.3, 1.0, 1.5])
    g = jnp.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    clipped = jax.grad(lambda w: jnp.sum(g * qz.binarize(w, 0.5, "clipped")))(w)
    _eq(clipped, [0.0, 2.0, 3.0, 4.0, 5.0, 0.0])  # |w| <= 1, ends included
    identity = jax.grad(lambda w: jnp.sum(g * qz.binarize(w, 0.5, "identity")))(w)
    _eq(identity, g)
    _eq(jax.grad(lambda s: jnp.sum(qz.binarize(w, s)))(0.5), 0.0)


def test_bwn_scale_is_the_mean_magnitude_per_output_channel():
    w = jnp.array([[1.0, -2.0, 0.5],
                   [-3.0, 4.0, -0.5]])
    _eq(qz.bwn_scale(w), [[2.0, 3.0, 0.5]])  # (1 + 3) / 2, (2 + 4) / 2, (0.5 + 0.5) / 2
    _close(qz.bwn_scale(w, None), [[11.0 / 6.0]])  # (1 + 2 + 0.5 + 3 + 4 + 0.5) / 6


# ------------------------------------------------------------ ternary

TW = jnp.array([1.0, -2.0, 0.2, 3.0, -0.8, 0.0, 0.5, -0.5])


def test_twn_threshold_is_a_fraction_of_the_mean_magnitude_and_alpha_the_mean_above_it():
    delta, alpha = qz.twn_threshold_and_scale(TW)
    # mean |w| = (1 + 2 + 0.2 + 3 + 0.8 + 0 + 0.5 + 0.5) / 8 = 8 / 8 = 1; delta = 0.7 * 1 = 0.7
    _close(delta, [0.7])
    # |w| > 0.7: 1, 2, 3, 0.8 -> alpha = 6.8 / 4 = 1.7
    _close(alpha, [1.7])
    _close(qz.ternarize(TW, delta, alpha, alpha), [1.7, -1.7, 0.0, 1.7, -1.7, 0.0, 0.0, 0.0])


def test_twn_per_channel():
    w = jnp.array([[1.0, 0.1],
                   [-3.0, 0.2]])
    delta, alpha = qz.twn_threshold_and_scale(w, 0.5, channel_axis=-1)
    # column 0: mean 2, delta 1, above: 3 -> alpha 3. column 1: mean 0.15, delta 0.075, above: 0.1, 0.2 -> 0.15
    _close(delta, [[1.0, 0.075]])
    _close(alpha, [[3.0, 0.15]])


def test_ternarize_uses_separate_positive_and_negative_values():
    _eq(qz.ternarize(TW, 0.7, 2.0, 3.0), [2.0, -3.0, 0.0, 2.0, -3.0, 0.0, 0.0, 0.0])


def test_ternarize_scale_gradients_sum_the_incoming_gradient_over_each_set():
    g = jnp.arange(1.0, 9.0)  # [1, ..., 8]
    loss = lambda w, d, p, n, scaled: jnp.sum(g * qz.ternarize(w, d, p, n, scaled))
    dd, dp, dn = jax.grad(loss, argnums=(1, 2, 3))(TW, jnp.array([0.7]), jnp.array([2.0]), jnp.array([3.0]), False)
    _eq(dp, [5.0])  # positive set {0, 3}: 1 + 4
    _eq(dn, [-7.0])  # negative set {1, 4}: -(2 + 5)
    _eq(dd, [0.0])


def test_ternarize_weight_gradient_is_the_identity_or_scaled_as_ttq():
    g = jnp.arange(1.0, 9.0)
    p, n = jnp.array([2.0]), jnp.array([3.0])
    dw = jax.grad(lambda w: jnp.sum(g * qz.ternarize(w, 0.7, p, n)))(TW)
    _eq(dw, g)
    dw = jax.grad(lambda w: jnp.sum(g * qz.ternarize(w, 0.7, p, n, True)))(TW)
    # positive set {0, 3}: 2 g; negative set {1, 4}: 3 g; zero set: g
    _eq(dw, [2.0, 6.0, 3.0, 8.0, 15.0, 6.0, 7.0, 8.0])


def test_ternarize_per_channel_scale_gradients_sum_over_each_column():
    w = jnp.array([[1.0, -1.0],
                   [2.0, 0.0],
                   [-3.0, 5.0]])
    g = jnp.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0]])
    dp, dn = jax.grad(lambda p, n: jnp.sum(g * qz.ternarize(w, 0.5, p, n)), argnums=(0, 1))(
        jnp.ones((1, 2)), jnp.ones((1, 2)))
    _eq(dp, [[3.0, 40.0]])  # column 0 positives: rows 0, 1 -> 1 + 2; column 1: row 2 -> 40
    _eq(dn, [[-4.0, -10.0]])  # column 0 negatives: row 2 -> -4; column 1: row 0 -> -10


def test_ternarize_scale_gradients_accept_scales_of_lower_rank():
    g = jnp.arange(1.0, 9.0)
    dp, dn = jax.grad(lambda p, n: jnp.sum(g * qz.ternarize(TW, 0.7, p, n)), argnums=(0, 1))(2.0, 3.0)
    _eq(dp, 5.0)
    _eq(dn, -7.0)


def test_ttq_threshold_is_a_fraction_of_the_largest_magnitude():
    _close(qz.ttq_threshold(TW), [0.15])  # 0.05 * 3
    _close(qz.ttq_threshold(TW, 0.5), [1.5])
    w = jnp.array([[1.0, -0.2], [-4.0, 0.1]])
    _close(qz.ttq_threshold(w, 0.1, channel_axis=-1), [[0.4, 0.02]])  # 0.1 * [4, 0.2]


# ------------------------------------------------------------ calibration


def test_minmax_range_per_tensor_and_per_channel():
    x = jnp.array([[1.0, -2.0], [-3.0, 4.0], [0.5, 0.0]])
    lo, hi = qz.minmax_range(x)
    _eq(lo, [[-3.0]])
    _eq(hi, [[4.0]])
    lo, hi = qz.minmax_range(x, channel_axis=-1)
    _eq(lo, [[-3.0, -2.0]])
    _eq(hi, [[1.0, 4.0]])
    lo, hi = qz.minmax_range(x, channel_axis=0)
    _eq(lo, [[-2.0], [-3.0], [0.0]])
    _eq(hi, [[1.0], [4.0], [0.5]])


def test_percentile_range_clips_the_tails():
    x = jnp.arange(101.0)  # the p-th percentile of 0, 1, ..., 100 is p
    lo, hi = qz.percentile_range(x, 90.0)
    _close(lo, [10.0])
    _close(hi, [90.0])
    lo, hi = qz.percentile_range(jnp.stack([x, 2 * x], axis=1), 90.0, channel_axis=-1)
    _close(lo, [[10.0, 20.0]])
    _close(hi, [[90.0, 180.0]])


def _quantization_error(x, lo, hi, bits, symmetric):
    qmin, qmax = qz.integer_grid(bits, symmetric)
    scale, zp = qz.affine_from_range(lo, hi, qmin, qmax, symmetric)
    return float(jnp.sum((x - qz.fake_quantize(x, scale, zp, qmin, qmax)) ** 2))


@pytest.mark.parametrize("symmetric", [True, False])
def test_mse_clipping_beats_min_max_on_data_with_an_outlier(symmetric):
    x = jnp.asarray(np.append(np.random.default_rng(0).standard_normal(1000), 50.0), jnp.float32)
    qmin, qmax = qz.integer_grid(4, symmetric)
    lo, hi = qz.mse_range(x, qmin, qmax, symmetric)
    mlo, mhi = qz.minmax_range(x)
    assert float(hi[0]) < 50.0  # the outlier is clipped
    _close(lo / mlo, hi / mhi)  # one clipping fraction of the min-max range
    assert _quantization_error(x, lo, hi, 4, symmetric) < _quantization_error(x, mlo, mhi, 4, symmetric)


def test_mse_clipping_per_channel_searches_each_channel_on_its_own():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((64, 3)).astype(np.float32)
    x[5, 1] = 20.0
    qmin, qmax = qz.integer_grid(3, True)
    lo, hi = qz.mse_range(jnp.asarray(x), qmin, qmax, True, channel_axis=-1)
    mlo, mhi = qz.minmax_range(jnp.asarray(x), channel_axis=-1)
    assert lo.shape == hi.shape == (1, 3)
    for c in range(3):
        col = jnp.asarray(x[:, c])
        alone = qz.mse_range(col, qmin, qmax, True)
        _close((lo[0, c], hi[0, c]), (alone[0][0], alone[1][0]))  # the column's own search
        assert _quantization_error(col, lo[0, c], hi[0, c], 3, True) <= _quantization_error(
            col, mlo[0, c], mhi[0, c], 3, True)
    fractions = np.asarray(hi / mhi)[0]
    assert fractions.max() - fractions.min() > 0.1  # not one fraction for the whole tensor


def test_calibrated_range_dispatches_by_name_and_refuses_unknown_names():
    x = jnp.array([-1.0, 0.0, 2.0])
    _eq(qz.calibrated_range(x, "minmax", -7.0, 7.0, True), ([-1.0], [2.0]))
    with pytest.raises(ValueError, match=r"'kl'.*\['minmax', 'percentile', 'mse'\]"):
        qz.calibrated_range(x, "kl", -7.0, 7.0, True)


def test_check_bits_accepts_numpy_integers():
    assert qz.check_bits(np.int64(4), "w") == 4
