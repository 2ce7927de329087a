"""TFDS image datasets, prepared offline where possible and read into numpy.

`fashion_mnist` is prepared from the Debian package `dataset-fashion-mnist`
(no network); other TFDS datasets (`mnist`, `cifar10`, ...) need a network
connection once, through `download_and_prepare`.

TensorFlow and TFDS are imported lazily, inside the functions that need them,
so that importing this module costs nothing and a machine without TensorFlow
(a GPU box with only jax) can still import it.
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any

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


class DatasetNotPreparedError(FileNotFoundError):
    """A TFDS dataset is not prepared in the given data_dir."""


def _import_tf() -> Any:
    """Imports TensorFlow with accelerators hidden, so it never takes GPU memory from JAX."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:
        # TF's devices were already initialized in this process (normally by
        # an earlier call here, which hid the GPUs); they can no longer change.
        pass
    return tf


def _import_tfds() -> Any:
    """Imports tensorflow_datasets after TensorFlow is configured."""
    _import_tf()
    # TFDS 4.9.10 needs `importlib_resources` without declaring it
    # (tensorflow/datasets#11212); pyproject's `data` extra installs it.
    import tensorflow_datasets as tfds

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
    with gzip.open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) != 4 or magic[:2] != b"\x00\x00":
            raise ValueError(f"{path} is not a gzipped IDX file (bad magic {magic!r}).")
        type_code, ndim = magic[2], magic[3]
        dims = np.frombuffer(f.read(4 * ndim), dtype=">u4")
    return type_code, tuple(int(d) for d in dims)


def check_fashion_mnist_headers(sources: dict[str, Path]) -> None:
    """Raises ValueError unless the IDX headers give uint8 data of the published shapes."""
    for split, n in FASHION_MNIST_SPLIT_SIZES.items():
        # The Debian gzips are recompressed, so their bytes differ from
        # upstream's checksums: check what they hold instead.
        expected = {f"{split}_data": (n, 28, 28), f"{split}_labels": (n,)}
        for key, shape in expected.items():
            header = read_idx_header(sources[key])
            if header != (0x08, shape):  # 0x08: unsigned byte
                raise ValueError(
                    f"{sources[key]}: IDX header {header}, expected (8, {shape})."
                )


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


def is_prepared(name: str, data_dir: str) -> bool:
    """Whether TFDS dataset `name` (default config and version) is prepared in data_dir."""
    return _import_tfds().builder(name, data_dir=data_dir).is_prepared()


def prepare_fashion_mnist(data_dir: str, source_dir: str = DEBIAN_FASHION_MNIST_DIR) -> None:
    """Prepares TFDS `fashion_mnist` in data_dir from local Debian files, offline; a no-op if prepared."""
    # Checked first, so a prepared data_dir needs no source files.
    if is_prepared(FASHION_MNIST, data_dir):
        return
    sources = fashion_mnist_sources(source_dir)
    check_fashion_mnist_headers(sources)
    tfds = _import_tfds()
    builder = _local_fashion_mnist_builder_class(sources)(data_dir=data_dir)
    # Extract into a scratch dir so data_dir holds only the prepared dataset.
    with tempfile.TemporaryDirectory(prefix="fashion_mnist_extract_") as scratch:
        builder.download_and_prepare(
            download_dir=scratch,
            # Never look for a prepared copy on GCS: this must work offline.
            download_config=tfds.download.DownloadConfig(try_download_gcs=False),
        )


def download_and_prepare(name: str, data_dir: str) -> None:
    """Downloads and prepares TFDS dataset `name` into data_dir; needs the network, never called implicitly."""
    tfds = _import_tfds()
    tfds.builder(name, data_dir=data_dir).download_and_prepare()


def not_prepared_message(name: str, data_dir: str) -> str:
    """Says that dataset `name` is missing from data_dir, and how to get it."""
    if name == FASHION_MNIST:
        fix = (
            "Prepare it offline with `make setup` "
            f"(or `python -m experiments.prepare_data --data_dir={data_dir}`)."
        )
    else:
        fix = (
            "It needs a network connection once: "
            f"tfds.builder({name!r}, data_dir={data_dir!r}).download_and_prepare() "
            "(or experiments.tfds_data.download_and_prepare)."
        )
    return f"TFDS dataset {name!r} is not prepared in data_dir={data_dir!r}. {fix}"


def load_image_split(name: str, split: str, data_dir: str) -> dict[str, np.ndarray]:
    """Loads a prepared TFDS image split as {"image": uint8 [N, H, W, C], "label": int32 [N]}."""
    if not is_prepared(name, data_dir):
        raise DatasetNotPreparedError(not_prepared_message(name, data_dir))
    tfds = _import_tfds()
    ds = tfds.load(name, split=split, data_dir=data_dir, download=False, batch_size=-1)
    arrays = tfds.as_numpy(ds)
    return {
        "image": np.asarray(arrays["image"], dtype=np.uint8),
        "label": np.asarray(arrays["label"], dtype=np.int32),
    }
