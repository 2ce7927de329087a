"""Issue 16: three library bugs found by cross-checking against independent formulas.

1. N:M pruning groups along each kernel's input-feature (reduction) axis
   (Mishra et al. 2021; NVIDIA's 2:4 sparse tensor cores): axis 0 of a Dense
   kernel (in, out), axis 2 of a Conv HWIO kernel (h, w, in, out), axis 0 of
   an attention query/key/value kernel (width, heads, head_dim), axis 1
   (head_dim) of the attention output kernel (heads, head_dim, width). It
   grouped along axis 0 everywhere: a 3x3 conv was refused, a 4x4 conv
   grouped along its height.
2. Per-channel affine quantization gives a column the same scale, zero point
   and codes as per-tensor quantization of that column alone, eager or
   jitted: XLA's rewrite of a division by a broadcast value into a multiply
   by its reciprocal (one ulp off) rounded exact half steps differently.
3. TWN (scheme='ternary') computes delta and alpha per layer by default, as
   Li et al. 2016 do.

Every expected value here is worked out by hand or by a numpy formula
independent of the library.
"""
import importlib
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import pruning_masks
from compression import quantizers as qz
from compression.pruning import prune
from compression.quantization import quantize

T, F = True, False


# ------------------------------------------------------------------ 1. N:M along the reduction axis


def _nm_mask(path, w, n=2, m=4, **settings):
    """The N:M keep-mask prune(scope='nm') computes for the weight `w` at `path` (a/b/kernel)."""
    *scopes, leaf = path.split("/")
    params = {leaf: jnp.asarray(w, jnp.float32)}
    for s in reversed(scopes):
        params = {s: params}
    t = prune(".*kernel", 0.5, scope="nm", n=n, m=m, **settings)
    trainable, state = t.init(params)
    out = t.apply(trainable, state)
    for key in path.split("/"):
        out = out[key]
    return np.asarray(out) != 0


def _assert_n_of_m_along(mask, n, m, axis):
    groups = np.moveaxis(mask, axis, -1).reshape(-1, m)
    np.testing.assert_array_equal(groups.sum(axis=1), n)


def test_reduction_axis_of_each_kernel_kind():
    ra = pruning_masks.reduction_axis
    assert ra((8, 3)) == 0  # Dense (in, out)
    assert ra((3, 3, 8, 2)) == 2  # Conv HWIO: the input channels
    assert ra((4, 4, 4, 2)) == 2
    assert ra((5, 8, 4)) == 1  # 1-D conv (w, in, out)
    assert ra((8, 2, 4), "block_0/attn/query/kernel") == 0  # (width, heads, head_dim)
    assert ra((8, 2, 4), "block_0/attn/key/kernel") == 0
    assert ra((8, 2, 4), "block_0/attn/value/kernel") == 0
    assert ra((2, 4, 8), "block_0/attn/out/kernel") == 1  # (heads, head_dim, width): head_dim
    assert ra((16,)) == 0


def test_nm_on_a_dense_kernel_keeps_the_two_largest_of_every_four_inputs():
    # (in=8, out=3): groups of 4 along the 8 inputs (axis 0), per output column.
    w = np.array([[1.0, 0.2, 9.0],
                  [-5.0, 0.3, -8.0],
                  [3.0, -0.9, 0.7],
                  [0.5, 0.8, 0.6],
                  [2.0, -6.0, 0.05],
                  [-0.1, 5.0, 0.02],
                  [7.0, 0.1, -3.0],
                  [-4.0, 0.4, 3.5]])
    # col 0: |1 5 3 .5| -> rows 1, 2; |2 .1 7 4| -> rows 6, 7
    # col 1: |.2 .3 .9 .8| -> rows 2, 3; |6 5 .1 .4| -> rows 4, 5
    # col 2: |9 8 .7 .6| -> rows 0, 1; |.05 .02 3 3.5| -> rows 6, 7
    expected = np.array([[F, F, T],
                         [T, F, T],
                         [T, T, F],
                         [F, T, F],
                         [F, T, F],
                         [F, T, F],
                         [T, F, T],
                         [T, F, T]])
    mask = _nm_mask("Dense_0/kernel", w)
    np.testing.assert_array_equal(mask, expected)
    _assert_n_of_m_along(mask, 2, 4, axis=0)


# Magnitudes along the 8 input channels of a conv kernel, one pattern per output filter:
# filter 0 |.1 .4 .3 .2| .9 .8 .05 .6| keeps channels 1, 2 and 4, 5;
# filter 1 |.7 .1 .2 .9| .3 .35 .5 .1| keeps channels 0, 3 and 5, 6.
CONV_PATTERN = np.array([[0.1, 0.7], [-0.4, 0.1], [0.3, -0.2], [0.2, 0.9],
                         [-0.9, 0.3], [0.8, -0.35], [0.05, 0.5], [-0.6, 0.1]])  # (in=8, out=2)
CONV_KEEP = np.array([[F, T], [T, F], [T, F], [F, T],
                      [T, F], [T, T], [F, T], [F, F]])


def test_nm_on_a_3x3_conv_groups_its_input_channels():
    # (3, 3, 8, 2) HWIO: the height 3 is not a multiple of 4 (refused before); the 8 input channels are.
    # Each tap (h, x) scales the pattern by a positive 1 + h + 3x, which changes no ranking within a group.
    taps = (1.0 + np.arange(3)[:, None] + 3.0 * np.arange(3)[None, :])[:, :, None, None]
    w = taps * CONV_PATTERN[None, None]
    mask = _nm_mask("Conv_0/kernel", w)
    np.testing.assert_array_equal(mask, np.broadcast_to(CONV_KEEP, (3, 3, 8, 2)))
    _assert_n_of_m_along(mask, 2, 4, axis=2)


def test_nm_on_a_4x4_conv_groups_its_input_channels_not_its_height():
    # (4, 4, 4, 2): along the input channels (axis 2) filter 0 |.1 .4 .3 .2| keeps channels 1, 2 and
    # filter 1 |.5 .1 .2 .7| keeps 0, 3. The rows scale by 4, 1, 3, 2: grouped along the height (axis 0),
    # rows 0 and 2 would be kept instead.
    pattern = np.array([[0.1, -0.5], [-0.4, 0.1], [0.3, 0.2], [0.2, -0.7]])  # (in=4, out=2)
    rows = np.array([4.0, 1.0, 3.0, 2.0])[:, None, None, None]
    cols = np.array([1.0, 2.0, 1.5, 0.5])[None, :, None, None]
    w = rows * cols * pattern[None, None]
    mask = _nm_mask("Conv_0/kernel", w)
    keep = np.array([[F, T], [T, F], [T, F], [F, T]])
    np.testing.assert_array_equal(mask, np.broadcast_to(keep, (4, 4, 4, 2)))
    _assert_n_of_m_along(mask, 2, 4, axis=2)
    assert not np.array_equal(mask, np.asarray(pruning_masks.nm_mask(np.abs(w), 2, 4, axis=0)))


def test_nm_on_an_attention_query_kernel_groups_the_model_width():
    # (width=8, heads=2, head_dim=2): the query is x @ W over the width (axis 0).
    columns = {  # (head, dim): the 8 weights along the width
        (0, 0): [0.1, 0.9, -0.8, 0.2, 0.3, 0.4, -0.5, 0.6],    # keeps 1, 2 | 6, 7
        (0, 1): [-0.7, 0.1, 0.2, 0.6, 0.9, 0.1, 0.1, 0.8],    # keeps 0, 3 | 4, 7
        (1, 0): [0.5, 0.4, 0.3, 0.2, 0.1, 0.2, 0.3, -0.4],    # keeps 0, 1 | 6, 7
        (1, 1): [0.2, 0.3, 0.4, 0.5, -0.5, 0.4, 0.3, 0.2],    # keeps 2, 3 | 4, 5
    }
    kept = {(0, 0): [1, 2, 6, 7], (0, 1): [0, 3, 4, 7], (1, 0): [0, 1, 6, 7], (1, 1): [2, 3, 4, 5]}
    w = np.zeros((8, 2, 2))
    expected = np.zeros((8, 2, 2), bool)
    for (h, d), col in columns.items():
        w[:, h, d] = col
        expected[kept[(h, d)], h, d] = True
    for name in ("query", "key", "value"):
        mask = _nm_mask(f"block_0/attn/{name}/kernel", w)
        np.testing.assert_array_equal(mask, expected)
        _assert_n_of_m_along(mask, 2, 4, axis=0)


def test_nm_on_the_attention_output_kernel_groups_consecutive_head_dims():
    # (heads=2, head_dim=4, width=2): the output sums over heads and head_dim; its groups are the
    # 4 consecutive head_dim entries of one head (axis 1), i.e. 4 consecutive inputs of the
    # flattened heads * head_dim input.
    w = np.array([[[0.1, 0.9], [0.5, -0.2], [-0.4, 0.3], [0.2, 0.8]],    # head 0
                  [[-0.9, 0.1], [0.1, 0.2], [0.05, 0.7], [0.6, -0.6]]])  # head 1
    # head 0, out 0: |.1 .5 .4 .2| -> dims 1, 2; out 1: |.9 .2 .3 .8| -> dims 0, 3
    # head 1, out 0: |.9 .1 .05 .6| -> dims 0, 3; out 1: |.1 .2 .7 .6| -> dims 2, 3
    expected = np.array([[[F, T], [T, F], [T, F], [F, T]],
                         [[T, F], [F, F], [F, T], [T, T]]])
    mask = _nm_mask("block_0/attn/out/kernel", w)
    np.testing.assert_array_equal(mask, expected)
    _assert_n_of_m_along(mask, 2, 4, axis=1)
    # The same groups as flattening the two reduction axes: (heads * head_dim, width), axis 0.
    np.testing.assert_array_equal(
        np.asarray(pruning_masks.nm_mask(np.abs(w).reshape(8, 2), 2, 4, axis=0)).reshape(2, 4, 2), expected)


def test_nm_on_a_char_transformer_holds_n_of_m_along_every_kernels_reduction_axis():
    models = importlib.import_module("experiments.models")
    model = models.CharTransformer(vocab_size=12, max_len=8, width=8, num_heads=(2,), ffn_dims=(8,), head_dim=4)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    t = prune(".*kernel", 0.5, scope="nm", n=2, m=4)
    out = t.apply(*t.init(params))
    flat = {"/".join(str(k.key) for k in kp): np.asarray(v) for kp, v in jax.tree_util.tree_leaves_with_path(out)}
    axes = {"block_0/attn/query/kernel": 0, "block_0/attn/key/kernel": 0, "block_0/attn/value/kernel": 0,
            "block_0/attn/out/kernel": 1, "block_0/ffn_in/kernel": 0, "block_0/ffn_out/kernel": 0,
            "head/kernel": 0}
    assert sorted(p for p in flat if p.endswith("kernel")) == sorted(axes)
    for p, ax in axes.items():
        _assert_n_of_m_along(flat[p] != 0, 2, 4, axis=ax)


def test_nm_axis_setting_overrides_the_default():
    w = np.abs(np.arange(1.0, 17.0)).reshape(4, 4) * np.array([1.0, -1.0, 1.0, -1.0])
    by_rows = _nm_mask("Dense_0/kernel", w, n=1, m=2, nm_axis=-1)  # groups along the outputs
    np.testing.assert_array_equal(by_rows, np.tile([F, T, F, T], (4, 1)))
    by_rule = _nm_mask("Dense_0/kernel", w, n=1, m=2, nm_axis=[("Dense_0/kernel", 1)])
    np.testing.assert_array_equal(by_rule, by_rows)
    default = _nm_mask("Dense_0/kernel", w, n=1, m=2, nm_axis=[("nothing_here", 1)])
    np.testing.assert_array_equal(default, np.tile([[F], [T]], (2, 4)))


def test_nm_refuses_a_reduction_axis_not_a_multiple_of_m_naming_path_shape_axis_and_m():
    t = prune(".*kernel", 0.5, scope="nm", n=2, m=4)
    with pytest.raises(ValueError, match=r"Conv_0/kernel of shape \(3, 3, 6, 2\) cannot take 2:4 sparsity: its "
                                         r"groups run along axis 2 .*of length 6, .*not a multiple of m=4"):
        t.init({"Conv_0": {"kernel": jnp.ones((3, 3, 6, 2))}})
    with pytest.raises(ValueError, match=r"attn/out/kernel of shape \(2, 6, 8\) cannot take 2:4 sparsity: its "
                                         r"groups run along axis 1 .*of length 6, .*not a multiple of m=4"):
        t.init({"attn": {"out": {"kernel": jnp.ones((2, 6, 8))}}})


# ------------------------------------------------------------------ 2. per-channel == per-tensor affine codes


def _affine(w, bits, symmetric, axis):
    """(scale, zero point, codes, dequantized) of w by min-max affine quantization."""
    qmin, qmax = qz.integer_grid(bits, symmetric)
    lo, hi = qz.minmax_range(w, axis)
    scale, zp = qz.affine_from_range(lo, hi, qmin, qmax, symmetric)
    codes = qz.quantize_codes(w, scale, zp, qmin, qmax)
    return scale, zp, codes, qz.fake_quantize(w, scale, zp, qmin, qmax)


_affine_jit = jax.jit(_affine, static_argnums=(1, 2, 3))

HALF_STEP_KERNEL = np.array([[3.0, 3.0], [-3.0, -3.0], [1.0, 1.0], [2.0, 2.0]], np.float32)  # Dense (in=4, out=2)


@pytest.mark.parametrize("run", [_affine, _affine_jit], ids=["eager", "jit"])
def test_the_half_step_example_gets_zero_point_4_per_tensor_and_per_channel(run):
    # 3 bits asymmetric: grid [0, 7], range [-3, 3], scale 6/7, zero point round(3 / (6/7)) = round(3.5) = 4
    # (half to even). Codes: round(w / (6/7)) + 4 = round([3.5, -3.5, 7/6, 7/3]) + 4 = [4, -4, 1, 2] + 4
    # = [8, 0, 5, 6], clipped to [7, 0, 5, 6].
    w = jnp.asarray(HALF_STEP_KERNEL)
    scale_ref = np.float32(6.0) / np.float32(7.0)  # the correctly rounded float32 6/7
    for axis in (None, -1):
        scale, zp, codes, values = run(w, 3, False, axis)
        where = "per tensor" if axis is None else "per channel"
        np.testing.assert_array_equal(np.asarray(zp).reshape(-1), 4.0, err_msg=f"zero point {where}")
        np.testing.assert_array_equal(codes, np.tile([[7.0], [0.0], [5.0], [6.0]], (1, 2)), err_msg=where)
        np.testing.assert_array_equal(np.asarray(scale).reshape(-1), scale_ref, err_msg=f"scale {where}")
        np.testing.assert_array_equal(values, (np.tile([[3.0], [-4.0], [1.0], [2.0]], (1, 2)) * scale_ref)
                                      .astype(np.float32))


def test_the_half_step_example_through_the_quantize_transform_eager_and_jitted():
    params = {"Dense_0": {"kernel": jnp.asarray(HALF_STEP_KERNEL)}}
    results = []
    for per_channel in (False, True):
        t = quantize(".*kernel", "uniform", 3, symmetric=False, per_channel=per_channel)
        trainable, state = t.init(params)
        _, jitted = jax.jit(t.update)(trainable, state, trainable, 0)
        for s in (state, jitted):
            np.testing.assert_array_equal(np.asarray(s["Dense_0/kernel"]["zero_point"]).reshape(-1), 4.0)
            results.append(np.asarray(t.apply(trainable, s)["Dense_0"]["kernel"]))
            results.append(np.asarray(jax.jit(t.apply)(trainable, s)["Dense_0"]["kernel"]))
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def _numpy_affine(col, bits, symmetric):
    """The float32 IEEE formulas in numpy, for one column: (scale, zero point, codes)."""
    f = np.float32
    if symmetric:
        qmax = f(2 ** (bits - 1) - 1)
        qmin = -qmax
        scale = np.maximum(np.abs(col.min()), np.abs(col.max())) / qmax
        zp = f(0)
    else:
        qmin, qmax = f(0), f(2 ** bits - 1)
        lo, hi = np.minimum(col.min(), f(0)), np.maximum(col.max(), f(0))
        scale = (hi - lo) / (qmax - qmin)
        zp = np.clip(np.round(qmin - lo / (scale if scale > 0 else f(1))), qmin, qmax)
    scale = scale if scale > 0 else f(1)
    return f(scale), f(zp), np.clip(np.round(col / scale) + zp, qmin, qmax).astype(np.float32)


def _columns(rng, rows, count):
    """Random columns: half of them small integers times a power of two (exact half steps abound), the rest normal."""
    ints = rng.integers(-8, 9, size=(rows, count // 2)).astype(np.float32)
    ints *= np.float32(2.0) ** rng.integers(-4, 3, size=(1, count // 2)).astype(np.float32)
    # Constructed half steps: ranges [-a, a] give zero point round(qmax / 2 + ...) exactly halfway at odd qmax.
    ints[0, :8], ints[1, :8] = np.arange(1, 9), -np.arange(1, 9)
    normal = rng.standard_normal((rows, count - count // 2)).astype(np.float32)
    return np.concatenate([ints, normal], axis=1)


def _exact_half_steps(col, bits, symmetric) -> int:
    """How many of the column's values (and its zero point) fall exactly halfway between two integers, in exact
    arithmetic with the exact scale: the cases a one-ulp error in a division rounds the other way."""
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2 ** bits - 1
    lo, hi = Fraction(min(float(col.min()), 0.0)), Fraction(max(float(col.max()), 0.0))
    width = max(-lo, hi) if symmetric else hi - lo  # scale = width / qmax
    if width == 0:
        return 0
    steps = [Fraction(float(v)) * qmax / width for v in col] + ([] if symmetric else [-lo * qmax / width])
    return sum(1 for r in steps if (2 * r).denominator == 1 and (2 * r).numerator % 2)


@pytest.mark.parametrize("jitted", [False, True], ids=["eager", "jit"])
def test_per_channel_codes_of_every_column_equal_its_per_tensor_codes_alone(jitted):
    rng = np.random.default_rng(16)
    run = _affine_jit if jitted else _affine
    w = _columns(rng, 12, 64)
    half_steps = 0
    for bits in (2, 3, 4, 5, 8):
        for symmetric in (False, True):
            scale_c, zp_c, codes_c, values_c = (np.asarray(a) for a in run(jnp.asarray(w), bits, symmetric, -1))
            for j in range(w.shape[1]):
                col = w[:, j:j + 1]
                scale_t, zp_t, codes_t, values_t = (np.asarray(a) for a in run(jnp.asarray(col), bits, symmetric,
                                                                             None))
                where = f"column {j}, {bits} bits, symmetric={symmetric}, jit={jitted}"
                np.testing.assert_array_equal(scale_c[:, j], scale_t[:, 0], err_msg=where)
                np.testing.assert_array_equal(zp_c[:, j], zp_t[:, 0], err_msg=where)
                np.testing.assert_array_equal(codes_c[:, j], codes_t[:, 0], err_msg=where)
                np.testing.assert_array_equal(values_c[:, j], values_t[:, 0], err_msg=where)
                # ... and both are numpy's float32 formula (correctly rounded divisions).
                scale_n, zp_n, codes_n = _numpy_affine(w[:, j], bits, symmetric)
                np.testing.assert_array_equal(scale_t.reshape(-1), scale_n, err_msg=where)
                np.testing.assert_array_equal(zp_t.reshape(-1), zp_n, err_msg=where)
                np.testing.assert_array_equal(codes_t[:, 0], codes_n, err_msg=where)
                half_steps += _exact_half_steps(w[:, j], bits, symmetric)
    assert half_steps > 50  # the integer columns put many values exactly halfway between two codes


def test_int8_symmetric_codes_per_channel_equal_per_tensor_of_each_channel():
    int8 = importlib.import_module("compression.int8_inference")
    rng = np.random.default_rng(3)
    w = _columns(rng, 16, 32)
    codes_c, scale_c = int8.quantize_symmetric_int8(jnp.asarray(w), axis=-1)
    for j in range(w.shape[1]):
        codes_t, scale_t = int8.quantize_symmetric_int8(jnp.asarray(w[:, j:j + 1]))
        np.testing.assert_array_equal(np.asarray(codes_c)[:, j], np.asarray(codes_t)[:, 0])
        np.testing.assert_array_equal(np.asarray(scale_c)[:, j], np.asarray(scale_t)[:, 0])
        _, _, codes_n = _numpy_affine(w[:, j], 8, True)
        np.testing.assert_array_equal(np.asarray(codes_t)[:, 0], codes_n)


# ------------------------------------------------------------------ 3. TWN per layer by default


TWN_KERNEL = np.array([[0.9, -0.1, 0.3],
                       [-1.2, 0.2, -0.4],
                       [0.5, -0.05, 2.0],
                       [0.1, 0.15, -0.6]], np.float32)


def test_ternary_defaults_to_twn_per_layer_delta_and_alpha():
    # mean|W| = 6.5 / 12, delta = 0.7 * 6.5 / 12 = 0.37917; |W| > delta: .9 1.2 .4 .5 2 .6 -> alpha = 5.6 / 6.
    # (Per output channel, column 1 would keep .1 .2 .15 with its own delta 0.0875; per layer it is all 0.)
    a = np.abs(TWN_KERNEL).astype(np.float64)
    delta = 0.7 * a.mean()
    alpha = a[a > delta].mean()
    np.testing.assert_allclose([delta, alpha], [0.7 * 6.5 / 12, 5.6 / 6], rtol=1e-7)  # float32 inputs
    expected = np.where(a > delta, alpha * np.sign(TWN_KERNEL), 0.0)
    np.testing.assert_allclose(expected, np.array([[1, 0, 0], [-1, 0, -1], [1, 0, 1], [0, 0, -1]]) * 5.6 / 6)

    t = quantize(".*kernel", "ternary")
    trainable, state = t.init({"Dense_0": {"kernel": jnp.asarray(TWN_KERNEL)}})
    s = state["Dense_0/kernel"]
    assert np.size(s["delta"]) == 1 and np.size(s["positive"]) == 1 and np.size(s["negative"]) == 1
    np.testing.assert_allclose(np.asarray(s["delta"]).reshape(()), delta, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(s["positive"]).reshape(()), alpha, rtol=1e-6)
    out = np.asarray(t.apply(trainable, state)["Dense_0"]["kernel"])
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    np.testing.assert_array_equal(out != 0, a > delta)


def test_ternary_per_channel_still_available_when_asked():
    t = quantize(".*kernel", "ternary", per_channel=True)
    _, state = t.init({"Dense_0": {"kernel": jnp.asarray(TWN_KERNEL)}})
    assert np.shape(state["Dense_0/kernel"]["delta"]) == (1, 3)


def test_the_committed_twn_config_sets_per_layer_explicitly():
    config = importlib.import_module("configs.li2016_twn_lenet5").get_config("twn_quick")
    (stage,) = config.compression.stages
    assert stage["scheme"] == "ternary" and stage["per_channel"] is False


@pytest.mark.parametrize("settings, message", [
    ({"scope": "layer", "nm_axis": 2}, r"prune\.nm_axis is read only with scope='nm' \(got nm_axis=2"),
    ({"scope": "nm", "n": 2, "m": 4, "nm_axis": 1.5}, r"prune\.nm_axis must be an integer \(got 1\.5\)"),
    ({"scope": "nm", "n": 2, "m": 4, "nm_axis": True}, r"prune\.nm_axis must be an integer \(got True\)"),
    ({"scope": "nm", "n": 2, "m": 4, "nm_axis": [("a", 1, 2)]}, r"prune\.nm_axis rule .* must be a \(path regex, axis\)"),
    ({"scope": "nm", "n": 2, "m": 4, "nm_axis": [("(", 1)]}, r"prune\.nm_axis rule .*not a valid regular expression"),
    ({"scope": "nm", "n": 2, "m": 4, "nm_axis": [(".*", "2")]}, r"prune\.nm_axis rule .* must be an integer"),
])
def test_bad_nm_axis_settings_are_refused_when_built(settings, message):
    with pytest.raises(ValueError, match=message):
        prune(".*kernel", 0.5, **settings)


def test_an_nm_axis_out_of_range_is_refused_at_init_naming_the_path():
    t = prune(".*kernel", 0.5, scope="nm", n=2, m=4, nm_axis=3)
    with pytest.raises(ValueError, match=r"prune\.nm_axis 3 .* out of range for Dense_0/kernel of shape \(8, 4\)"):
        t.init({"Dense_0": {"kernel": jnp.ones((8, 4))}})


def test_quantize_per_channel_must_be_a_bool_or_unset():
    with pytest.raises(ValueError, match=r"quantize\.per_channel must be True, False or None"):
        quantize(".*kernel", "uniform", 8, per_channel="yes")
