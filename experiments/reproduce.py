"""Runs reproductions and keeps their results.json under paper/results/ (never checkpoints).

python -m experiments.reproduce --configs=baseline_lenet300,baseline_lenet5 --seeds=0,1,2

Each config runs in runs/NAME[/seed_K] (resumable: rerun the same command
after an interruption) and its results.json is copied to
paper/results/NAME[/seed_K]/results.json, which is all the paper builder
reads. The command line that produced the file is recorded in it.
"""
from __future__ import annotations

import importlib
import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_list("configs", None, "Config names under configs/ (NAME or NAME:variant).")
    flags.DEFINE_list("seeds", [], "Seeds; with several, each runs in its own seed_K folder.")
    flags.DEFINE_list("override", [], "key=value config overrides applied to every run (e.g. train.num_steps=100).")
    flags.DEFINE_string("results", "paper/results", "Where results.json files are kept.")
    flags.DEFINE_string("runs", "runs", "Where the runs' workdirs go.")
    flags.mark_flags_as_required(["configs"])


def load_config(name: str):
    """get_config(variant) of configs/NAME.py for NAME[:variant]."""
    module, _, variant = name.partition(":")
    return importlib.import_module(f"configs.{module}").get_config(variant)


def apply_override(config, assignment: str) -> None:
    """Sets a dotted config field from 'a.b=value', parsing the value as JSON when it parses."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ValueError(f"override {assignment!r} is not of the form key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    if leaf not in node:
        raise ValueError(f"override {key!r}: the config has no field {leaf!r}")
    node[leaf] = value


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from experiments import train

    seeds = [int(s) for s in FLAGS.seeds] or [None]
    for name in FLAGS.configs:
        for seed in seeds:
            config = load_config(name)
            for assignment in FLAGS.override:
                apply_override(config, assignment)
            folder = name.replace(":", "_")
            if seed is not None and len(seeds) > 1:
                config.seed = seed
                folder = os.path.join(folder, f"seed_{seed}")
            elif seed is not None:
                config.seed = seed
            workdir = os.path.join(FLAGS.runs, folder)
            print(f"== {name} seed={config.seed} -> {workdir}")
            results = train.train_and_evaluate(config, workdir)
            if results is None:
                print(f"{name}: stopped before the end; rerun this command to resume")
                continue
            results["command"] = " ".join(["python -m experiments.reproduce"] + sys.argv[1:])
            keep = os.path.join(FLAGS.results, folder)
            train.write_results(os.path.join(keep, "results.json"), results)
            print(f"{name}: {results['metrics']} -> {keep}/results.json")


if __name__ == "__main__":
    define_flags()
    app.run(main)
