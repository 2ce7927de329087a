"""Tests for compression.export: the safetensors artifact, its header and its codecs."""
import json
import os
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from compression.export import (METADATA_KEY, Codec, export_params, load_params, read_header,
                                register_codec)
from compression.selection import leaf_paths


def _params():
    rng = np.random.default_rng(0)
    return {
        "Dense_0": {"kernel": rng.normal(size=(4, 3)).astype(np.float32),
                    "bias": rng.normal(size=(3,)).astype(np.float32)},
        "head": {"kernel": rng.normal(size=(3, 2)).astype(np.float32)},
    }


def _flatten(tree):
    return dict(zip(leaf_paths(tree), jax.tree_util.tree_leaves(tree)))


def _safetensors_header_len(path):
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, jnp.bfloat16],
                         ids=["float32", "float16", "int8", "bfloat16"])
def test_dense_round_trip_is_bit_exact_and_keeps_dtype(tmp_path, dtype):
    values = np.array([[0.0, -1.5, 3.25], [1e-3, -0.0, 7.0]], np.float32)
    if np.issubdtype(np.dtype(dtype), np.integer):
        values = np.array([[-128, -1, 0], [1, 64, 127]])
    array = np.asarray(jnp.asarray(values).astype(dtype))
    path = str(tmp_path / "p.safetensors")
    export_params(path, {"layer": {"w": array}})
    loaded = load_params(path)["layer"]["w"]
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    # Compare the bytes, so -0.0 vs 0.0 and every low bit count.
    assert loaded.tobytes() == array.tobytes()


def test_load_restores_the_nested_structure(tmp_path):
    params = _params()
    path = str(tmp_path / "p.safetensors")
    export_params(path, params)
    loaded = load_params(path)
    assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
    for name, value in _flatten(params).items():
        np.testing.assert_array_equal(_flatten(loaded)[name], value)


def test_export_accepts_jax_arrays(tmp_path):
    params = jax.tree_util.tree_map(jnp.asarray, _params())
    path = str(tmp_path / "p.safetensors")
    export_params(path, params)
    np.testing.assert_array_equal(load_params(path)["head"]["kernel"], params["head"]["kernel"])


def test_header_records_codec_shape_dtype_parts_per_path_and_user_metadata(tmp_path):
    path = str(tmp_path / "p.safetensors")
    metadata = {"model": "mlp", "widths": [4, 3, 2]}
    export_params(path, _params(), metadata=metadata)
    header = read_header(path)
    assert header["version"] == 1
    assert header["metadata"] == metadata
    assert set(header["params"]) == {"Dense_0/bias", "Dense_0/kernel", "head/kernel"}
    assert header["params"]["Dense_0/kernel"] == {
        "codec": "dense", "shape": [4, 3], "dtype": "float32", "parts": [""]}
    assert header["params"]["Dense_0/bias"]["shape"] == [3]


def test_file_is_readable_by_plain_safetensors_with_tensor_names_equal_to_paths(tmp_path):
    params = _params()
    path = str(tmp_path / "p.safetensors")
    export_params(path, params)
    tensors = load_file(path)
    assert set(tensors) == set(leaf_paths(params))
    for name, value in _flatten(params).items():
        np.testing.assert_array_equal(tensors[name], value)


def test_bytes_on_disk_are_four_per_param_plus_a_small_header(tmp_path):
    params = _params()
    n_params = 12 + 3 + 6
    path = str(tmp_path / "p.safetensors")
    size = export_params(path, params)
    assert size == os.path.getsize(path)
    header_len = _safetensors_header_len(path)
    # safetensors layout: 8-byte header length, JSON header, then the raw tensor bytes.
    assert size == 8 + header_len + 4 * n_params
    assert 0 < size - 4 * n_params < 4096


# --- a codec registered by the test: int8 values + a float32 scale ------------------------------

def _encode_int8_scaled(array, bits=8):
    scale = np.float32(np.max(np.abs(array)) / (2 ** (bits - 1) - 1))
    values = np.clip(np.round(array / scale), -127, 127).astype(np.int8)
    return {"values": values, "scale": np.array([scale], np.float32)}, {"bits": bits}


def _decode_int8_scaled(tensors, record):
    assert record["bits"] == 8
    return (tensors["values"].astype(np.float32) * tensors["scale"][0]).astype(record["dtype"])


register_codec("test_int8_scaled", Codec(_encode_int8_scaled, _decode_int8_scaled))


def test_custom_codec_round_trips_within_its_quantization_step(tmp_path):
    params = _params()
    path = str(tmp_path / "p.safetensors")
    export_params(path, params, codecs={"Dense_0/kernel": ("test_int8_scaled", {"bits": 8})})
    loaded = load_params(path)
    kernel = params["Dense_0"]["kernel"]
    scale = np.max(np.abs(kernel)) / 127
    got = loaded["Dense_0"]["kernel"]
    assert got.dtype == np.float32 and got.shape == kernel.shape
    assert np.max(np.abs(got - kernel)) <= scale / 2 + 1e-7
    assert not np.array_equal(got, kernel)  # it really went through the codec
    np.testing.assert_array_equal(loaded["head"]["kernel"], params["head"]["kernel"])  # dense


def test_custom_codec_parts_are_path_colon_part_tensors_and_recorded_in_header(tmp_path):
    path = str(tmp_path / "p.safetensors")
    export_params(path, _params(), codecs={"Dense_0/kernel": ("test_int8_scaled", {})})
    tensors = load_file(path)
    assert set(tensors) == {"Dense_0/kernel:values", "Dense_0/kernel:scale",
                            "Dense_0/bias", "head/kernel"}
    assert tensors["Dense_0/kernel:values"].dtype == np.int8
    assert tensors["Dense_0/kernel:values"].shape == (4, 3)
    record = read_header(path)["params"]["Dense_0/kernel"]
    assert record == {"codec": "test_int8_scaled", "shape": [4, 3], "dtype": "float32",
                      "parts": ["scale", "values"], "bits": 8}


def test_custom_codec_export_is_smaller_than_dense(tmp_path):
    big = {"w": np.random.default_rng(1).normal(size=(64, 64)).astype(np.float32)}
    dense = export_params(str(tmp_path / "dense.safetensors"), big)
    packed = export_params(str(tmp_path / "int8.safetensors"), big,
                           codecs={"w": ("test_int8_scaled", {})})
    assert packed < dense / 3


def test_codec_for_a_nonexistent_path_raises(tmp_path):
    with pytest.raises(ValueError, match="do not exist: \\['Dense_9/kernel'\\]"):
        export_params(str(tmp_path / "p.safetensors"), _params(),
                      codecs={"Dense_9/kernel": ("dense", {})})


def test_unknown_codec_name_raises_listing_registered_codecs(tmp_path):
    with pytest.raises(ValueError) as err:
        export_params(str(tmp_path / "p.safetensors"), _params(),
                      codecs={"head/kernel": ("no_such_codec", {})})
    message = str(err.value)
    assert "'no_such_codec'" in message
    assert "'dense'" in message and "'test_int8_scaled'" in message


def test_registering_a_different_codec_under_a_taken_name_raises():
    with pytest.raises(ValueError, match="'dense' is already registered"):
        register_codec("dense", Codec(_encode_int8_scaled, _decode_int8_scaled))


def test_read_header_of_foreign_safetensors_file_raises_clear_error(tmp_path):
    path = str(tmp_path / "foreign.safetensors")
    save_file({"w": np.ones(2, np.float32)}, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"not a compression-lab export .*{METADATA_KEY}"):
        read_header(path)
    with pytest.raises(ValueError, match="not a compression-lab export"):
        load_params(path)


def test_metadata_is_one_json_string_under_the_lab_key(tmp_path):
    from safetensors import safe_open

    path = str(tmp_path / "p.safetensors")
    export_params(path, _params(), metadata={"note": "x"})
    with safe_open(path, framework="numpy") as f:
        raw = f.metadata()[METADATA_KEY]
    assert json.loads(raw)["metadata"] == {"note": "x"}


class _MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.relu(nn.Dense(8)(x)))


def test_export_load_predict_gives_identical_predictions(tmp_path):
    model = _MLP()
    x = jnp.asarray(np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32))
    params = model.init(jax.random.key(0), x)["params"]
    path = str(tmp_path / "mlp.safetensors")
    export_params(path, params)
    loaded = jax.tree_util.tree_map(jnp.asarray, load_params(path))
    apply = jax.jit(model.apply)
    np.testing.assert_array_equal(np.asarray(apply({"params": loaded}, x)),
                                  np.asarray(apply({"params": params}, x)))
