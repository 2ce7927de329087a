"""Tests for compression.accounting: parameter counts, the size contract and FLOP counting."""
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression.accounting import (bytes_dense_fp32, count_flops, params_nonzero, params_total,
                                    size_report)
from compression.export import export_params


def _tree_with_zeros():
    return {
        # kernel: 4 params, 2 nonzero; bias: 3 params, 0 nonzero.
        "Dense_0": {"kernel": np.array([[1.0, 0.0], [0.0, -2.0]], np.float32),
                    "bias": np.zeros(3, np.float32)},
        "scale": jnp.array([0.5, 1.0, -0.0], jnp.float32),  # 3 params, 2 nonzero (-0.0 is zero)
        "embed": np.array([1, 2, 3], np.int8),              # 3 params, 3 nonzero
    }


def test_params_total_counts_every_scalar():
    assert params_total(_tree_with_zeros()) == 4 + 3 + 3 + 3


def test_params_nonzero_counts_entries_not_exactly_zero():
    assert params_nonzero(_tree_with_zeros()) == 2 + 0 + 2 + 3


def test_bytes_dense_fp32_is_four_bytes_per_parameter_whatever_the_dtype():
    assert bytes_dense_fp32(_tree_with_zeros()) == 4 * 13


def test_size_report_follows_the_results_json_contract(tmp_path):
    params = _tree_with_zeros()
    path = str(tmp_path / "model.safetensors")
    export_params(path, params)
    report = size_report(params, path)
    on_disk = os.path.getsize(path)
    assert report["bytes_exported"] == on_disk
    assert report["params_total"] == 13
    assert report["params_nonzero"] == 7
    assert report["bytes_dense_fp32"] == 52
    assert report["bits_per_weight"] == pytest.approx(8 * on_disk / 13)
    assert report["ratio"] == pytest.approx(52 / on_disk)


# --- FLOPs ---------------------------------------------------------------------------------------
# Counting reads only shapes, so parameters come from jax.eval_shape (no eager init, fast).

def test_count_flops_dense_is_two_batch_in_out():
    batch, d_in, d_out = 4, 8, 16
    layer = nn.Dense(d_out)
    x = jnp.ones((batch, d_in))
    params = jax.eval_shape(layer.init, jax.random.key(0), x)
    assert count_flops(layer.apply, params, x) == 2 * batch * d_in * d_out


def test_count_flops_conv_valid_is_two_out_elems_kernel_window_cin():
    cin, cout, k = 3, 6, 5
    conv = nn.Conv(cout, (k, k), padding="VALID")
    x = jnp.ones((2, 12, 12, cin))
    params = jax.eval_shape(conv.init, jax.random.key(0), x)
    out_elems = 2 * 8 * 8 * cout  # 12 - 5 + 1 = 8
    assert count_flops(conv.apply, params, x) == 2 * out_elems * k * k * cin


@pytest.mark.parametrize("cin,groups", [(6, 3), (4, 4)], ids=["grouped", "depthwise"])
def test_count_flops_grouped_conv_counts_cin_over_groups_per_output(cin, groups):
    k = 3
    conv = nn.Conv(cin, (k, k), padding="VALID", feature_group_count=groups)
    x = jnp.ones((2, 7, 7, cin))
    params = jax.eval_shape(conv.init, jax.random.key(0), x)
    out_elems = 2 * 5 * 5 * cin
    assert count_flops(conv.apply, params, x) == 2 * out_elems * k * k * (cin // groups)


def test_count_flops_attention_einsum_counts_batch_heads_queries_keys_dim():
    b, q, k, h, d = 2, 5, 7, 3, 4
    query, key = jnp.ones((b, q, h, d)), jnp.ones((b, k, h, d))
    scores = lambda qq, kk: jnp.einsum("bqhd,bkhd->bhqk", qq, kk)
    assert count_flops(scores, query, key) == 2 * b * h * q * k * d


def test_count_flops_sees_inside_jit():
    w, x = jnp.ones((8, 16)), jnp.ones((4, 8))
    f = jax.jit(lambda w, x: jnp.tanh(x @ w))
    assert count_flops(f, w, x) == 2 * 4 * 8 * 16


def test_count_flops_multiplies_scan_body_by_its_length():
    length, batch, width = 5, 2, 8
    w = jnp.ones((width, width))

    def run(carry):
        def body(c, _):
            return jnp.tanh(c @ w), None
        return jax.lax.scan(body, carry, None, length=length)[0]

    assert count_flops(run, jnp.ones((batch, width))) == length * 2 * batch * width * width


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(10)(nn.relu(nn.Dense(512)(x)))


class _ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x))
        x = nn.relu(nn.Conv(16, (3, 3), padding="VALID", feature_group_count=16)(x))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


@pytest.mark.parametrize("model,shape", [(_MLP(), (32, 256)), (_ConvNet(), (4, 16, 16, 3))],
                         ids=["mlp", "convnet"])
def test_count_flops_within_five_percent_of_xla_cost_analysis(model, shape):
    # XLA also counts elementwise work (bias adds, ReLUs), which we leave out as the papers
    # do, so ours is a little lower; on these shapes the gap is under 2%.
    x = jnp.ones(shape)
    params = jax.eval_shape(model.init, jax.random.key(0), x)
    ours = count_flops(model.apply, params, x)
    cost = jax.jit(model.apply).lower(params, x).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older jax returned a list
    xla = cost["flops"]
    assert ours <= xla
    assert abs(ours - xla) / xla < 0.05
