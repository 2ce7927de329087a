"""Quantized weights stored as integer codes packed at their bit-width, with their scales.

Registers the export codec `packed`. Codes of any width from 1 to 16 bits
are laid end to end in a little-endian bit stream (`pack_bits`), so n codes
take ceil(n * bits / 8) bytes: 3-bit weights really take 3 bits. Two ways of
turning codes back into real values:

- affine (uniform, fixed point, LSQ, GPTQ): value = (code + qmin - zero_point) * scale,
  with `scale` (and a zero point unless it is 0 everywhere) stored as float32
  per tensor or per channel (a zero point in the smallest unsigned
  integer type that holds it exactly); or, for scales that change along the inputs
  (GPTQ's groups of input columns, Frantar et al. 2023), given at the
  weight's full shape with `row_axes` (how many leading axes are the
  inputs) and stored once per run of equal input rows, with the rows where
  each run starts, so a structural export that removed some inputs (leaving
  runs of unequal length) still stores them exactly;
- codebook (binary, ternary): value = codebook[..., code], one small table
  per tensor or per channel ([-a, a] for binary in 1 bit; [-n, 0, p] for
  ternary in 2 bits).

Mostly-zero weights (pruned, then quantized: Deep Compression's pipeline,
Han, Mao, Dally 2016) are stored sparse when that is smaller: the packed
codes of the stored positions only, plus the positions as a bitmap or
relative indices (the `sparse` codec's index formats).

With `huffman=True` the codes and the relative indices are Huffman-coded
(`compression.huffman`, Deep Compression's last stage) and decoded back to
their fixed-width form before the values are read. Which layout is stored
is decided by its final size, after Huffman coding when that is asked for:
16-bit relative indices, twice a bitmap's size at fixed width for a layer
that keeps one weight in eight, entropy-code to about half of it.

Encoding checks that decoding gives back exactly the values it was handed
(the fake-quantized weights), so a loaded export predicts what the trained
model predicted.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from compression import huffman as huffman_coding, sparse_export
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
    packed = np.asarray(packed, np.uint8)
    if packed.size * 8 < count * bits:
        raise ValueError(f"{packed.size} bytes hold fewer than {count} codes of {bits} bits: the file is truncated")
    planes = np.unpackbits(packed, count=count * bits, bitorder="little")
    weights = (np.uint32(1) << np.arange(bits, dtype=np.uint32))
    return planes.reshape(count, bits).astype(np.uint32) @ weights


def _smallest_exact(values: np.ndarray) -> np.ndarray:
    """`values` as uint8 or uint16 when they are whole numbers in range (zero points are), else float32."""
    if np.all(values == np.round(values)) and values.min(initial=0) >= 0:
        for dtype in (np.uint8, np.uint16):
            if values.max(initial=0) <= np.iinfo(dtype).max:
                return values.astype(dtype)
    return values


def _as_rows(a: np.ndarray, row_axes: int) -> np.ndarray:
    # `a` as (inputs, rest): its first `row_axes` axes flattened into rows.
    return np.asarray(a).reshape(int(np.prod(np.shape(a)[:row_axes])), -1)


def row_runs(arrays: Sequence[np.ndarray], row_axes: int) -> np.ndarray:
    """Where the runs of equal rows start, rows being the first `row_axes` axes flattened, equal in every array."""
    change = None
    for a in arrays:
        rows = _as_rows(a, row_axes)
        differs = np.any(rows[1:] != rows[:-1], axis=1)
        change = differs if change is None else change | differs
    return np.concatenate([[0], np.flatnonzero(change) + 1]).astype(np.uint32)


def _expand_rows(compact: np.ndarray, starts: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = int(np.prod(shape)) // max(compact.shape[-1], 1)
    lengths = np.diff(np.append(starts.astype(np.int64), rows))
    return np.repeat(compact, lengths, axis=0).reshape(shape)


def _decode_values(codes: np.ndarray, record: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                   shape: tuple[int, ...]) -> np.ndarray:
    codes = codes.reshape(shape)
    if record["form"] == "affine":
        scale = tensors["scale"].astype(np.float32)
        zero_point = tensors["zero_point"].astype(np.float32) if "zero_point" in tensors else np.float32(0)
        if "row_starts" in tensors:
            scale = _expand_rows(scale, tensors["row_starts"], shape)
            if "zero_point" in tensors:
                zero_point = _expand_rows(zero_point, tensors["row_starts"], shape)
        q = codes.astype(np.float32) + np.float32(record["qmin"])
        return ((q - zero_point) * scale).astype(np.float32)
    codebook = tensors["codebook"].astype(np.float32)
    table = np.broadcast_to(codebook, shape + codebook.shape[-1:])
    return np.take_along_axis(table, codes.astype(np.int64)[..., None], axis=-1)[..., 0]


def encode_packed(values: np.ndarray, *, codes: np.ndarray, bits: int, scale: Optional[np.ndarray] = None,
                  zero_point: Optional[np.ndarray] = None, qmin: float = 0.0,
                  codebook: Optional[np.ndarray] = None, index: str = "auto",
                  huffman: bool = False, row_axes: int = 0) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Packed codes plus scale/zero point (affine) or codebook; checks they decode to `values` exactly.

    index: 'dense' packs every code; 'bitmap' / 'gaps8' / 'gaps16' pack only
    the nonzero values' codes plus their positions; 'auto' takes the smallest
    (with `huffman`, the smallest once Huffman-coded).
    huffman: the codes and the relative indices (gaps) are Huffman-coded
    instead of stored at their fixed width (Deep Compression's last stage;
    `compression.huffman`), each with its table of used symbols and code lengths.
    row_axes: scale and zero point are at the values' shape and change only
    along its first `row_axes` axes (the inputs); they are stored once per
    run of equal rows (`row_runs`).
    """
    values = np.asarray(values)
    codes = np.asarray(codes)
    if codes.shape != values.shape:
        raise ValueError(f"codes of shape {codes.shape} for values of shape {values.shape}")
    if index not in ("auto", "dense", "bitmap", "gaps8", "gaps16"):
        raise ValueError(f"packed export index {index!r} is not one of 'auto', 'dense', 'bitmap', 'gaps8', 'gaps16'")
    if (scale is None) == (codebook is None):
        raise ValueError("packed export needs either scale (affine) or codebook")
    row_tensors = {}
    if row_axes:
        if scale is None:
            raise ValueError("packed export row_axes applies to affine scales, not to a codebook")
        full = [np.broadcast_to(np.asarray(a, np.float32), values.shape)
                for a in (scale, np.zeros((), np.float32) if zero_point is None else zero_point)]
        starts = row_runs(full, row_axes)
        scale, zero_point = (_as_rows(a, row_axes)[starts] for a in full)
        row_tensors = {"row_starts": starts}

    def finish(tensors, sparse_record):
        if codebook is not None:
            record = {"form": "codebook", "bits": int(bits), **sparse_record}
            tensors["codebook"] = np.asarray(codebook, np.float32)
        else:
            record = {"form": "affine", "bits": int(bits), "qmin": float(qmin), **sparse_record}
            tensors.update(row_tensors)
            tensors["scale"] = np.asarray(scale, np.float32)
            if zero_point is not None and np.any(np.asarray(zero_point) != 0):
                tensors["zero_point"] = _smallest_exact(np.asarray(zero_point, np.float32))
        decoded = decode_packed(tensors, {**record, "shape": list(values.shape), "dtype": "float32"})
        return tensors, record, decoded

    exact = lambda option: np.array_equal(option[2], values.astype(np.float32))
    layout = finish({"codes": pack_bits(codes, bits)}, {})
    candidates = [layout]
    if index != "dense" and np.any(values == 0):
        sparse = []
        for fmt in (sparse_export.INDEX_FORMATS if index == "auto" else (index,)):
            parts, sparse_record = sparse_export.encode_sparse(values, fmt, bits)
            del parts["values"]
            positions = sparse_export.stored_positions(parts, sparse_record, values.size)
            sparse.append(finish({"codes": pack_bits(codes.reshape(-1)[positions], bits), **parts}, sparse_record))
        # The sparse layout when asked; otherwise the layouts that decode exactly. The codes may
        # not say zero (a binary codebook [-a, a], or clustered weights, after pruning): the sparse
        # layouts' positions then carry the zeros (a long gap's skips store no code), and the
        # dense layout is ruled out.
        if index != "auto":
            candidates = sparse
        else:
            candidates = [o for o in [layout] + sparse if exact(o)] or [layout]
    # Only a lone candidate can fail to decode exactly: a layout asked for, or no exact one.
    if not exact(candidates[0]):
        worst = float(np.max(np.abs(candidates[0][2] - values)))
        raise ValueError(f"packed codes do not decode to the quantized values (max difference {worst}); "
                         f"the quantizer and the codec disagree")
    # Each layout as it would be written, and the smallest of those. Under Huffman coding that is
    # the coded size: relative indices, wider than a bitmap at fixed width, entropy-code to far
    # less (Deep Compression stores them so).
    written = [_huffman_encode(tensors, record, values.size) if huffman else (tensors, record)
               for tensors, record, _ in candidates]
    return min(written, key=lambda w: sum(part.nbytes for part in w[0].values()))


HUFFMAN_PARTS = ("codes", "gaps")


def _stored_count(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any], count: int) -> int:
    # How many codes the layout stores: every entry, or the sparse layout's stored positions.
    return count if "index" not in record else len(sparse_export.stored_positions(tensors, record, count))


def _huffman_encode(tensors: dict, record: dict, count: int) -> tuple[dict, dict]:
    symbols = {"codes": unpack_bits(tensors["codes"], int(record["bits"]), _stored_count(tensors, record, count))}
    if "gaps" in tensors:
        symbols["gaps"] = tensors["gaps"]
    out, record = dict(tensors), {**record, "huffman": {}}
    for part, values in symbols.items():
        stream, used, lengths = huffman_coding.encode(values)
        out[part] = stream
        out[part + "_symbols"] = used.astype(np.uint32 if part == "codes" else values.dtype)
        out[part + "_lengths"] = lengths
        record["huffman"][part] = {"count": int(np.size(values)), "dtype": str(np.asarray(values).dtype)}
    return out, record


def _huffman_decode(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    # The fixed-width parts back from their Huffman streams (gaps first: the codes' count needs them).
    out = {k: v for k, v in tensors.items() if not k.endswith(("_symbols", "_lengths"))}
    for part in ("gaps", "codes"):
        if part in record["huffman"]:
            info = record["huffman"][part]
            values = huffman_coding.decode(tensors[part], tensors[part + "_symbols"], tensors[part + "_lengths"],
                                    int(info["count"])).astype(info["dtype"])
            out[part] = pack_bits(values, int(record["bits"])) if part == "codes" else values
    return out


def decode_packed(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> np.ndarray:
    """The float values back from packed codes."""
    shape = tuple(record["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    if record.get("huffman"):
        tensors = _huffman_decode(tensors, record)
    if "index" not in record:
        codes = unpack_bits(tensors["codes"], int(record["bits"]), count)
        return _decode_values(codes, record, tensors, shape).astype(record["dtype"])
    positions = sparse_export.stored_positions(tensors, record, count)
    stored = unpack_bits(tensors["codes"], int(record["bits"]), len(positions))
    # Decode as if every entry had the first stored code, then zero the ones not stored.
    codes = np.full(count, stored[0] if len(stored) else 0, np.uint32)
    codes[positions] = stored
    dense = _decode_values(codes, record, tensors, shape).reshape(-1)
    kept = np.zeros(count, bool)
    kept[positions] = True
    dense[~kept] = 0
    return dense.reshape(shape).astype(record["dtype"])


register_codec("packed", Codec(encode_packed, decode_packed))
