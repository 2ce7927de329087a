"""The sparse codec: values + compact indices, exact round trip, smaller than dense when sparse."""
import numpy as np
import pytest

from compression import export
from compression.sparse_export import decode_sparse, encode_sparse


def _roundtrip(array, index):
    parts, record = encode_sparse(array, index)
    return parts, decode_sparse(parts, dict(record, shape=list(array.shape), dtype=str(array.dtype)))


@pytest.mark.parametrize("index", ["bitmap", "gaps8", "gaps16", "auto"])
@pytest.mark.parametrize("density", [0.0, 0.001, 0.08, 0.5, 1.0])
def test_sparse_codec_round_trips_exactly(index, density):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((300, 70)) * (rng.random((300, 70)) < density)).astype(np.float32)
    _, back = _roundtrip(a, index)
    np.testing.assert_array_equal(back.reshape(a.shape), a)


def test_gaps_longer_than_the_index_width_are_bridged_by_value_free_skips():
    a = np.zeros(600, np.float32)
    a[[3, 560]] = [1.5, -2.0]  # gaps 4 and 557 > 255: two skips of 255 (zero gaps), then 47
    parts, back = _roundtrip(a, "gaps8")
    assert parts["gaps"].dtype == np.uint8
    np.testing.assert_array_equal(parts["gaps"], [4, 0, 0, 47])
    np.testing.assert_array_equal(parts["values"], [1.5, -2.0])
    np.testing.assert_array_equal(back, a)
    # A gap of exactly two widths: one skip, then 255.
    b = np.zeros(600, np.float32)
    b[[0, 510]] = 1.0
    parts, back = _roundtrip(b, "gaps8")
    np.testing.assert_array_equal(parts["gaps"], [1, 0, 255])
    np.testing.assert_array_equal(back, b)


def test_an_earlier_versions_filler_zeros_decode_to_the_same_array():
    # Files written before the skips stored a filler zero value at every 255th position of a long gap.
    a = np.zeros(600, np.float32)
    a[[3, 560]] = [1.5, -2.0]
    old = {"values": np.array([1.5, 0.0, 0.0, -2.0], np.float32), "gaps": np.array([4, 255, 255, 47], np.uint8)}
    back = decode_sparse(old, {"index": "gaps8", "shape": [600], "dtype": "float32"})
    np.testing.assert_array_equal(back, a)


def test_bitmap_holds_one_bit_per_entry():
    a = np.array([0, 2, 0, 0, 0, 0, 0, 3, 1], np.float32)
    parts, _ = _roundtrip(a, "bitmap")
    np.testing.assert_array_equal(np.unpackbits(parts["bitmap"])[:9], [0, 1, 0, 0, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(parts["values"], [2, 3, 1])


def test_auto_picks_the_smallest_index_format():
    rng = np.random.default_rng(1)
    dense = rng.standard_normal(4096).astype(np.float32)
    sparse = dense * (rng.random(4096) < 0.02)
    assert encode_sparse(dense)[1]["index"] == "bitmap"
    assert encode_sparse(sparse)[1]["index"] == "gaps8"


def test_a_sparse_export_is_smaller_on_disk_and_loads_back_exactly(tmp_path):
    rng = np.random.default_rng(2)
    kernel = (rng.standard_normal((784, 300)) * (rng.random((784, 300)) < 0.08)).astype(np.float32)
    params = {"Dense_0": {"kernel": kernel, "bias": np.ones(300, np.float32)}}
    dense_bytes = export.export_params(str(tmp_path / "d.safetensors"), params)
    sparse_bytes = export.export_params(str(tmp_path / "s.safetensors"), params,
                                        {"Dense_0/kernel": ("sparse", {})})
    # 8% of 235,200 weights: 4 bytes of value + about 1 byte of gap each.
    assert sparse_bytes < 0.15 * dense_bytes
    back = export.load_params(str(tmp_path / "s.safetensors"))
    np.testing.assert_array_equal(back["Dense_0"]["kernel"], kernel)
    assert export.read_header(str(tmp_path / "s.safetensors"))["params"]["Dense_0/kernel"]["codec"] == "sparse"


def test_unknown_index_format_is_an_error():
    with pytest.raises(ValueError, match="'gaps4' is not one of"):
        encode_sparse(np.ones(3, np.float32), "gaps4")
