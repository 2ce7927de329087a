"""The packed codec: codes laid end to end at their bit-width, exact decoding, and quantized exports whose
payload is the codes' bits plus the scales."""
import math

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from compression import export, registry
from compression.export import Coded
from compression.packed_export import decode_packed, encode_packed, pack_bits, unpack_bits
from compression.transform import export_model

LENGTHS = (0, 1, 7, 9, 13, 1001)


def _decode(tensors, record, values):
    return decode_packed(tensors, dict(record, shape=list(values.shape), dtype="float32"))


# ------------------------------------------------------------ bit packing


@pytest.mark.parametrize("bits", range(1, 17))
def test_codes_of_every_width_round_trip_in_exactly_ceil_n_bits_over_8_bytes(bits):
    rng = np.random.default_rng(bits)
    for n in LENGTHS:
        codes = rng.integers(0, 2 ** bits, size=n)
        if n:
            codes[0] = 2 ** bits - 1  # the largest code fits
        packed = pack_bits(codes, bits)
        assert packed.dtype == np.uint8
        assert packed.size == math.ceil(n * bits / 8)
        back = unpack_bits(packed, bits, n)
        np.testing.assert_array_equal(back, codes)


def test_codes_are_laid_out_little_endian_bit_by_bit():
    # 1 = bits (1, 0), 2 = (0, 1), 3 = (1, 1), low bit first: the stream 1 0 0 1 1 1 0 0, bit i worth 2^i:
    # 1 + 8 + 16 + 32 = 57 = 0b00111001.
    np.testing.assert_array_equal(pack_bits(np.array([1, 2, 3]), 2), [0b00111001])
    # 9-bit codes 1 and 1: bits 0 and 9 set in 18 bits -> bytes [1, 2, 0].
    np.testing.assert_array_equal(pack_bits(np.array([1, 1]), 9), [1, 2, 0])
    # 3-bit codes 5, 6, 7: stream 101 011 111 (low bit first) -> byte 0 = bits 1 0 1 0 1 1 1 1
    # = 1 + 4 + 16 + 32 + 64 + 128 = 245, byte 1 = the ninth bit, 1.
    np.testing.assert_array_equal(pack_bits(np.array([5, 6, 7]), 3), [245, 1])
    np.testing.assert_array_equal(unpack_bits(np.array([245, 1], np.uint8), 3, 3), [5, 6, 7])


def test_a_code_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="code 4 does not fit in 2 bits"):
        pack_bits(np.array([0, 4, 1]), 2)
    with pytest.raises(ValueError, match="does not fit in 16 bits"):
        pack_bits(np.array([65536]), 16)
    with pytest.raises(ValueError, match="does not fit in 3 bits"):
        pack_bits(np.array([-1]), 3)  # a negative code is not an unsigned code


# ------------------------------------------------------------ the codec


def _affine_case(symmetric):
    """A (5, 2) kernel of 3-bit integer levels (no zero values), per-channel scales, its codes (level - qmin)."""
    scale = np.array([[0.5, 0.25]], np.float32)
    if symmetric:
        qmin, zp = -3, np.zeros((1, 2), np.float32)
        q = np.array([[-3, 1], [2, -1], [3, 3], [-1, -2], [1, 2]])
    else:
        qmin, zp = 0, np.array([[1.0, 2.0]], np.float32)
        q = np.array([[0, 7], [2, 0], [7, 3], [5, 1], [3, 6]])  # never the zero point: no zero values
    values = ((q - zp) * scale).astype(np.float32)
    assert np.all(values != 0)
    return values, q - qmin, scale, zp, qmin


def test_affine_codes_decode_to_the_values_exactly_and_omit_a_zero_zero_point():
    values, codes, scale, zp, qmin = _affine_case(symmetric=True)
    tensors, record = encode_packed(values, codes=codes, bits=3, scale=scale, zero_point=zp, qmin=qmin)
    assert sorted(tensors) == ["codes", "scale"]
    assert tensors["codes"].nbytes == 4  # ceil(10 * 3 / 8)
    assert record == {"form": "affine", "bits": 3, "qmin": -3.0}
    back = _decode(tensors, record, values)
    assert back.dtype == np.float32
    assert np.array_equal(back, values)


def test_affine_codes_with_a_zero_point_store_it_and_decode_exactly():
    values, codes, scale, zp, qmin = _affine_case(symmetric=False)
    tensors, record = encode_packed(values, codes=codes, bits=3, scale=scale, zero_point=zp, qmin=qmin)
    assert sorted(tensors) == ["codes", "scale", "zero_point"]
    np.testing.assert_array_equal(tensors["zero_point"], [[1.0, 2.0]])
    assert np.array_equal(_decode(tensors, record, values), values)


def test_a_hand_written_affine_case_decodes_code_plus_qmin_minus_zero_point_times_scale():
    # codes [0, 3, 5] at 3 bits with qmin -3, zero point 1, scale 0.5: (c - 3 - 1) * 0.5 = [-2, -0.5, 0.5]
    values = np.array([-2.0, -0.5, 0.5], np.float32)
    tensors, record = encode_packed(values, codes=np.array([0, 3, 5]), bits=3, scale=np.float32(0.5),
                                    zero_point=np.float32(1.0), qmin=-3)
    assert np.array_equal(_decode(tensors, record, values), values)


def test_codebook_codes_decode_per_channel():
    # Binary, per channel: the codebook of channel c is [-a_c, a_c], shape (1, C, K) = (1, 3, 2).
    a = np.array([[0.5, 2.0, 1.0]], np.float32)
    codebook = np.stack([-a, a], -1)
    codes = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1]])
    values = np.where(codes == 1, a, -a).astype(np.float32)
    tensors, record = encode_packed(values, codes=codes, bits=1, codebook=codebook)
    assert tensors["codebook"].shape == (1, 3, 2)
    assert tensors["codes"].nbytes == 2  # ceil(12 / 8)
    assert record == {"form": "codebook", "bits": 1}
    assert np.array_equal(_decode(tensors, record, values), values)


def test_ternary_codebook_decodes_per_tensor():
    codebook = np.array([[[-0.75, 0.0, 1.25]]], np.float32)  # [-negative, 0, positive]
    codes = np.array([[2, 1, 0], [0, 2, 1]])
    values = np.array([[1.25, 0.0, -0.75], [-0.75, 1.25, 0.0]], np.float32)
    tensors, record = encode_packed(values, codes=codes, bits=2, codebook=codebook)
    assert np.array_equal(_decode(tensors, record, values), values)


def test_codes_that_do_not_decode_to_the_values_are_refused():
    values, codes, scale, zp, qmin = _affine_case(symmetric=True)
    off = values.copy()
    off[2, 1] += np.float32(1e-3)
    with pytest.raises(ValueError, match="do not decode to the quantized values"):
        encode_packed(off, codes=codes, bits=3, scale=scale, zero_point=zp, qmin=qmin)
    with pytest.raises(ValueError, match="do not decode to the quantized values"):
        encode_packed(values, codes=codes, bits=3, scale=scale * 2, zero_point=zp, qmin=qmin)
    with pytest.raises(ValueError, match=r"codes of shape \(10,\) for values of shape \(5, 2\)"):
        encode_packed(values, codes=codes.reshape(-1), bits=3, scale=scale, qmin=qmin)


def test_exactly_one_of_scale_and_codebook_is_required():
    values = np.array([0.0, 1.0], np.float32)
    codes = np.array([0, 1])
    with pytest.raises(ValueError, match="either scale .affine. or codebook"):
        encode_packed(values, codes=codes, bits=1)
    with pytest.raises(ValueError, match="either scale .affine. or codebook"):
        encode_packed(values, codes=codes, bits=1, scale=np.float32(1.0), codebook=np.array([0.0, 1.0]))


# ------------------------------------------------------------ through the export


def _coded_params():
    values, codes, scale, zp, qmin = _affine_case(symmetric=False)
    kernel = Coded(values, "packed", {"codes": codes, "bits": 3, "scale": scale, "zero_point": zp, "qmin": qmin})
    return {"Dense_0": {"kernel": kernel, "bias": np.array([0.5, -1.0], np.float32)}}, values


def test_a_coded_leaf_is_exported_with_its_own_codec_and_loads_back_exactly(tmp_path):
    params, values = _coded_params()
    path = str(tmp_path / "q.safetensors")
    size = export.export_params(path, params)
    back = export.load_params(path)
    assert np.array_equal(back["Dense_0"]["kernel"], values)
    assert np.array_equal(back["Dense_0"]["bias"], [0.5, -1.0])
    record = export.read_header(path)["params"]["Dense_0/kernel"]
    assert record["codec"] == "packed" and record["bits"] == 3 and record["shape"] == [5, 2]
    report = export.payload_report(path)
    # codes ceil(10 * 3 / 8) = 4 bytes, scale 2 float32 = 8, zero point 2 uint8 = 2, bias 2 float32 = 8.
    assert report["bytes_payload"] == 4 + 8 + 2 + 8
    stored = load_file(path)
    assert sorted(stored) == ["Dense_0/bias", "Dense_0/kernel:codes", "Dense_0/kernel:scale",
                              "Dense_0/kernel:zero_point"]
    assert report["bytes_payload"] == sum(t.nbytes for t in stored.values())
    assert report["bytes_payload"] + report["bytes_header"] == size


def test_naming_another_codec_for_a_coded_leaf_is_an_error_naming_the_path(tmp_path):
    params, _ = _coded_params()
    with pytest.raises(ValueError, match="Dense_0/kernel.*'packed'.*'sparse'"):
        export.export_params(str(tmp_path / "q.safetensors"), params, {"Dense_0/kernel": ("sparse", {})})


def test_an_inconsistent_coded_leaf_fails_the_export_naming_the_path(tmp_path):
    params, values = _coded_params()
    kernel = params["Dense_0"]["kernel"]
    params["Dense_0"]["kernel"] = Coded(values + np.float32(0.125), "packed", kernel.settings)
    with pytest.raises(ValueError, match="export of Dense_0/kernel with codec 'packed'"):
        export.export_params(str(tmp_path / "q.safetensors"), params)


# ------------------------------------------------------------ the quantize transform end to end

SHAPE = (20, 7)
SCHEMES = (
    [dict(scheme="uniform", bits=b, symmetric=s, per_channel=pc)
     for b in (8, 4, 3, 2) for s in (True, False) for pc in (True, False)]
    + [dict(scheme="fixed_point", bits=8, integer_bits=2, fraction_bits=5),
       dict(scheme="lsq", bits=4),
       dict(scheme="binary", binary_scale="mean"),
       dict(scheme="binary", binary_scale="none"),
       dict(scheme="ternary"),
       dict(scheme="ttq")])


def _kernel_bits_and_table_bytes(settings):
    """The kernel's code width and the bytes of its float32 scales and codebook entries and its uint8 zero
    points (whole numbers below 256 at these widths), from shapes."""
    channels = SHAPE[1]
    scheme = settings["scheme"]
    if scheme == "binary":
        tables = channels if settings["binary_scale"] == "mean" else 1  # 'none': scale 1, per tensor
        return 1, 4 * 2 * tables  # [-a, a]
    if scheme == "ternary":  # TWN: per layer by default (Li et al. 2016)
        return 2, 4 * 3 * (channels if settings.get("per_channel", False) else 1)  # [-a, 0, a]
    if scheme == "ttq":
        return 2, 4 * 3 * channels  # [-n, 0, p] per channel
    scales = 1 if scheme == "fixed_point" or not settings.get("per_channel", True) else channels
    has_zero_point = scheme == "uniform" and not settings["symmetric"]
    return settings["bits"], scales * (4 + (1 if has_zero_point else 0))


@pytest.mark.parametrize("settings", SCHEMES, ids=lambda s: "-".join(f"{v}" for v in s.values()))
def test_a_quantized_export_loads_back_the_effective_params_in_the_expected_bytes(settings, tmp_path):
    rng = np.random.default_rng(0)
    params = {"Dense_0": {"kernel": rng.standard_normal(SHAPE).astype(np.float32),
                          "bias": np.zeros(SHAPE[1], np.float32)}}
    t = registry.build("quantize", **settings)
    trainable, state = t.init(params)
    effective = jax.device_get(t.apply(trainable, state))
    exported, model_config = export_model(t, effective, jax.device_get(state), {})
    assert model_config == {}
    assert isinstance(exported["Dense_0"]["kernel"], Coded)
    path = str(tmp_path / "q.safetensors")
    export.export_params(path, exported)
    back = export.load_params(path)
    assert back["Dense_0"]["kernel"].dtype == np.float32
    assert np.array_equal(back["Dense_0"]["kernel"], np.asarray(effective["Dense_0"]["kernel"]))
    assert np.array_equal(back["Dense_0"]["bias"], params["Dense_0"]["bias"])
    # The kernel is really quantized: at most 2^bits distinct values per channel.
    kernel_bits = export.read_header(path)["params"]["Dense_0/kernel"]["bits"]
    distinct = max(len(np.unique(back["Dense_0"]["kernel"][:, c])) for c in range(SHAPE[1]))
    assert distinct <= 2 ** kernel_bits
    n = SHAPE[0] * SHAPE[1]
    bits, table = _kernel_bits_and_table_bytes(settings)
    dense_payload = math.ceil(n * bits / 8) + table + 4 * SHAPE[1]  # codes + scales + the float32 bias
    payload = export.payload_report(path)["bytes_payload"]
    index = export.read_header(path)["params"]["Dense_0/kernel"].get("index")
    if index is None:
        assert payload == dense_payload
    else:
        # Mostly zeros (2-bit symmetric rounds most weights to 0): the codes of the nonzeros only, plus their
        # positions, where that is smaller.
        nonzero = int(np.count_nonzero(back["Dense_0"]["kernel"]))
        assert payload < dense_payload
        if index == "bitmap":
            assert payload == math.ceil(n / 8) + math.ceil(nonzero * bits / 8) + table + 4 * SHAPE[1]


def test_unpacking_a_truncated_stream_is_an_error_not_silent_zeros():
    from compression.packed_export import pack_bits, unpack_bits

    packed = pack_bits(np.array([1, 2, 3, 4, 5], np.uint32), 3)  # 15 bits -> 2 bytes
    with pytest.raises(ValueError, match="truncated"):
        unpack_bits(packed[:1], 3, 5)


def test_binary_codes_with_pruned_zeros_take_the_sparse_layout_even_when_it_is_larger():
    # Quantize, then prune: signs with a few exact zeros. A 1-bit codebook [-a, a] cannot say 0, so
    # 'auto' must store the positions (a bitmap here, larger than the dense codes) to decode exactly.
    rng = np.random.default_rng(0)
    values = np.where(rng.random(256) < 0.5, 0.25, -0.25).astype(np.float32)
    values[::16] = 0.0
    codes = (values > 0).astype(np.int64)
    tensors, record = encode_packed(values, codes=codes, bits=1,
                                   codebook=np.array([-0.25, 0.25], np.float32))
    assert "index" in record
    decoded = decode_packed(tensors, {**record, "shape": [256], "dtype": "float32"})
    np.testing.assert_array_equal(decoded, values)


def test_scales_that_change_along_the_inputs_are_stored_once_per_run_of_equal_rows():
    # GPTQ's groups: 3 groups of 2 inputs, per output; then inputs 1 and 4 removed (a structural export),
    # which leaves runs of 1, 2 and 1 rows, still stored once each and decoded exactly.
    rng = np.random.default_rng(0)
    scale = np.repeat(rng.uniform(0.1, 1, (3, 4)), 2, axis=0).astype(np.float32)
    zero = np.repeat(rng.integers(0, 8, (3, 4)), 2, axis=0).astype(np.float32)
    codes = rng.integers(0, 8, (6, 4))
    values = ((codes - zero) * scale).astype(np.float32)
    for rows, starts in ((slice(None), [0, 2, 4]), ([0, 2, 3, 5], [0, 1, 3])):
        tensors, record = encode_packed(values[rows], codes=codes[rows], bits=3, scale=scale[rows],
                                        zero_point=zero[rows], row_axes=1)
        np.testing.assert_array_equal(tensors["row_starts"], starts)
        assert tensors["scale"].shape == (len(starts), 4)
        decoded = decode_packed(tensors, {**record, "shape": list(values[rows].shape), "dtype": "float32"})
        np.testing.assert_array_equal(decoded, values[rows])


def test_whole_zero_points_are_stored_in_the_smallest_unsigned_type_and_decode_exactly():
    scale = np.full((1, 4), 0.5, np.float32)
    for zero, dtype in ((np.array([[0, 3, 7, 255]], np.float32), np.uint8),
                        (np.array([[0, 3, 7, 300]], np.float32), np.uint16),
                        (np.array([[0, 3.5, 7, 1]], np.float32), np.float32)):
        codes = np.arange(8).reshape(2, 4) % 4
        values = ((codes - zero) * scale).astype(np.float32)
        tensors, record = encode_packed(values, codes=codes, bits=2, scale=scale, zero_point=zero)
        assert tensors["zero_point"].dtype == dtype
        decoded = decode_packed(tensors, {**record, "shape": [2, 4], "dtype": "float32"})
        np.testing.assert_array_equal(decoded, values)
