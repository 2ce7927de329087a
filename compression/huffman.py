"""Huffman coding of integer symbols (Huffman 1952), as Deep Compression's last stage (Han et al. 2016).

The quantized weights' cluster indices and the sparse layout's relative
indices are far from uniform (a few centroids near zero hold most weights;
short gaps are common), so a variable-length prefix code stores them in
fewer bits than their fixed width: the paper saves 20-30 % more this way.

The code is canonical (codes assigned in order of (length, symbol)), so the
table stored beside the bit stream is only the used symbols and their code
lengths; `coded_bits` is the stream's exact length, sum over symbols of
count * length, and `decode` gives back the symbols bit for bit.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any

import numpy as np

# Streams decode through a table of 2^L entries for codes up to L bits; longer codes (which need
# Fibonacci-like counts over many millions of symbols) decode bit by bit instead.
TABLE_BITS = 20


def code_lengths(symbols: Any) -> tuple[np.ndarray, np.ndarray]:
    """(used symbols ascending, their Huffman code lengths) for the sequence `symbols`.

    Ties in the merge order are broken by insertion order, so the same
    counts always give the same lengths. One distinct symbol gets length 1
    (a code must spend a bit per symbol).
    """
    used, counts = np.unique(np.asarray(symbols).reshape(-1), return_counts=True)
    if used.size == 0:
        return used, np.zeros(0, np.uint8)
    if used.size == 1:
        return used, np.ones(1, np.uint8)
    order = itertools.count()
    heap = [(int(c), next(order), [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    lengths = np.zeros(used.size, np.int64)
    while len(heap) > 1:
        c1, _, a = heapq.heappop(heap)
        c2, _, b = heapq.heappop(heap)
        lengths[a + b] += 1  # every symbol under the merged node sits one level deeper
        heapq.heappush(heap, (c1 + c2, next(order), a + b))
    return used, lengths.astype(np.uint8)


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (in the order given) from its length, as integers."""
    lengths = np.asarray(lengths, np.int64)
    codes = np.zeros(lengths.size, np.int64)
    code, previous = 0, 0
    for i in np.lexsort((np.arange(lengths.size), lengths)):
        code <<= int(lengths[i]) - previous
        previous = int(lengths[i])
        codes[i] = code
        code += 1
    return codes


def coded_bits(symbols: Any, used: np.ndarray, lengths: np.ndarray) -> int:
    """The exact stream length in bits: sum over the sequence of each symbol's code length."""
    index = np.searchsorted(used, np.asarray(symbols).reshape(-1))
    return int(np.sum(np.asarray(lengths, np.int64)[index]))


def encode(symbols: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stream uint8, used symbols, code lengths uint8): `symbols` Huffman-coded, bits MSB first, zero-padded."""
    symbols = np.asarray(symbols).reshape(-1)
    used, lengths = code_lengths(symbols)
    if symbols.size == 0:
        return np.zeros(0, np.uint8), used, lengths
    codes = canonical_codes(lengths)
    index = np.searchsorted(used, symbols)
    length, code = lengths[index].astype(np.int64), codes[index]
    width = int(lengths.max())
    shifts = length[:, None] - 1 - np.arange(width)[None, :]
    bits = (code[:, None] >> np.maximum(shifts, 0)) & 1
    return np.packbits(bits[shifts >= 0].astype(np.uint8)), used, lengths


def decode(stream: Any, used: Any, lengths: Any, count: int) -> np.ndarray:
    """The `count` symbols `encode` wrote to `stream` with this table (used symbols, code lengths)."""
    used, lengths = np.asarray(used), np.asarray(lengths, np.int64)
    if count == 0:
        return used[:0]
    bits = np.unpackbits(np.asarray(stream, np.uint8)).astype(np.int64)
    codes = canonical_codes(lengths)
    width = int(lengths.max())
    if width > TABLE_BITS:
        return _decode_bitwise(bits, used, lengths, codes, count)
    # table[w]: the symbol whose code prefixes the width-bit window w, and that code's length.
    table_symbol = np.zeros(1 << width, np.int64)
    table_length = np.zeros(1 << width, np.int64)
    for i, (c, n) in enumerate(zip(codes, lengths)):
        span = 1 << (width - int(n))
        table_symbol[int(c) * span:(int(c) + 1) * span] = i
        table_length[int(c) * span:(int(c) + 1) * span] = n
    padded = np.concatenate([bits, np.zeros(width, np.int64)])
    windows = np.zeros(bits.size, np.int64)
    for j in range(width):
        windows = (windows << 1) | padded[j:j + bits.size]
    windows, table_symbol, table_length = windows.tolist(), table_symbol.tolist(), table_length.tolist()
    out, position = [], 0
    for _ in range(count):
        if position >= len(windows):
            raise ValueError(f"the Huffman stream ends after {len(out)} of {count} symbols: the file is truncated")
        w = windows[position]
        out.append(table_symbol[w])
        position += table_length[w]
    return used[np.asarray(out, np.int64)]


def _decode_bitwise(bits: np.ndarray, used: np.ndarray, lengths: np.ndarray, codes: np.ndarray,
                    count: int) -> np.ndarray:
    lookup = {(int(n), int(c)): i for i, (c, n) in enumerate(zip(codes, lengths))}
    out, code, n = [], 0, 0
    for bit in bits.tolist():
        code, n = (code << 1) | bit, n + 1
        if (n, code) in lookup:
            out.append(lookup[n, code])
            code, n = 0, 0
            if len(out) == count:
                return used[np.asarray(out, np.int64)]
    raise ValueError(f"the Huffman stream ends after {len(out)} of {count} symbols: the file is truncated")
