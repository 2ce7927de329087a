"""Hinton et al. 2015's omitted-class experiment: a class absent from the transfer set, then its output bias raised.

    python -m experiments.omitted_class --config=hinton2015_mlp:omit3 --seeds=0,1,2

The distilled student of `--config` (trained by experiments.reproduce with
`dataset.drop_classes`, so it never saw a training example of the class) is
read from its export in runs/NAME[/seed_K]. Its logits on the selection split
and on the reported split are computed once; the class's output bias is then
raised by each of `--offsets` (adding b to that logit), the offset with the
best selection accuracy is kept (the paper raised the 3's bias by 3.5), and
the reported split's errors, overall and on the omitted class, are written
before and after, to paper/results/NAME_bias[/seed_K]/results.json (from a
committed tree, like every result under paper/).
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
OFFSETS = tuple(x / 2 for x in range(0, 17))  # 0, 0.5, ..., 8


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_string("config", None, "The omitted-class config (NAME:VARIANT) whose runs to read.")
    flags.DEFINE_list("seeds", [], "Seeds run by experiments.reproduce --seeds (none: its single run).")
    flags.DEFINE_list("offsets", [str(x) for x in OFFSETS], "Bias offsets tried on the selection split.")
    flags.DEFINE_string("runs", "runs", "Where the runs are.")
    flags.DEFINE_string("results", "paper/results", "Where NAME_bias[/seed_K]/results.json goes.")
    flags.mark_flags_as_required(["config"])


def split_logits(model: Any, params: Any, model_state: dict, split: dict[str, np.ndarray],
                 batch_size: int = 1000) -> np.ndarray:
    """The model's logits for every example of a split (eval mode), in order."""
    from experiments import models

    forward = jax.jit(lambda p, x: models.apply_model(model, p, x, model_state=model_state))
    return np.concatenate([np.asarray(forward(params, split["inputs"][i:i + batch_size]))
                           for i in range(0, len(split["targets"]), batch_size)])


def errors(logits: np.ndarray, targets: np.ndarray, cls: int, offset: float) -> tuple[int, int]:
    """(errors over all examples, errors on class `cls`) with `offset` added to that class's logit."""
    shifted = logits.copy()
    shifted[:, cls] += offset
    wrong = np.argmax(shifted, -1) != targets
    return int(wrong.sum()), int(wrong[targets == cls].sum())


def choose_offset(logits: np.ndarray, targets: np.ndarray, cls: int, offsets: Sequence[float]) -> float:
    """The offset with the fewest errors on the given split (the smallest of equal ones)."""
    counts = [errors(logits, targets, cls, b)[0] for b in offsets]
    return float(offsets[int(np.argmin(counts))])


def analyse(run_dir: str, config: Any, offsets: Sequence[float]) -> dict[str, Any]:
    """The before/after errors of the run in `run_dir` (see the module doc), as a results.json dict."""
    from experiments import data as data_lib
    from experiments import models, train

    start = time.time()
    classes = list(config.dataset.get("drop_classes", []))
    if len(classes) != 1:
        raise ValueError(f"the omitted-class analysis needs exactly one class in dataset.drop_classes "
                         f"(got {classes})")
    cls = int(classes[0])
    export = os.path.join(run_dir, "export", "params.safetensors")
    if not os.path.exists(export):
        raise FileNotFoundError(f"{export} does not exist: run the config with experiments.reproduce first")
    dataset = data_lib.load_dataset(config.dataset, config.get("data_dir", ".data"))
    if not dataset.has_selection:
        raise ValueError("the offset is chosen on the selection split: set dataset.selection_size > 0")
    model_config, params, model_state = train.read_export(export)
    model = models.build_model(ml_collections.ConfigDict(model_config), dataset.num_classes)
    selection = split_logits(model, params, model_state, dataset.selection)
    test = split_logits(model, params, model_state, dataset.eval)
    chosen = choose_offset(selection, dataset.selection["targets"], cls, offsets)
    (before, before_cls), (after, after_cls) = (errors(test, dataset.eval["targets"], cls, b) for b in (0.0, chosen))
    count = len(dataset.eval["targets"])
    with open(os.path.join(run_dir, "results.json")) as f:
        run_results = json.load(f)
    return {
        "config": {**config.to_dict(), "omitted_class": {"class": cls, "offsets": list(offsets), "run": run_dir}},
        "metrics": {"omitted_class": cls, "bias_offset": chosen,
                    "test_errors_before": before, "test_errors_on_class_before": before_cls,
                    "test_errors": after, "test_errors_on_class": after_cls,
                    "test_examples": count, "test_examples_of_class": int((dataset.eval["targets"] == cls).sum()),
                    "test_accuracy": 1.0 - after / count, "test_accuracy_before": 1.0 - before / count},
        "compression": run_results["compression"],
        "timing": {"wall_s": time.time() - start},
        "versions": train.versions(),
    }


def main(argv: list[str]) -> None:
    del argv
    from experiments import reproduce, train

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TFDS logs every read at INFO

    reproduce.check_committed(FLAGS.results)
    offsets = [float(x) for x in FLAGS.offsets]
    seeds = reproduce.unique_seeds(FLAGS.seeds) or [None]
    command = " ".join(["python -m experiments.omitted_class"] + sys.argv[1:])
    for seed in seeds:
        config = reproduce.load_config(FLAGS.config)
        if seed is not None:
            config.seed = seed
        run_dir = os.path.join(FLAGS.runs, reproduce.run_folder(FLAGS.config, seed))  # where reproduce trained it
        results = analyse(run_dir, config, offsets)
        results["command"] = command
        out = os.path.join(FLAGS.results, reproduce.run_folder(f"{FLAGS.config}_bias", seed), "results.json")
        train.write_results(out, results)
        m = results["metrics"]
        print(f"{run_dir}: class {m['omitted_class']}: {m['test_errors_before']} errors "
              f"({m['test_errors_on_class_before']} on the class) -> bias +{m['bias_offset']}: {m['test_errors']} "
              f"({m['test_errors_on_class']}) -> {out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
