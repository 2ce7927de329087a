"""Sparse weights stored as their nonzero values plus compact indices.

Registers the export codec `sparse`: the nonzero values in row-major order
and their positions, in whichever of two index formats is smaller for the
array at hand:

- `bitmap`: one bit per entry (np.packbits), n/8 bytes whatever the density;
- `gaps`: relative indices as in Deep Compression (Han, Mao, Dally 2016):
  the distance from the previous nonzero in `bits`-bit unsigned integers
  (uint8 or uint16). A gap that does not fit is bridged by zero entries in
  the index, each moving on 2**bits - 1 positions and storing no value
  (Deep Compression stores a filler zero weight there instead; a value-free
  skip costs no value and needs no code for zero, which k-means centroids
  lack). A real gap is never 0, so files written with filler values
  (earlier versions) decode by the same rule.

Decoding restores the dense array exactly (zeros included).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from compression.export import Codec, register_codec

INDEX_FORMATS = ("bitmap", "gaps8", "gaps16")


def _gap_encoding(flat: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """The nonzero values and their gaps, a gap above 2**bits - 1 preceded by value-free skips (zero gaps)."""
    limit = (1 << bits) - 1
    positions = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], positions]))
    # A gap g > limit takes ceil(g / limit) - 1 skips of `limit` each, then what remains (1..limit).
    skips = np.maximum(0, -(-gaps // limit) - 1)
    out_gaps = np.zeros(len(positions) + int(skips.sum()), np.uint8 if bits == 8 else np.uint16)
    out_gaps[np.cumsum(skips + 1) - 1] = gaps - skips * limit
    return flat[positions], out_gaps


def encode_sparse(array: np.ndarray, index: str = "auto", value_bits: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Values + indices of the nonzeros of `array`; `index` is 'bitmap', 'gaps8', 'gaps16' or 'auto' (smallest).

    `value_bits` (default: the array's own width) is what one stored value
    will cost, for choosing the smallest index when the values are later
    stored narrower (packed quantization codes).
    """
    flat = np.asarray(array).reshape(-1)
    candidates = {}
    if index in ("auto", "bitmap"):
        mask = flat != 0
        candidates["bitmap"] = ({"values": flat[mask], "bitmap": np.packbits(mask)}, {"index": "bitmap"})
    for bits in (8, 16):
        if index in ("auto", f"gaps{bits}"):
            values, gaps = _gap_encoding(flat, bits)
            candidates[f"gaps{bits}"] = ({"values": values, "gaps": gaps}, {"index": f"gaps{bits}"})
    if not candidates:
        raise ValueError(f"sparse export index {index!r} is not one of 'auto', 'bitmap', 'gaps8', 'gaps16'")
    bits = value_bits or 8 * flat.dtype.itemsize
    size = lambda parts: sum(p.nbytes for k, p in parts.items() if k != "values") + parts["values"].size * bits / 8
    return min(candidates.values(), key=lambda c: size(c[0]))


def stored_positions(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any], n: int) -> np.ndarray:
    """The flat positions whose values are stored, in order (with an earlier version's filler zeros)."""
    if record["index"] == "bitmap":
        return np.flatnonzero(np.unpackbits(tensors["bitmap"], count=n))
    gaps = np.asarray(tensors["gaps"])
    steps = gaps.astype(np.int64)
    ends = np.cumsum(np.where(steps == 0, np.iinfo(gaps.dtype).max, steps)) - 1
    return ends[steps != 0]


def decode_sparse(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> np.ndarray:
    """The dense array back from values + indices."""
    n = int(np.prod(record["shape"], dtype=np.int64))
    dense = np.zeros(n, dtype=record["dtype"])
    dense[stored_positions(tensors, record, n)] = tensors["values"]
    return dense


register_codec("sparse", Codec(encode_sparse, decode_sparse))
