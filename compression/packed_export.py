"""Quantized weights stored as integer codes packed at their bit-width, with their scales.

Registers the export codec `packed`. Codes of any width from 1 to 16 bits
are laid end to end in a little-endian bit stream (`pack_bits`), so n codes
take ceil(n * bits / 8) bytes: 3-bit weights really take 3 bits. Two ways of
turning codes back into real values:

- affine (uniform, fixed point, LSQ): value = (code + qmin - zero_point) * scale,
  with `scale` (and a zero point unless it is 0 everywhere) stored as float32
  per tensor or per channel;
- codebook (binary, ternary): value = codebook[..., code], one small table
  per tensor or per channel ([-a, a] for binary in 1 bit; [-n, 0, p] for
  ternary in 2 bits).

Encoding checks that decoding gives back exactly the values it was handed
(the fake-quantized weights), so a loaded export predicts what the trained
model predicted.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np

from compression.export import Codec, register_codec


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integer codes (each < 2**bits) as a uint8 stream of ceil(n * bits / 8) bytes."""
    codes = np.asarray(codes).reshape(-1).astype(np.uint32)
    if codes.size and int(codes.max()) >> bits:
        raise ValueError(f"a code {int(codes.max())} does not fit in {bits} bits")
    planes = ((codes[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """The `count` codes of `bits` bits that `pack_bits` wrote, as uint32."""
    planes = np.unpackbits(np.asarray(packed, np.uint8), count=count * bits, bitorder="little")
    weights = (np.uint32(1) << np.arange(bits, dtype=np.uint32))
    return planes.reshape(count, bits).astype(np.uint32) @ weights


def _decode_values(codes: np.ndarray, record: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                   shape: tuple[int, ...]) -> np.ndarray:
    codes = codes.reshape(shape)
    if record["form"] == "affine":
        scale = tensors["scale"].astype(np.float32)
        zero_point = tensors["zero_point"].astype(np.float32) if "zero_point" in tensors else np.float32(0)
        q = codes.astype(np.float32) + np.float32(record["qmin"])
        return ((q - zero_point) * scale).astype(np.float32)
    codebook = tensors["codebook"].astype(np.float32)
    table = np.broadcast_to(codebook, shape + codebook.shape[-1:])
    return np.take_along_axis(table, codes.astype(np.int64)[..., None], axis=-1)[..., 0]


def encode_packed(values: np.ndarray, *, codes: np.ndarray, bits: int, scale: Optional[np.ndarray] = None,
                  zero_point: Optional[np.ndarray] = None, qmin: float = 0.0,
                  codebook: Optional[np.ndarray] = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Packed codes plus scale/zero point (affine) or codebook; checks they decode to `values` exactly."""
    values = np.asarray(values)
    codes = np.asarray(codes)
    if codes.shape != values.shape:
        raise ValueError(f"codes of shape {codes.shape} for values of shape {values.shape}")
    tensors = {"codes": pack_bits(codes, bits)}
    if (scale is None) == (codebook is None):
        raise ValueError("packed export needs either scale (affine) or codebook")
    if codebook is not None:
        record = {"form": "codebook", "bits": int(bits)}
        tensors["codebook"] = np.asarray(codebook, np.float32)
    else:
        record = {"form": "affine", "bits": int(bits), "qmin": float(qmin)}
        tensors["scale"] = np.asarray(scale, np.float32)
        if zero_point is not None and np.any(np.asarray(zero_point) != 0):
            tensors["zero_point"] = np.asarray(zero_point, np.float32)
    decoded = _decode_values(unpack_bits(tensors["codes"], bits, codes.size), record, tensors, values.shape)
    if not np.array_equal(decoded, values.astype(np.float32)):
        worst = float(np.max(np.abs(decoded - values)))
        raise ValueError(f"packed codes do not decode to the quantized values (max difference {worst}); "
                         f"the quantizer and the codec disagree")
    return tensors, record


def decode_packed(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> np.ndarray:
    """The float values back from packed codes."""
    shape = tuple(record["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    codes = unpack_bits(tensors["codes"], int(record["bits"]), count)
    return _decode_values(codes, record, tensors, shape).astype(record["dtype"])


register_codec("packed", Codec(encode_packed, decode_packed))
