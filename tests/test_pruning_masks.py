"""Tests for compression.pruning_masks: scores, exact-count masks, N:M, units, tracing, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression.pruning_masks import (expand_unit_mask, global_masks, layerwise_mask,
                                       magnitude_scores, nm_mask, random_scores, unit_mask,
                                       unit_norms)

T, F = True, False


def _rng_scores(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


# --- scores -----------------------------------------------------------------


def test_magnitude_scores_are_absolute_values():
    np.testing.assert_array_equal(magnitude_scores(jnp.array([-1.5, 0.0, 2.0])), [1.5, 0.0, 2.0])


def test_random_scores_are_uniform_float32_and_reproducible_from_the_key():
    a = random_scores(jax.random.key(0), (4, 5))
    assert a.shape == (4, 5) and a.dtype == jnp.float32
    assert bool(jnp.all((a >= 0) & (a < 1)))
    np.testing.assert_array_equal(a, random_scores(jax.random.key(0), (4, 5)))
    assert not np.array_equal(a, random_scores(jax.random.key(1), (4, 5)))


def test_unit_norms_of_a_dense_kernel_score_output_and_input_neurons():
    w = jnp.array([[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]])  # (in=2, out=3)
    np.testing.assert_allclose(unit_norms(w, -1, ord=1), [5.0, 7.0, 9.0])
    np.testing.assert_allclose(unit_norms(w, -1, ord=2), np.sqrt([17.0, 29.0, 45.0]), rtol=1e-6)
    np.testing.assert_allclose(unit_norms(w, 0, ord=1), [6.0, 15.0])


def test_unit_norms_of_a_conv_kernel_are_l1_filter_norms():
    w = jnp.arange(12.0).reshape(2, 2, 1, 3)  # (h, w, in, out); filter j holds j, 3+j, 6+j, 9+j
    np.testing.assert_allclose(unit_norms(w, -1), [18.0, 22.0, 26.0])


def test_unit_norms_of_an_attention_kernel_score_heads():
    w = jnp.ones((2, 3, 2)) * jnp.array([1.0, -2.0, 3.0])[None, :, None]  # (width, heads, head_dim)
    np.testing.assert_allclose(unit_norms(w, 1, ord=2), [2.0, 4.0, 6.0], rtol=1e-6)


# --- layer-wise -------------------------------------------------------------


def test_layerwise_mask_prunes_the_lowest_magnitudes():
    w = jnp.array([[0.3, -0.1, 0.4], [-0.2, 0.05, 0.6]])
    mask = layerwise_mask(magnitude_scores(w), 0.5)  # round(0.5 * 6) = 3 pruned
    assert mask.dtype == jnp.bool_
    np.testing.assert_array_equal(mask, [[T, F, T], [F, F, T]])


def test_layerwise_mask_breaks_ties_by_flat_index_lower_pruned_first():
    scores = jnp.array([1.0, 1.0, 1.0, 1.0, 2.0, 0.0])
    np.testing.assert_array_equal(layerwise_mask(scores, 0.5), [F, F, T, T, T, F])
    np.testing.assert_array_equal(layerwise_mask(jnp.ones((2, 2)), 0.5), [[F, F], [T, T]])


def test_layerwise_mask_sparsity_zero_keeps_everything():
    np.testing.assert_array_equal(layerwise_mask(jnp.array([[0.0, -1.0], [0.0, 0.0]]), 0.0),
                                  [[T, T], [T, T]])


@pytest.mark.parametrize("sparsity, pruned", [(0.1, 9), (0.5, 46), (0.9, 82), (0.99, 90)])
def test_layerwise_mask_prunes_exactly_round_sparsity_times_n(sparsity, pruned):
    mask = layerwise_mask(_rng_scores((7, 13)), sparsity)  # n = 91; 45.5 rounds half to even
    assert mask.shape == (7, 13)
    assert int(jnp.sum(~mask)) == pruned


def test_layerwise_mask_rounds_the_count_half_to_even():
    scores = jnp.arange(10.0)
    assert int(jnp.sum(~layerwise_mask(scores, 0.25))) == 2  # 2.5 -> 2
    assert int(jnp.sum(~layerwise_mask(scores, 0.26))) == 3  # 2.6 -> 3


def test_layerwise_mask_with_traced_sparsity_matches_python_float_and_compiles_once():
    scores = _rng_scores((5, 8))
    f = jax.jit(layerwise_mask)
    for s in (0.3, 0.6):
        np.testing.assert_array_equal(f(scores, s), layerwise_mask(scores, s))
    assert f._cache_size() == 1


def test_layerwise_mask_clips_a_traced_sparsity_it_cannot_validate():
    f = jax.jit(layerwise_mask)
    assert not bool(jnp.any(f(jnp.arange(4.0), 1.5)))
    assert bool(jnp.all(f(jnp.arange(4.0), -0.5)))


def test_layerwise_mask_of_an_empty_array_is_empty():
    assert layerwise_mask(jnp.zeros((0, 3)), 0.5).shape == (0, 3)


# --- global -----------------------------------------------------------------


def test_global_masks_rank_across_layers_so_layer_sparsities_differ():
    scores = {"a": jnp.array([0.9, 0.1, 0.5]), "b": jnp.array([[0.2, 0.8], [0.3, 0.05]])}
    masks = global_masks(scores, 0.5)  # round(0.5 * 7) = 4 pruned: 0.05, 0.1, 0.2, 0.3
    assert set(masks) == {"a", "b"} and masks["b"].shape == (2, 2)
    np.testing.assert_array_equal(masks["a"], [T, F, T])
    np.testing.assert_array_equal(masks["b"], [[F, T], [F, F]])


def test_global_masks_break_ties_in_sorted_key_order_then_flat_index():
    masks = global_masks({"b": jnp.ones(2), "a": jnp.ones(2)}, 0.75)  # 3 pruned
    np.testing.assert_array_equal(masks["a"], [F, F])
    np.testing.assert_array_equal(masks["b"], [F, T])


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.8])
def test_global_masks_prune_exactly_round_sparsity_times_total(sparsity):
    scores = {"dense": _rng_scores((6, 5), 1), "conv": _rng_scores((2, 2, 3, 4), 2),
              "bias": _rng_scores((3,), 3)}
    masks = global_masks(scores, sparsity)
    assert all(masks[k].shape == scores[k].shape and masks[k].dtype == jnp.bool_ for k in scores)
    pruned = sum(int(jnp.sum(~m)) for m in masks.values())
    assert pruned == int(np.round(np.float32(sparsity) * 81))


def test_global_masks_with_traced_sparsity_match_python_float_and_compile_once():
    scores = {"x": _rng_scores((4, 4), 4), "y": _rng_scores((6,), 5)}
    f = jax.jit(global_masks)
    for s in (0.25, 0.7):
        out, ref = f(scores, s), global_masks(scores, s)
        for k in scores:
            np.testing.assert_array_equal(out[k], ref[k])
    assert f._cache_size() == 1


# --- N:M --------------------------------------------------------------------


def test_nm_mask_keeps_the_two_largest_of_every_four_inputs_of_a_dense_kernel():
    scores = jnp.array([[0.1, 5.0], [0.4, -1.0], [0.3, 2.0], [0.2, 7.0]])  # (in=4, out=2)
    np.testing.assert_array_equal(nm_mask(scores, 2, 4), [[F, T], [T, F], [T, F], [F, T]])


def test_nm_mask_along_the_last_axis():
    scores = jnp.array([[3.0, 1.0, 4.0, 1.5], [9.0, 2.0, 6.0, 5.0]])
    np.testing.assert_array_equal(nm_mask(scores, 1, 2, axis=-1), [[T, F, T, F], [T, F, T, F]])


def test_nm_mask_breaks_ties_within_a_group_lower_index_pruned_first():
    np.testing.assert_array_equal(nm_mask(jnp.ones(8), 2, 4), [F, F, T, T, F, F, T, T])


@pytest.mark.parametrize("shape, n, m, axis", [
    ((16, 6), 2, 4, 0),
    ((3, 8), 1, 4, 1),
    ((3, 3, 8, 4), 2, 4, 2),
    ((12, 5), 3, 6, -2),
])
def test_nm_mask_holds_n_of_m_in_every_group_and_keeps_the_largest(shape, n, m, axis):
    scores = _rng_scores(shape, 7)
    mask = nm_mask(scores, n, m, axis=axis)
    assert mask.shape == shape and mask.dtype == jnp.bool_
    ax = axis % len(shape)
    g_mask = np.moveaxis(np.asarray(mask), ax, -1).reshape(-1, m)
    g_scores = np.moveaxis(np.asarray(scores), ax, -1).reshape(-1, m)
    np.testing.assert_array_equal(g_mask.sum(axis=1), n)
    kept_min = np.where(g_mask, g_scores, np.inf).min(axis=1)
    pruned_max = np.where(g_mask, -np.inf, g_scores).max(axis=1)
    assert np.all(kept_min > pruned_max)


def test_nm_mask_n_equal_to_m_keeps_everything_and_n_zero_prunes_everything():
    scores = _rng_scores((8, 2))
    assert bool(jnp.all(nm_mask(scores, 4, 4)))
    assert not bool(jnp.any(nm_mask(scores, 0, 4)))


# --- units (structured) -----------------------------------------------------


def test_unit_mask_prunes_the_lowest_scoring_units_with_index_tie_break():
    np.testing.assert_array_equal(unit_mask(jnp.array([3.0, 1.0, 2.0, 1.0]), 0.5), [T, F, T, F])
    np.testing.assert_array_equal(unit_mask(jnp.array([3.0, 1.0, 2.0]), 0.0), [T, T, T])


def test_unit_mask_with_traced_sparsity_compiles_once():
    f = jax.jit(unit_mask)
    scores = jnp.array([0.5, 0.1, 0.9, 0.3, 0.7])
    np.testing.assert_array_equal(f(scores, 0.2), [T, F, T, T, T])
    np.testing.assert_array_equal(f(scores, 0.6), [F, F, T, F, T])
    assert f._cache_size() == 1


def test_expand_unit_mask_broadcasts_units_to_the_weight_shape():
    np.testing.assert_array_equal(expand_unit_mask(jnp.array([T, F, T]), (2, 3), -1),
                                  [[T, F, T], [T, F, T]])
    heads = expand_unit_mask(jnp.array([F, T]), (3, 2, 2), 1)  # (width, heads, head_dim)
    assert heads.shape == (3, 2, 2)
    np.testing.assert_array_equal(heads[:, 0], np.zeros((3, 2), bool))
    np.testing.assert_array_equal(heads[:, 1], np.ones((3, 2), bool))


def test_filter_pruning_removes_the_filters_with_the_smallest_l1_norm():
    w = jnp.arange(24.0).reshape(2, 2, 2, 3) * jnp.array([1.0, -0.01, 0.5])  # filter 1 smallest
    mask = expand_unit_mask(unit_mask(unit_norms(w, -1), 1 / 3), w.shape, -1)
    assert not bool(jnp.any(mask[..., 1])) and bool(jnp.all(mask[..., [0, 2]]))


def test_periodic_units_fold_every_period_th_index_into_one_unit():
    # 6 rows reading a flattened (2 positions x 3 channels) map, channels fastest: unit u = rows u, u + 3.
    w = jnp.array([[1.0, 1.0], [0.1, 0.0], [2.0, 0.0], [1.0, 0.0], [0.2, 0.0], [0.0, 0.0]])
    np.testing.assert_allclose(unit_norms(w, 0, ord=1, period=3), [3.0, 0.3, 2.0], rtol=1e-6)
    np.testing.assert_allclose(unit_norms(w, 0, ord=2, period=3), np.sqrt([3.0, 0.05, 4.0]), rtol=1e-6)
    np.testing.assert_array_equal(expand_unit_mask(jnp.array([T, F, T]), (6, 2), 0, period=3),
                                  [[T, T], [F, F], [T, T], [T, T], [F, F], [T, T]])


def test_unit_mask_caps_the_pruned_count_and_rounds_the_kept_count_to_a_multiple():
    scores = jnp.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    # 0.9 of 6 = round(5.4) = 5 pruned; capped to 4 the best two stay.
    np.testing.assert_array_equal(unit_mask(scores, 0.9, max_pruned=4), [F, F, T, F, T, F])
    # 0.5 of 6 = 3 pruned, 3 kept, rounded up to 4 kept (a multiple of 2): only the two lowest go.
    np.testing.assert_array_equal(unit_mask(scores, 0.5, multiple_of=2), [T, F, T, T, T, F])
    # Never more than every unit: 0.1 of 6 = 1 pruned, 5 kept, rounded up to 8 > 6 keeps all 6.
    np.testing.assert_array_equal(unit_mask(scores, 0.1, multiple_of=4), [T] * 6)


def test_global_masks_keep_best_of_each_array_keeps_one_entry_per_array():
    scores = [jnp.array([5.0, 6.0]), jnp.array([0.1, 0.3, 0.2])]  # a list keeps its order
    # 0.6 of 5 = 3 pruned: without protection the whole second array goes; with it, its best (0.3) stays
    # and the lowest-scoring first entry (5.0) goes instead.
    plain = global_masks(scores, 0.6)
    np.testing.assert_array_equal(plain[1], [F, F, F])
    kept = global_masks(scores, 0.6, keep_best_of_each=True)
    np.testing.assert_array_equal(kept[0], [F, T])
    np.testing.assert_array_equal(kept[1], [F, T, F])
    # At most total - arrays = 3 go, whatever the sparsity.
    capped = global_masks(scores, 0.99, keep_best_of_each=True)
    np.testing.assert_array_equal(capped[0], [F, T])
    np.testing.assert_array_equal(capped[1], [F, T, F])


# --- validation -------------------------------------------------------------


@pytest.mark.parametrize("call, match", [
    (lambda: layerwise_mask(jnp.ones(4), 1.0), r"sparsity must be in \[0, 1\).*got 1\.0"),
    (lambda: layerwise_mask(jnp.ones(4), -0.2), r"sparsity must be in \[0, 1\).*got -0\.2"),
    (lambda: layerwise_mask(jnp.ones(4), np.array([0.1, 0.2])),
     r"sparsity must be a scalar, got shape \(2,\)"),
    (lambda: global_masks({"a": jnp.ones(2)}, 1.2), r"sparsity must be in \[0, 1\).*got 1\.2"),
    (lambda: global_masks({}, 0.5), r"at least one score array"),
    (lambda: unit_mask(jnp.ones((2, 2)), 0.5), r"unit_scores must be 1-D, got shape \(2, 2\)"),
    (lambda: unit_mask(jnp.ones(3), 1.0), r"sparsity must be in \[0, 1\).*got 1\.0"),
    (lambda: nm_mask(jnp.ones(8), 5, 4), r"n must be in \[0, m\], got n=5, m=4"),
    (lambda: nm_mask(jnp.ones(8), -1, 4), r"n must be in \[0, m\], got n=-1, m=4"),
    (lambda: nm_mask(jnp.ones(8), 0, 0), r"m must be >= 1, got m=0"),
    (lambda: nm_mask(jnp.ones(8), 2.0, 4), r"n must be an integer, got 2\.0"),
    (lambda: nm_mask(jnp.ones((6, 2)), 2, 4),
     r"length of axis 0 \(6\) must be divisible by m=4; scores shape \(6, 2\)"),
    (lambda: nm_mask(jnp.ones((8, 2)), 2, 4, axis=2),
     r"axis=2 is out of range for an array of rank 2"),
    (lambda: unit_norms(jnp.ones((2, 3)), 2),
     r"unit_axis=2 is out of range for an array of rank 2"),
    (lambda: unit_norms(jnp.ones((2, 3)), -1, ord=3), r"ord must be 1 or 2, got 3"),
    (lambda: expand_unit_mask(jnp.ones(2, bool), (2, 3), -1),
     r"unit_mask must have shape \(3,\) to match axis -1 of shape \(2, 3\), got \(2,\)"),
    (lambda: unit_norms(jnp.ones((6, 2)), 0, period=4), r"period 4 does not divide the length 6"),
    (lambda: expand_unit_mask(jnp.ones(2, bool), (6, 2), 0, period=3),
     r"unit_mask must have shape \(3,\) to match axis 0 of shape \(6, 2\) with period 3"),
    (lambda: unit_mask(jnp.ones(3), 0.5, multiple_of=0), r"multiple_of must be an integer >= 1, got 0"),
])
def test_invalid_mask_arguments_raise_a_value_error_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call()
