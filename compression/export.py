"""Exporting the truly smaller artifact, in a container other tools can read.

Parameters are written as a safetensors file: named tensors (float payloads,
packed uint8 payloads, int8 values, index arrays, scales) plus, under the
`__metadata__` key `compression_lab`, one JSON string that records for each
parameter path the codec that wrote it, its shape and dtype, and the names of
its tensors. Any safetensors reader can open the file; `load_params` decodes
it back into the nested dict of arrays the model consumes.

A codec is a pair `encode(array, **settings) -> (tensors, record)` and
`decode(tensors, record) -> array`; techniques register theirs (packed
integers, values + indices, factors) with `register_codec`, and an export
names a codec per parameter path. `dense` (the array as it is) is built in.
A transform's `export` may also hand a parameter over already encoded, as a
`Coded` leaf (quantization knows its codes and scales; the float values alone
do not): it names its own codec and settings. A parameter that is another
parameter (cross-layer sharing) is handed over as an `Alias` of that one's
path: the file records the alias by name and stores the array once.
"""
from __future__ import annotations

import importlib
import json
import os
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import numpy as np
from safetensors.numpy import load_file, safe_open, save_file

from compression.selection import nest_paths, path_str

METADATA_KEY = "compression_lab"
FORMAT_VERSION = 1


class Codec(NamedTuple):
    """How one parameter is written to and read back from named tensors."""

    encode: Callable[..., tuple[dict[str, np.ndarray], dict[str, Any]]]
    decode: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], np.ndarray]


_CODECS: dict[str, Codec] = {}
# Modules whose import registers codecs; loaded on first lookup (see compression/__init__.py).
CODEC_MODULES = ("compression.sparse_export", "compression.packed_export")


class Coded:
    """A parameter handed to the export with its codec: its float `values` and `codec(values, **settings)`.

    A pytree leaf (not a node), so exported trees keep the model's paths.
    """

    __slots__ = ("values", "codec", "settings")

    def __init__(self, values: Any, codec: str, settings: Mapping[str, Any]):
        self.values, self.codec, self.settings = values, codec, dict(settings)

    def __repr__(self) -> str:
        return f"Coded({self.codec}, shape={np.shape(self.values)})"


class Alias:
    """A parameter that is another parameter (cross-layer sharing): written once, at `source`.

    A pytree leaf. The export records the path under the codec name
    "alias" with no tensors; `load_params` gives it the source's array.
    """

    __slots__ = ("source",)

    def __init__(self, source: str):
        self.source = source

    def __repr__(self) -> str:
        return f"Alias({self.source})"


def leaf_shape(leaf: Any) -> tuple[int, ...]:
    """The shape of a parameter leaf: an array's, or a `Coded` leaf's values'."""
    return tuple(np.shape(leaf.values if isinstance(leaf, Coded) else leaf))


def take(leaf: Any, index: Any, axis: int) -> Any:
    """np.take(leaf, index, axis) for an array; for a `Coded` leaf, its values and every setting that follows them.

    A setting follows the values along `axis` when it is an array whose
    leading dimensions align with the values' (a per-channel scale kept with
    keepdims, integer codes, a per-channel codebook with its entries on a
    trailing axis) and whose length on `axis` equals the values'; size-1
    (broadcast) axes, scalars and plain numbers stay as they are. This is how
    a structural export (dropped filters) carries a quantizer's state with
    the parameter it describes.
    """
    if not isinstance(leaf, Coded):
        return np.take(np.asarray(leaf), index, axis=axis)
    values = np.asarray(leaf.values)
    axis = axis % values.ndim
    settings = {}
    for key, value in leaf.settings.items():
        if isinstance(value, np.ndarray) and value.ndim >= values.ndim and value.shape[axis] == values.shape[axis] \
                and values.shape[axis] != 1:
            value = np.take(value, index, axis=axis)
        settings[key] = value
    return Coded(np.take(values, index, axis=axis), leaf.codec, settings)


def plain_values(tree: Any) -> Any:
    """The tree with every `Coded` leaf replaced by its float values, and every `Alias` dropped (stored once)."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return nest_paths({path_str(kp): leaf.values if isinstance(leaf, Coded) else leaf
                       for kp, leaf in flat if not isinstance(leaf, Alias)})


def register_codec(name: str, codec: Codec) -> None:
    """Makes `codec` available to exports under `name`."""
    if name in _CODECS and _CODECS[name] != codec:
        raise ValueError(f"a codec named {name!r} is already registered")
    _CODECS[name] = codec


def _codec(name: str) -> Codec:
    for module in CODEC_MODULES:
        importlib.import_module(module)
    if name not in _CODECS:
        raise ValueError(f"unknown export codec {name!r}; registered codecs: {sorted(_CODECS)}")
    return _CODECS[name]


def _encode_dense(array: np.ndarray, dtype: Optional[str] = None) -> tuple[dict, dict]:
    array = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
    return {"": np.ascontiguousarray(array)}, {}


def _decode_dense(tensors: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> np.ndarray:
    return tensors[""].astype(record["dtype"])


register_codec("dense", Codec(_encode_dense, _decode_dense))


def _tensor_name(path: str, part: str) -> str:
    return path if part == "" else f"{path}:{part}"


def export_params(path: str, params: Any, codecs: Optional[Mapping[str, tuple[str, dict]]] = None,
                  metadata: Optional[Mapping[str, Any]] = None) -> int:
    """Writes `params` to the safetensors file `path`; returns its size in bytes on disk.

    `codecs` maps a parameter path to (codec name, settings); paths it does
    not name are written `dense`, and a `Coded` leaf is written with its own
    codec (naming another one for it in `codecs` is an error; naming its own is allowed). `metadata` (JSON-able) is stored beside the
    per-parameter formats, e.g. the model config a structured export needs.
    """
    codecs = dict(codecs or {})
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    known = {path_str(kp) for kp, _ in flat}
    unknown = sorted(set(codecs) - known)
    if unknown:
        raise ValueError(f"export codecs name parameters that do not exist: {unknown}")
    tensors: dict[str, np.ndarray] = {}
    formats: dict[str, Any] = {}
    sources = {path_str(kp): leaf for kp, leaf in flat}
    for kp, leaf in flat:
        name = path_str(kp)
        if isinstance(leaf, Alias):
            source = sources.get(leaf.source)
            if source is None or isinstance(source, Alias) or codecs.get(name, ("dense",))[0] != "dense":
                raise ValueError(f"export of {name}: an alias of {leaf.source!r}, which must be a stored parameter "
                                 f"(and an alias takes no codec of its own)")
            formats[name] = {"codec": "alias", "source": leaf.source, "shape": list(leaf_shape(source)),
                             "dtype": str(np.asarray(source.values if isinstance(source, Coded) else source).dtype),
                             "parts": []}
            continue
        codec_name, settings = codecs.get(name, ("dense", {}))
        if isinstance(leaf, Coded):
            if codec_name not in ("dense", leaf.codec):
                raise ValueError(f"export of {name}: the transform encodes it with {leaf.codec!r}, "
                                 f"but the config's export.codecs names {codec_name!r}; drop that rule")
            codec_name, settings, leaf = leaf.codec, leaf.settings, leaf.values
        array = np.asarray(jax.device_get(leaf))
        try:
            parts, record = _codec(codec_name).encode(array, **settings)
        except ValueError as e:
            raise ValueError(f"export of {name} with codec {codec_name!r}: {e}") from e
        for part, value in parts.items():
            tensors[_tensor_name(name, part)] = np.ascontiguousarray(value)
        formats[name] = {"codec": codec_name, "shape": list(array.shape), "dtype": str(array.dtype),
                         "parts": sorted(parts), **record}
    header = {"version": FORMAT_VERSION, "params": formats, "metadata": dict(metadata or {})}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    # Compact JSON: at 1-2 bits a small model's payload is tens of KB, and the header counts.
    save_file(tensors, path, metadata={METADATA_KEY: json.dumps(header, sort_keys=True, separators=(",", ":"))})
    return os.path.getsize(path)


def payload_report(path: str) -> dict[str, int]:
    """bytes_payload (the tensors' data) and bytes_header (the container's JSON header) of an export."""
    with safe_open(path, framework="numpy") as f:
        payload = sum(f.get_tensor(name).nbytes for name in f.keys())
    return {"bytes_payload": int(payload), "bytes_header": int(os.path.getsize(path) - payload)}


def read_header(path: str) -> dict[str, Any]:
    """The JSON header an export recorded (per-parameter formats and metadata)."""
    with safe_open(path, framework="numpy") as f:
        raw = (f.metadata() or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path} is a safetensors file but not a compression-lab export "
                         f"(no {METADATA_KEY!r} metadata)")
    return json.loads(raw)


def load_params(path: str) -> dict[str, Any]:
    """Reads an export back into a nested dict of numpy arrays, decoding each parameter."""
    header = read_header(path)
    tensors = load_file(path)
    flat = {}
    for name, record in header["params"].items():
        if record["codec"] == "alias":
            continue
        parts = {part: tensors[_tensor_name(name, part)] for part in record["parts"]}
        array = _codec(record["codec"]).decode(parts, record)
        flat[name] = np.asarray(array).reshape(record["shape"])
    for name, record in header["params"].items():
        if record["codec"] == "alias":
            if record["source"] not in flat:
                raise ValueError(f"{path}: {name} is an alias of {record['source']!r}, which the file does not hold")
            flat[name] = flat[record["source"]]
    return nest_paths(flat)
