"""Tests for compression.sparsity_schedules: values at given steps, tracing, validation."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression.sparsity_schedules import (check_sparsity, constant_sparsity, iterative_sparsity,
                                            one_shot_sparsity, polynomial_sparsity)


def _values(schedule, steps):
    return np.array([float(schedule(jnp.int32(t))) for t in steps])


def test_constant_sparsity_is_the_same_float32_scalar_at_every_step():
    s = constant_sparsity(0.7)
    out = s(jnp.int32(123))
    assert out.dtype == jnp.float32 and out.shape == ()
    np.testing.assert_allclose(_values(s, [0, 1, 10**6]), [0.7, 0.7, 0.7], rtol=1e-7)


def test_one_shot_sparsity_is_zero_before_at_step_and_sparsity_from_it_on():
    s = one_shot_sparsity(0.9, at_step=5)
    np.testing.assert_allclose(_values(s, [0, 4, 5, 6, 100]), [0, 0, 0.9, 0.9, 0.9], rtol=1e-7)
    assert s(3).dtype == jnp.float32


def test_iterative_sparsity_steps_through_the_stages_and_is_zero_before_the_first():
    s = iterative_sparsity([0.5, 0.75, 0.9], [10, 20, 30])
    np.testing.assert_allclose(_values(s, [0, 9, 10, 19, 20, 29, 30, 1000]),
                               [0, 0, 0.5, 0.5, 0.75, 0.75, 0.9, 0.9], rtol=1e-7)


def test_iterative_sparsity_allows_a_stage_that_keeps_the_previous_sparsity():
    s = iterative_sparsity([0.5, 0.5], [0, 3])
    np.testing.assert_allclose(_values(s, [0, 2, 3]), [0.5, 0.5, 0.5])


def test_polynomial_sparsity_matches_the_zhu_gupta_formula_at_begin_mid_and_end():
    # s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))^3 with s_i=0.1, s_f=0.9, t0=10, n dt=40.
    s = polynomial_sparsity(0.9, begin_step=10, end_step=50, initial_sparsity=0.1)
    steps = [0, 9, 10, 20, 30, 40, 50, 51, 1000]
    expected = [0.1, 0.1, 0.1,
                0.9 - 0.8 * 0.75 ** 3,   # a quarter of the span elapsed
                0.9 - 0.8 * 0.5 ** 3,    # half
                0.9 - 0.8 * 0.25 ** 3,   # three quarters
                0.9, 0.9, 0.9]
    np.testing.assert_allclose(_values(s, steps), expected, rtol=1e-6)
    np.testing.assert_allclose(expected[3:6], [0.5625, 0.8, 0.8875], rtol=1e-12)


def test_polynomial_sparsity_with_frequency_holds_its_value_between_updates():
    # t0=0, end=8, dt=4: updates at 0, 4, 8; s_f=0.8, s_i=0, power 3.
    s = polynomial_sparsity(0.8, begin_step=0, end_step=8, frequency=4)
    at_4 = 0.8 - 0.8 * 0.5 ** 3  # 0.7
    np.testing.assert_allclose(_values(s, [0, 1, 3, 4, 5, 7, 8, 9]),
                               [0, 0, 0, at_4, at_4, at_4, 0.8, 0.8], rtol=1e-6)
    assert at_4 == pytest.approx(0.7)


def test_polynomial_sparsity_reaches_the_final_value_at_end_step_when_the_span_is_not_a_multiple():
    # span 10, dt 4: updates at 0, 4, 8 and the final value at 10.
    s = polynomial_sparsity(0.5, begin_step=0, end_step=10, frequency=4, power=1)
    np.testing.assert_allclose(_values(s, [3, 4, 8, 9, 10]), [0, 0.2, 0.4, 0.4, 0.5], rtol=1e-6)


def test_polynomial_sparsity_power_one_is_linear():
    s = polynomial_sparsity(0.6, begin_step=0, end_step=6, power=1)
    np.testing.assert_allclose(_values(s, range(7)), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], rtol=1e-6)


@pytest.mark.parametrize("schedule", [
    constant_sparsity(0.5),
    one_shot_sparsity(0.5, 3),
    iterative_sparsity([0.25, 0.5], [2, 4]),
    polynomial_sparsity(0.5, 0, 10, frequency=2),
])
def test_schedules_under_jit_compile_once_for_every_step(schedule):
    f = jax.jit(schedule)
    values = [float(f(jnp.int32(t))) for t in (0, 3, 7, 11)]
    assert f._cache_size() == 1
    np.testing.assert_allclose(values, _values(schedule, (0, 3, 7, 11)), rtol=1e-7)


@pytest.mark.parametrize("make, match", [
    (lambda: constant_sparsity(1.0), r"sparsity must be in \[0, 1\).*got 1\.0"),
    (lambda: constant_sparsity(-0.1), r"sparsity must be in \[0, 1\).*got -0\.1"),
    (lambda: constant_sparsity(float("nan")), r"sparsity must be in \[0, 1\).*got nan"),
    (lambda: constant_sparsity("half"), r"sparsity must be a number in \[0, 1\), got 'half'"),
    (lambda: constant_sparsity(True), r"sparsity must be a number in \[0, 1\), got True"),
    (lambda: one_shot_sparsity(1.5, 3), r"sparsity must be in \[0, 1\).*got 1\.5"),
    (lambda: one_shot_sparsity(0.5, -1), r"at_step must be >= 0, got -1"),
    (lambda: one_shot_sparsity(0.5, 2.5), r"at_step must be an integer, got 2\.5"),
    (lambda: iterative_sparsity([0.5], [1, 2]),
     r"same length, got 1 sparsities \[0\.5\] and 2 steps \[1, 2\]"),
    (lambda: iterative_sparsity([], []), r"at least one stage"),
    (lambda: iterative_sparsity([0.5, 1.0], [1, 2]),
     r"sparsities\[1\] must be in \[0, 1\).*got 1\.0"),
    (lambda: iterative_sparsity([0.2, 0.5], [5, 5]),
     r"steps must be strictly increasing, got steps\[0\]=5 then steps\[1\]=5"),
    (lambda: iterative_sparsity([0.2, 0.5], [5, 3]),
     r"steps must be strictly increasing, got steps\[0\]=5 then steps\[1\]=3"),
    (lambda: iterative_sparsity([0.5, 0.2], [1, 2]),
     r"sparsities must be non-decreasing, got sparsities\[0\]=0\.5 then sparsities\[1\]=0\.2"),
    (lambda: iterative_sparsity([0.5], [-2]), r"steps\[0\] must be >= 0, got -2"),
    (lambda: polynomial_sparsity(1.0, 0, 10), r"final_sparsity must be in \[0, 1\).*got 1\.0"),
    (lambda: polynomial_sparsity(0.5, 0, 10, initial_sparsity=-0.5),
     r"initial_sparsity must be in \[0, 1\).*got -0\.5"),
    (lambda: polynomial_sparsity(0.5, 0, 10, initial_sparsity=0.6),
     r"initial_sparsity must be <= final_sparsity.*initial_sparsity=0\.6 > final_sparsity=0\.5"),
    (lambda: polynomial_sparsity(0.5, 10, 10),
     r"end_step must be > begin_step, got end_step=10 <= begin_step=10"),
    (lambda: polynomial_sparsity(0.5, 10, 5),
     r"end_step must be > begin_step, got end_step=5 <= begin_step=10"),
    (lambda: polynomial_sparsity(0.5, -1, 5), r"begin_step must be >= 0, got -1"),
    (lambda: polynomial_sparsity(0.5, 0, 10, frequency=0), r"frequency must be >= 1, got 0"),
    (lambda: polynomial_sparsity(0.5, 0, 10, power=0), r"power must be a positive number, got 0"),
])
def test_invalid_schedule_arguments_raise_a_value_error_naming_them(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_check_sparsity_names_the_argument_it_checks():
    assert check_sparsity(0.25) == 0.25
    with pytest.raises(ValueError, match=r"target must be in \[0, 1\).*got 2"):
        check_sparsity(2, "target")
