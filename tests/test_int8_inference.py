"""Int8 inference: exact codes and int32 sums, agreement with the dequantized path, the model path, the jaxpr."""
import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest

from compression import int8_inference as i8
from experiments import models


def _dot_generals(jaxpr):
    """Every dot_general equation of a jaxpr, sub-jaxprs (pjit, custom_vjp, ...) included."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            found.append(eqn)
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            found += _dot_generals(getattr(sub, "jaxpr", sub))
    return found


def _signature(eqn):
    return tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype)


# ---------------------------------------------------------------- exact integers


def test_symmetric_int8_codes_and_scales_by_hand():
    x = jnp.array([[-2.54, 1.0, 0.3, 0.0], [0.1, 0.0, -0.02, 2.0]])
    codes, scale = i8.quantize_symmetric_int8(x)  # per tensor: max|x| = 2.54, scale 0.02
    assert codes.dtype == jnp.int8 and scale.dtype == jnp.float32 and scale.shape == (1, 1)
    np.testing.assert_allclose(scale, [[0.02]], rtol=1e-6)
    np.testing.assert_array_equal(codes, [[-127, 50, 15, 0], [5, 0, -1, 100]])
    # Per output channel (axis -1 of an (in, out) kernel): column 0 has scale 1/8 exactly, column 2 is
    # all zero and gets scale 1 with zero codes.
    w = jnp.array([[127 / 8, 0.3, 0.0], [-8.0, 2.0, 0.0], [3 / 8, -1.2, 0.0], [1 / 8, 0.0, 0.0]])
    w_codes, w_scale = i8.quantize_symmetric_int8(w, axis=-1)
    assert w_scale.shape == (1, 3)
    np.testing.assert_allclose(w_scale, [[0.125, 2 / 127, 1.0]], rtol=1e-6)
    np.testing.assert_array_equal(w_codes, [[127, 19, 0], [-64, 127, 0], [3, -76, 0], [1, 0, 0]])
    # The grid is narrow: nothing reaches -128, and codes never exceed the range.
    assert int(jnp.min(i8.quantize_symmetric_int8(jnp.array([-1.0, 1.0]))[0])) == -127


def test_int8_matmul_is_the_exact_integer_product():
    x_codes = jnp.array([[-127, 50, 15, 0], [5, 0, -1, 100]], jnp.int8)
    w_codes = jnp.array([[127, 19, 0], [-64, 127, 0], [3, -76, 0], [1, 0, 0]], jnp.int8)
    acc = i8.int8_matmul(x_codes, w_codes)
    assert acc.dtype == jnp.int32
    # row 0: -127*127 + 50*(-64) + 15*3 = -19284;  -127*19 + 50*127 + 15*(-76) = 2797
    # row 1: 5*127 - 1*3 + 100*1 = 732;            5*19 + (-1)*(-76) = 171
    np.testing.assert_array_equal(acc, [[-19284, 2797, 0], [732, 171, 0]])
    # A sum past int16 and past float32's 2^24 integers stays exact: 127 * (127 * 2049 + 126 * 2048).
    k = 4097
    big = i8.int8_matmul(jnp.full((1, k), 127, jnp.int8), jnp.where(jnp.arange(k) % 2 == 0, 127, 126)
                         .astype(jnp.int8)[:, None])
    assert int(big[0, 0]) == 127 * (127 * 2049 + 126 * 2048) == 65_820_417
    with pytest.raises(TypeError, match="int8"):
        i8.int8_matmul(x_codes.astype(jnp.float32), w_codes)


def test_int8_matmul_jaxpr_has_int8_operands_and_int32_accumulation():
    x_codes = jnp.zeros((2, 5, 8), jnp.int8)  # leading axes are kept, like a Dense on (batch, time, in)
    w_codes = jnp.zeros((8, 3), jnp.int8)
    dots = _dot_generals(jax.make_jaxpr(i8.int8_matmul)(x_codes, w_codes).jaxpr)
    assert [_signature(d) for d in dots] == [(("int8", "int8"), "int32")]
    assert dots[0].params["dimension_numbers"] == (((2,), (0,)), ((), ()))
    assert i8.int8_matmul(x_codes, w_codes).shape == (2, 5, 3)
    # int8_dense's only matmul is that one: no float matmul hides in the inference path.
    dense = jax.make_jaxpr(i8.int8_dense)(jnp.zeros((4, 8)), w_codes, jnp.ones((1, 3)), jnp.zeros(3))
    assert [_signature(d) for d in _dot_generals(dense.jaxpr)] == [(("int8", "int8"), "int32")]


# ---------------------------------------------------------------- one dense layer


def _random_layer(seed, batch=16, k=784, n=300):
    # numpy draws: jax.random would compile a threefry kernel for every shape, the bulk of the runtime.
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((batch, k)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((k, n)) * 0.05, jnp.float32)
    b = jnp.asarray(rng.standard_normal(n) * 0.1, jnp.float32)
    w_codes, w_scale = i8.quantize_symmetric_int8(w, axis=-1)
    return x, w, b, w_codes, w_scale


@jax.jit
def _both_paths(x, w_codes, w_scale, b, x_scale):
    # One compiled program instead of many small eager ones (the test's runtime is compilation).
    return (i8.int8_dense(x, w_codes, w_scale, b, x_scale), i8.dequantized_dense(x, w_codes, w_scale, b, x_scale),
            i8.agreement_tolerance(x, w_codes, w_scale, b, x_scale))


@pytest.mark.parametrize("seed, relu_input, given_scale", [(0, False, False), (1, True, False), (2, False, True)])
def test_int8_dense_agrees_with_dequantized_dense_within_the_stated_tolerance(seed, relu_input, given_scale):
    x, w, b, w_codes, w_scale = _random_layer(seed)
    x = jax.nn.relu(x) if relu_input else x
    x_scale = jnp.float32(0.03) if given_scale else None  # a static scale: clips the rare |x| > 3.81
    y_int8, y_ref, tol = _both_paths(x, w_codes, w_scale, b, x_scale)
    assert y_int8.dtype == jnp.float32 and y_int8.shape == (16, 300)
    assert bool(jnp.all(jnp.abs(y_int8 - y_ref) <= tol)), float(jnp.max(jnp.abs(y_int8 - y_ref) / tol))
    # The bound is (784 + 8) 2^-24 ~ 4.7e-5 of the summed term magnitudes; it is not vacuous: the paths
    # differ (float rounding), and both are an int8 approximation, ~1% from the float layer.
    assert float(jnp.max(tol)) < 1e-3 * float(jnp.max(jnp.abs(y_ref)))
    y_float = x @ w + b
    assert 1e-3 < float(jnp.linalg.norm(y_int8 - y_float) / jnp.linalg.norm(y_float)) < 0.05


def test_int8_dense_is_exactly_the_integer_sum_rescaled():
    x, _, b, w_codes, w_scale = _random_layer(3, batch=8, k=256, n=64)
    x_codes, x_scale = i8.quantize_symmetric_int8(x)  # the per-tensor dynamic quantization int8_dense does
    acc = np.asarray(x_codes, np.int64) @ np.asarray(w_codes, np.int64)
    np.testing.assert_array_equal(i8.int8_matmul(x_codes, w_codes), acc)
    scales = np.float32(np.asarray(x_scale).reshape(())) * np.asarray(w_scale, np.float32).reshape(-1)
    expected = acc.astype(np.float32) * scales + np.asarray(b, np.float32)
    np.testing.assert_array_equal(i8.int8_dense(x, w_codes, w_scale, b), expected)
    # Without a bias, the rescaled sum alone.
    np.testing.assert_array_equal(i8.int8_dense(x, w_codes, w_scale), acc.astype(np.float32) * scales)


# ---------------------------------------------------------------- LeNet-300-100


def _random_model(model, batch, seed):
    """(params, uint8 images) drawn with numpy: kernels LeCun-normal (Flax's default), small random biases."""
    rng = np.random.default_rng(seed)
    images = jnp.asarray(rng.integers(0, 256, (batch, 28, 28, 1)), jnp.uint8)
    shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]

    def draw(path, leaf):
        if path[-1].key == "kernel":
            return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1])), jnp.float32)
        return jnp.asarray(rng.standard_normal(leaf.shape) * 0.01, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes), images


@pytest.fixture(scope="module")
def lenet300():
    model = models.MLP(hidden=(300, 100))
    params, images = _random_model(model, 16, seed=0)
    return model, params, images


def test_every_dense_of_the_model_runs_int8_and_agrees_with_its_reference(lenet300):
    model, params, images = lenet300
    seen = []

    def run(p, x):
        within = []

        def checked(h, w_codes, w_scale, bias):
            # The same input to both paths: the rigorous per-layer statement, inside the running model.
            y_int8 = i8.int8_dense(h, w_codes, w_scale, bias)
            y_ref = i8.dequantized_dense(h, w_codes, w_scale, bias)
            seen.append((w_codes.shape, w_codes.dtype, w_scale.shape))
            within.append(jnp.all(jnp.abs(y_int8 - y_ref) <= i8.agreement_tolerance(h, w_codes, w_scale, bias)))
            return y_int8

        return models.apply_model_replacing_dense(model, p, x, checked), jnp.stack(within)

    logits, within = jax.jit(run)(params, images)
    assert seen == [((784, 300), jnp.int8, (1, 300)), ((300, 100), jnp.int8, (1, 100)),
                    ((100, 10), jnp.int8, (1, 10))]
    np.testing.assert_array_equal(within, [True, True, True])
    np.testing.assert_allclose(logits, jax.jit(lambda p, x: models.apply_model_int8(model, p, x))(params, images),
                               rtol=1e-6, atol=1e-6)
    # Traced, the whole model's matmuls are the three int8 x int8 -> int32 ones.
    jaxpr = jax.make_jaxpr(lambda p, x: models.apply_model_int8(model, p, x))(params, images)
    assert [_signature(d) for d in _dot_generals(jaxpr.jaxpr)] == [(("int8", "int8"), "int32")] * 3


def test_int8_model_agrees_with_the_dequantized_model_and_stays_close_to_float(lenet300):
    model, params, images = lenet300
    y_int8 = jax.jit(lambda p, x: models.apply_model_int8(model, p, x))(params, images)
    y_ref = jax.jit(lambda p, x: models.apply_model_dequantized(model, p, x))(params, images)
    y_float = jax.jit(lambda p, x: models.apply_model(model, p, x, train=False))(params, images)
    assert y_int8.shape == y_ref.shape == (16, 10)
    # Per layer the paths agree to float rounding (the test above). Through the model a hidden value
    # lying within ~1e-4 of a rounding boundary may round to neighbouring codes in the two runs; such a
    # flip moves that example's logits by about one activation step (~1e-3 of max|logit|); random draws
    # show one in ~3.5% of batches of 16 (7 of 200, never two). So every example must agree to 1e-4 of
    # max|logit| except at most two, and those still to within a few steps (2e-2; 6.6e-3 at most seen).
    y_max = float(jnp.max(jnp.abs(y_ref)))
    per_example = np.asarray(jnp.max(jnp.abs(y_int8 - y_ref), axis=-1))
    assert int(np.sum(per_example <= 1e-4 * y_max)) >= 14, per_example / y_max
    assert float(np.max(per_example)) <= 2e-2 * y_max
    # Against the float model: int8 noise of ~1.5% of the logits' norm (<= 3.4% over 200 random
    # draws of params and images), and the predicted class kept on at least 12 of 16 examples (random
    # logits have small top-2 margins; >= 13 over those 200 draws, 16 on most).
    assert float(jnp.linalg.norm(y_int8 - y_float) / jnp.linalg.norm(y_float)) < 0.05
    assert int(jnp.sum(jnp.argmax(y_int8, -1) == jnp.argmax(y_float, -1))) >= 12


def test_only_dense_is_replaced_conv_runs_in_float():
    model = models.LeNet5(conv_features=(4, 8), dense_features=32)
    params, images = _random_model(model, 4, seed=1)
    int8 = lambda p, x: models.apply_model_int8(model, p, x)
    jaxpr = jax.make_jaxpr(int8)(params, images)
    # The two Dense layers are int8 x int8 -> int32; the two convolutions stay float32.
    assert [_signature(d) for d in _dot_generals(jaxpr.jaxpr)] == [(("int8", "int8"), "int32")] * 2
    convs = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "conv_general_dilated"]
    assert [_signature(c) for c in convs] == [(("float32", "float32"), "float32")] * 2
    y_int8 = jax.jit(int8)(params, images)
    y_ref = jax.jit(lambda p, x: models.apply_model_dequantized(model, p, x))(params, images)
    y_float = jax.jit(lambda p, x: models.apply_model(model, p, x, train=False))(params, images)
    np.testing.assert_allclose(y_int8, y_ref, atol=1e-4 * float(jnp.max(jnp.abs(y_ref))))
    assert float(jnp.linalg.norm(y_int8 - y_float) / jnp.linalg.norm(y_float)) < 0.05


def test_the_driver_reports_the_int8_kernel_accuracy_beside_the_fake_quantized_one(tmp_path):
    from experiments import train
    from tests.helpers import tiny_config

    config = tiny_config(num_steps=4)
    config.compression.stages = [{"technique": "quantize", "select": ".*kernel", "bits": 8}]
    config.export.int8_eval = True
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    metrics = results["metrics"]
    # The export's 8-bit per-channel weights are the int8 path's codes; only the dynamic per-tensor
    # input quantization differs, so the two evaluations agree closely.
    assert abs(metrics["int8_test_loss"] - metrics["test_loss"]) < 0.02
    assert abs(metrics["int8_test_accuracy"] - metrics["test_accuracy"]) <= 3 / 96
