"""Runs reproductions and keeps their results.json under paper/results/ (never checkpoints).

python -m experiments.reproduce --configs=baseline_lenet300,baseline_lenet5 --seeds=0,1,2

Each config runs in runs/NAME/seed_K for each seed K of --seeds (each once;
without --seeds, in runs/NAME with the config's own seed), resumable: rerun
the same command after an interruption. Its results.json is copied to
paper/results/NAME[/seed_K]/results.json, which is all the paper builder
reads. The command line that produced the file is recorded in it. A seed
added later (`--seeds=3`) lands beside the earlier ones in seed_3.

Only a committed tree writes the paper's results. Before anything trains,
the working tree is checked with `git status` for uncommitted changes, staged
or not, tracked or untracked (ignored files do not count), under CODE_PATHS:
compression/, experiments/, configs/, pyproject.toml, constraints.txt and the
Makefile, everything that decides what a run computes. Changes elsewhere
(paper/, runs/, tests/, README.md, .ci/) are not code for this purpose. With
such changes, and a results folder inside the repository's paper/ (the
default paper/results/, or any folder below paper/), the command stops
naming the changed files; a results.json written from that tree would name a
commit whose code cannot be recovered. The one escape hatch is a results
folder outside paper/, e.g. `--results=/tmp/try`: those files are not the
paper's, so a dirty tree may write them. A tree whose state git cannot report
(no git, not a repository) counts as not committed.

A config may start from another run's export: `config.init_from`, or the
teacher in `config.teacher.export` (an export file or a run folder). When
that file is missing, the run that writes it is trained first, found from
the path by the folder convention of this command:
runs/NAME[/seed_K]/export/params.safetensors is what
`--configs=NAME --seeds=K` (without --seeds: no seed_K) writes, NAME being
a config under configs/ or NAME_VARIANT for `--configs=NAME:VARIANT`. The
prerequisite trains with the seed its path names (seed_K; without one, the
config's own seed, as `--configs=NAME` alone runs it), in the folder the path
names (whatever --runs says), without this command's --override (its export
must be the one the path's config writes), and recursively so: its own
missing init_from is trained before it. A path that does not follow the
convention is an error before anything trains, naming the path. A
prerequisite's results.json stays in its run folder and is not copied to the
results folder: that folder keeps what the command was asked for (ask for
the prerequisite in --configs too to keep its results; its path then decides
its folder, e.g. the seed_0 of `--seeds=0,1,2`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from absl import app, flags, logging

from experiments.provenance import (CODE_PATHS, EXPORT_FILE, UncommittedCodeError, export_file, seeded_path,
                                    uncommitted_code_changes)

FLAGS = flags.FLAGS

REPO_ROOT = Path(__file__).resolve().parents[1]
# Results folders inside this one are the paper's: they need a committed tree.
PAPER_DIR = "paper"
# The config fields that name another run's export, the way train.py reads them.
EXPORT_FIELDS: tuple[str, ...] = ("init_from", "teacher.export", "model_from")
LISTED_CHANGES = 10


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_list("configs", None, "Config names under configs/ (NAME or NAME:variant).")
    flags.DEFINE_list("seeds", [], "Seeds, each run once in its own seed_K folder; none: the config's "
                      "own seed in NAME's folder.")
    flags.DEFINE_list("override", [], "key=value config overrides applied to every run (e.g. train.num_steps=100).")
    flags.DEFINE_string("results", "paper/results",
                        "Where results.json files are kept. Inside paper/ only from a committed tree; "
                        "a folder outside paper/ (e.g. /tmp/x) also from a tree with uncommitted code.")
    flags.DEFINE_string("runs", "runs", "Where the runs' workdirs go.")
    flags.mark_flags_as_required(["configs"])


def load_config(name: str):
    """get_config(variant) of configs/NAME.py for NAME[:variant]."""
    module, _, variant = name.partition(":")
    return importlib.import_module(f"configs.{module}").get_config(variant)


def apply_override(config, assignment: str) -> None:
    """Sets a dotted config field from 'a.b=value', parsing the value as JSON when it parses.

    A number indexes a list: `loss.1.temperature=4` sets the second loss term's temperature.
    """
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
        node = node[_slot(node, p, key)]
    node[_slot(node, leaf, key)] = value


def _slot(node, name: str, key: str):
    """The index or field `name` of `node` (a list or a mapping), or a ValueError naming the override."""
    if isinstance(node, list):
        if not name.isdigit() or int(name) >= len(node):
            raise ValueError(f"override {key!r}: {name!r} is not an index of a list of {len(node)} entries")
        return int(name)
    if not hasattr(node, "keys") or name not in node:
        raise ValueError(f"override {key!r}: the config has no field {name!r}")
    return name


# --------------------------------------------------------------------------
# Only a committed tree writes the paper's results.


def is_paper_folder(results_dir: str | os.PathLike[str],
                    repo_root: str | os.PathLike[str] = REPO_ROOT) -> bool:
    """Whether `results_dir` (relative to the current folder) lies inside the repository's paper/."""
    paper = (Path(repo_root) / PAPER_DIR).resolve()
    return Path(results_dir).resolve().is_relative_to(paper)


def check_committed(results_dir: str | os.PathLike[str],
                    repo_root: str | os.PathLike[str] = REPO_ROOT) -> None:
    """Raises UncommittedCodeError when results would go to paper/ from a tree with uncommitted code."""
    if not is_paper_folder(results_dir, repo_root):
        return
    changed = uncommitted_code_changes(repo_root)
    if not changed:
        return
    listed = ", ".join(changed[:LISTED_CHANGES])
    more = f" and {len(changed) - LISTED_CHANGES} more" if len(changed) > LISTED_CHANGES else ""
    raise UncommittedCodeError(
        f"uncommitted changes to code or configs ({', '.join(CODE_PATHS)}): {listed}{more}. "
        f"Commit them (or stash) and run again; results under {PAPER_DIR}/results/ must come "
        f"from a committed tree so their code can be recovered (a --results folder outside "
        f"{PAPER_DIR}/, e.g. /tmp/try, takes results from this tree).")


# --------------------------------------------------------------------------
# Runs a config starts from.


class PlanError(ValueError):
    """An export path a config names that no run of this command can write (or a cycle)."""


@dataclasses.dataclass(frozen=True)
class Producer:
    """The run that writes an export: `--configs=config`, its seed, its folder."""
    config: str  # NAME or NAME:variant, as --configs takes it
    seed: int | None  # from the path's seed_K; None: the config's own seed
    workdir: str  # the run folder; its export is workdir/export/params.safetensors


_SEED_FOLDER = re.compile(r"^seed_(\d+)$")


def experiment_configs(configs_dir: str | os.PathLike[str] = REPO_ROOT / "configs") -> list[str]:
    """The config names under configs/ (their shared modules, `*common*` and default, left out)."""
    return sorted(p.stem for p in Path(configs_dir).glob("*.py")
                  if p.stem not in ("__init__", "default") and "common" not in p.stem)


def producer_of(path: str, config_names: Iterable[str]) -> Producer:
    """Which run writes `path` (an export file, or a run folder), by this command's folder convention.

    `ROOT/NAME[/seed_K]/export/params.safetensors` (or `ROOT/NAME[/seed_K]`) is
    written by config NAME, or NAME:VARIANT when the folder is NAME_VARIANT
    (the longest config name that fits), with seed K when the path names one.
    Raises PlanError (a ValueError) naming the path when it does not follow the convention.
    """
    names = set(config_names)
    file = os.path.normpath(export_file(path))
    convention = ("the runs/NAME[/seed_K]/export/params.safetensors (or runs/NAME[/seed_K]) of "
                  "this command, NAME a config under configs/ or NAME_VARIANT")
    remedy = ("train the run that writes it first (python -m experiments.main "
              "--config=configs/NAME.py --workdir=DIR writes DIR/export/params.safetensors) "
              "or point the config at an existing export")
    if not file.endswith(os.sep + EXPORT_FILE):
        raise PlanError(f"{path!r} does not follow {convention}: {remedy}")
    workdir = file[:-len(os.sep + EXPORT_FILE)]
    folder = os.path.basename(workdir)
    seed = None
    if m := _SEED_FOLDER.match(folder):
        seed = int(m.group(1))
        folder = os.path.basename(os.path.dirname(workdir))
    if folder in names:
        return Producer(folder, seed, workdir)
    fits = [n for n in names if folder.startswith(n + "_") and len(folder) > len(n) + 1]
    if not fits:
        raise PlanError(f"{path!r}: its folder {folder!r} is no config under "
                        f"configs/ (NAME or NAME_VARIANT), as {convention} would be: {remedy}")
    name = max(fits, key=len)
    return Producer(f"{name}:{folder[len(name) + 1:]}", seed, workdir)


@dataclasses.dataclass(frozen=True)
class Prerequisite:
    """A run to train before another: the field and path that need it, and its config."""
    field: str
    path: str
    producer: Producer
    config: Any


def _field(config, dotted: str) -> str:
    # A path with "{seed}" names the export of the run's own seed (provenance.seeded_path).
    node = config
    for key in dotted.split("."):
        node = node.get(key) if hasattr(node, "get") else None
        if node is None:
            return ""
    return seeded_path(node, config.get("seed", 0)) if isinstance(node, str) else ""


def prerequisites(config, config_names: Iterable[str], *,
                  exists: Callable[[str], bool] = os.path.exists,
                  _needed_by: tuple[str, ...] = ()) -> list[Prerequisite]:
    """The runs to train, in order, before `config` can: the producers of its missing exports.

    Each field of EXPORT_FIELDS whose export does not exist names its
    producer (`producer_of`); the producer's own prerequisites come before it
    and a run needed twice is listed once. Raises PlanError for a path off
    the convention, a producer whose config does not resolve, or a cycle (a
    run that needs its own export).
    """
    names = list(config_names)
    found: list[Prerequisite] = []
    for dotted in EXPORT_FIELDS:
        path = _field(config, dotted)
        if not path or exists(export_file(path)):
            continue
        try:
            producer = producer_of(path, names)
        except PlanError as e:
            raise PlanError(f"{dotted} is missing: {e}") from None
        if producer.workdir in _needed_by:
            raise PlanError(f"{dotted} {path!r}: a cycle, {' -> '.join(_needed_by)} -> {producer.workdir}")
        if any(p.producer.workdir == producer.workdir for p in found):
            continue
        try:
            upstream = load_config(producer.config)
        except (ImportError, ValueError) as e:
            raise PlanError(f"{dotted} {path!r} is missing, and --configs={producer.config}, "
                            f"which would write it, does not resolve: {e}") from e
        if producer.seed is not None:
            upstream.seed = producer.seed
        for before in prerequisites(upstream, names, exists=exists,
                                    _needed_by=_needed_by + (producer.workdir,)):
            if not any(p.producer.workdir == before.producer.workdir for p in found):
                found.append(before)
        found.append(Prerequisite(dotted, path, producer, upstream))
    return found


# --------------------------------------------------------------------------
# The command.


@dataclasses.dataclass(frozen=True)
class Request:
    """One requested run: its name, seed, folder under --runs and --results, and config."""
    name: str
    seed: int | None
    folder: str
    config: Any
    before: tuple[Prerequisite, ...]


def run_folder(name: str, seed: int | None) -> str:
    """NAME (":" as "_") for a config's own seed, NAME/seed_K for an explicit seed K.

    An explicit seed always has its own folder, so a seed added later sits
    beside the earlier ones instead of in NAME's.
    """
    folder = name.replace(":", "_")
    return folder if seed is None else os.path.join(folder, f"seed_{seed}")


def unique_seeds(seeds: Iterable[int]) -> list[int]:
    """Each seed once, in the order given (a repeated seed would only evaluate its finished run again)."""
    return list(dict.fromkeys(int(s) for s in seeds))


def plan(configs: Sequence[str], seeds: Sequence[int], overrides: Sequence[str], *,
         config_names: Iterable[str] | None = None) -> list[Request]:
    """Every requested run with what it needs trained first; raises before anything trains."""
    names = experiment_configs() if config_names is None else list(config_names)
    chosen: Sequence[int | None] = unique_seeds(seeds) or [None]
    requests = []
    for name in configs:
        for seed in chosen:
            config = load_config(name)
            for assignment in overrides:
                apply_override(config, assignment)
            if seed is not None:
                config.seed = seed
            folder = run_folder(name, seed)
            requests.append(Request(name, config.seed, folder, config,
                                    tuple(prerequisites(config, names))))
    return requests


def reproduce(configs: Sequence[str], seeds: Sequence[int] = (), overrides: Sequence[str] = (), *,
              results_dir: str = "paper/results", runs_dir: str = "runs", command: str = "",
              repo_root: str | os.PathLike[str] = REPO_ROOT,
              config_names: Iterable[str] | None = None) -> None:
    """The command: check the tree, plan, train each prerequisite then each request, keep results.

    Raises UncommittedCodeError (results_dir inside paper/ and uncommitted
    code), PlanError (an export path no run here writes) or ValueError (a
    config or override that does not resolve) before anything trains.
    """
    from experiments import train

    check_committed(results_dir, repo_root)
    requests = plan(configs, seeds, overrides, config_names=config_names)
    stopped: set[str] = set()  # prerequisites stopped before the end (train.stop_after)
    for request in requests:
        blocked = False
        for before in request.before:
            producer = before.producer
            if producer.workdir in stopped:
                blocked = True
                break
            if os.path.exists(export_file(before.path)):
                continue  # trained earlier in this command
            seed = "" if producer.seed is None else f" (seed {producer.seed})"
            print(f"{before.field} {before.path} is missing: training {producer.config}{seed} "
                  f"first in {producer.workdir}")
            if train.train_and_evaluate(before.config, producer.workdir) is None:
                print(f"{producer.config}: stopped before the end; rerun this command to resume")
                stopped.add(producer.workdir)
                blocked = True
                break
            print(f"{producer.config}: prerequisite of {request.name}; its results.json stays in "
                  f"{producer.workdir} (not copied to {results_dir})")
        if blocked:
            print(f"{request.name}: not run, what it starts from is not trained yet")
            continue
        workdir = os.path.join(runs_dir, request.folder)
        print(f"== {request.name} seed={request.seed} -> {workdir}")
        results = train.train_and_evaluate(request.config, workdir)
        if results is None:
            print(f"{request.name}: stopped before the end; rerun this command to resume")
            continue
        results["command"] = command
        keep = os.path.join(results_dir, request.folder)
        train.write_results(os.path.join(keep, "results.json"), results)
        print(f"{request.name}: {results['metrics']} -> {keep}/results.json")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        reproduce(FLAGS.configs, [int(s) for s in FLAGS.seeds], FLAGS.override,
                  results_dir=FLAGS.results, runs_dir=FLAGS.runs,
                  command=" ".join(["python -m experiments.reproduce"] + sys.argv[1:]))
    except (UncommittedCodeError, PlanError) as e:
        sys.exit(f"experiments.reproduce: {e}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
