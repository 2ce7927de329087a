"""Chooses a config's settings on its selection split: a grid of overrides, each trained, the best kept.

python -m experiments.select --config=han2015_lenet300:sgd_dense \
    --grid=optimizer.learning_rate=0.01,0.03,0.1 --grid=optimizer.weight_decay=0,0.0001,0.0005

A value may be a JSON list or object (`--grid=compression.stages.0.drop=[0,1],[1,3]`):
commas inside brackets do not split the values. A key `arg.NAME` sets the
config's own argument NAME (what `--configs=CONFIG:VARIANT,NAME=value` sets,
for a setting the config derives other fields from, e.g.
`--grid=arg.kept_scale=0.5,1,2`) instead of a config field.

Every choice a reproduction makes is made on the selection split
(`dataset.selection_size` held-out training examples, or held-out works for
text), never on the reported split: each point of the grid (every
combination of the `--grid` values, applied as `experiments.reproduce`
overrides) is trained in runs/select/CONFIG/POINT/seed_K (resumable), scored
by `--metric` (selection_accuracy, higher is better; selection_loss or
selection_loss_nats, lower is better) averaged over `--seeds`, and the
table of every point with the chosen one is written to
paper/selection/NAME.json, from a committed tree like every result under
paper/ (`experiments.provenance`). The config then states the chosen
values and names that file.

`--config` may name several configs that share the setting being chosen
(a fine-tuning recipe used by a quantized model and by its float control,
say): each point is trained under every one of them and scored by the mean
over configs and seeds, so the choice cannot favour one of them alone (a
recipe that barely moves the weights keeps the control but teaches the
quantized model nothing). NAME is then `--name`.

Where a choice trades size against quality (bits or a pruning rate, say),
the best score alone would always pick the largest model. `--smallest=FIELD
--within=X` chooses instead the point whose mean FIELD (a dotted results.json
path, e.g. compression.bytes_exported) is smallest among the points whose
score is within X of the best score (X in the metric's units: 0.005 is half
a point of selection_accuracy); the rule is stated before the grid runs and
recorded in the table.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import sys
from typing import Any, Callable, Mapping, Optional, Sequence

from absl import app, flags, logging

FLAGS = flags.FLAGS

DIVERGED = "diverged"  # a point whose training stopped on non-finite metrics (the driver's FloatingPointError)
# metric -> whether higher is better
METRICS = {"selection_accuracy": True, "selection_loss": False, "selection_loss_nats": False}


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_list("config", None, "Config name(s) under configs/ (NAME or NAME:variant); several are "
                      "scored together (their mean).")
    flags.DEFINE_string("name", "", "The choice's name (paper/selection/NAME.json); required with several "
                        "configs, the config's NAME_variant by default.")
    flags.DEFINE_multi_string("grid", [], "key=v1,v2,... : a config field and the values to try (repeatable).")
    flags.DEFINE_list("seeds", ["0"], "Seeds each point is trained with; the metric is their mean.")
    flags.DEFINE_enum("metric", "selection_accuracy", sorted(METRICS), "What the choice maximises/minimises.")
    flags.DEFINE_string("smallest", "", "A results.json field (e.g. compression.bytes_exported): choose the point "
                        "with its smallest mean among those scoring within --within of the best.")
    flags.DEFINE_float("within", None, "With --smallest: how far from the best score (metric units) a point may "
                       "be and still be chosen.")
    flags.DEFINE_string("out", "paper/selection", "Where NAME.json goes (inside paper/: a committed tree only).")
    flags.DEFINE_string("runs", "runs/select", "Where the points' workdirs go.")
    flags.mark_flags_as_required(["config"])


def parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    """{key: values} from 'key=v1,v2' items; values parsed as JSON where they parse."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not raw:
            raise ValueError(f"--grid {item!r} is not of the form key=v1,v2,...")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice")
        grid[key] = [_value(v) for v in split_values(raw)]
    if not grid:
        raise ValueError("give at least one --grid=key=v1,v2,...")
    return grid


def split_values(raw: str) -> list[str]:
    """'a,b,[1,3],{"x": 1}' -> ['a', 'b', '[1,3]', '{"x": 1}']: commas inside brackets or braces stay in their value."""
    values, depth, current = [], 0, ""
    for ch in raw:
        if ch == "," and depth == 0:
            values.append(current)
            current = ""
            continue
        depth += {"[": 1, "{": 1, "]": -1, "}": -1}.get(ch, 0)
        current += ch
    if depth:
        raise ValueError(f"--grid value list {raw!r} has unbalanced brackets")
    return values + [current]


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in grid order (the first key varies slowest)."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, Any]) -> str:
    """A folder name for a point: key=value pairs joined by ','."""
    return ",".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in point.items()).replace(
        "/", "_").replace('"', "")


@dataclasses.dataclass(frozen=True)
class SmallestWithin:
    """The choice rule for a size/quality trade: the smallest mean `field` among points scoring within
    `within` of the best."""
    field: str
    within: float

    def __post_init__(self) -> None:
        if not self.field:
            raise ValueError("--smallest needs a results.json field, e.g. compression.bytes_exported")
        if self.within is None or not self.within >= 0:
            raise ValueError(f"--within must be a distance from the best score >= 0 (metric units), "
                             f"got {self.within!r}")


ARG = "arg."  # a grid key naming the config's own argument (common.parse_arg), not a config field


def config_spec(name: str, args: Sequence[str]) -> str:
    """`han2016_x:pruned` with args ["kept_scale=0.5"] -> `han2016_x:pruned,kept_scale=0.5` (load_config's NAME:ARG)."""
    module, _, variant = name.partition(":")
    return f"{module}:{','.join([variant, *args] if variant else args)}" if args else name


def choose(scored: Sequence[Mapping[str, Any]], higher_is_better: bool,
           rule: Optional[SmallestWithin] = None) -> int:
    """The index of the best mean (the first of equal ones, in grid order); diverged points (mean None) never.

    With `rule`: among the points whose mean is within rule.within of the best, the one with the smallest
    "size" (the mean of rule.field), the first of equal ones.
    """
    best = max if higher_is_better else min
    target = best(s["mean"] for s in scored if s["mean"] is not None)
    if rule is None:
        return next(i for i, s in enumerate(scored) if s["mean"] == target)
    # CLAIM-style slack: 0.9 - 0.895 must count as within 0.005.
    near = [i for i, s in enumerate(scored) if s["mean"] is not None and abs(s["mean"] - target) <= rule.within + 1e-12]
    return min(near, key=lambda i: scored[i]["size"])


def select(configs: Mapping[str, Callable[..., Any]], name: str, grid: Mapping[str, Sequence[Any]],
           seeds: Sequence[int], metric: str, runs_dir: str, out_path: Optional[str] = None,
           command: str = "", rule: Optional[SmallestWithin] = None) -> dict:
    """Trains every grid point under every config and seed; returns (and writes to `out_path`) the scored grid.

    `configs` maps each config's folder name to a function making it (given the point's
    `arg.` values as ["NAME=value", ...] when it has any, as config_spec joins them); a
    point's score is the mean of `metric` over configs and seeds ("values"
    holds the per-seed means over configs, "per_config" each config's values).
    Each point also keeps its runs' reported-split metrics ("reported": per
    config, per seed), for a figure of the sweep; the choice never reads them.
    With `rule` (SmallestWithin) each point's "size" is the mean of rule.field
    over its runs, and the choice is the rule's.
    """
    from experiments import train

    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r} is not one of {sorted(METRICS)}")
    if not configs:
        raise ValueError("name at least one config to choose for")
    scored = []
    for point in points(grid):
        per_config: dict[str, list[float]] = {}
        reported: dict[str, list[dict]] = {}
        sizes: list[float] = []
        diverged = []
        for folder, make_config in configs.items():
            runs = [_run(make_config, folder, point, int(seed), metric, runs_dir, rule) for seed in seeds]
            diverged += [m[DIVERGED] for m in runs if DIVERGED in m]
            if diverged:
                break
            per_config[folder] = [float(m[metric]) for m in runs]
            reported[folder] = [{k: v for k, v in m.items() if not k.startswith("selection") and k != SIZE}
                                for m in runs]
            sizes += [float(m[SIZE]) for m in runs if SIZE in m]
        if diverged:
            # A setting whose training diverges cannot be chosen; it stays in the table as such.
            scored.append({"point": point, "seeds": [int(s) for s in seeds], "values": None, "mean": None,
                           DIVERGED: diverged[0]})
            print(f"{point}: diverged ({diverged[0]})")
            continue
        values = [sum(v[i] for v in per_config.values()) / len(per_config) for i in range(len(seeds))]
        entry = {"point": point, "seeds": [int(s) for s in seeds], "values": values,
                 "mean": sum(values) / len(values), "reported": reported}
        if rule is not None:
            entry["size"] = sum(sizes) / len(sizes)
        if len(configs) > 1:
            entry["per_config"] = per_config
        scored.append(entry)
        print(f"{point}: {metric} {entry['mean']:.4f}" + (f", {rule.field} {entry['size']:,.0f}" if rule else ""))
    if all(DIVERGED in s for s in scored):
        raise FloatingPointError(f"every point of the grid diverged ({scored[0][DIVERGED]}): lower the learning "
                                 f"rates tried")
    chosen = choose(scored, METRICS[metric], rule)
    report = {"config": name, "metric": metric, "higher_is_better": METRICS[metric], "grid": dict(grid),
              "points": scored, "chosen": scored[chosen]["point"], "versions": train.versions(),
              "command": command}
    if rule is not None:
        report["rule"] = {"smallest": rule.field, "within": rule.within}
    if len(configs) > 1:
        report["configs"] = list(configs)
    print(f"chosen: {scored[chosen]['point']} ({metric} {scored[chosen]['mean']:.4f})")
    if out_path:
        train.write_results(out_path, report)
        print(f"-> {out_path}")
    return report


SIZE = "size"  # the key _run adds to a run's metrics: the value of the rule's results.json field


def _run(make_config: Callable[..., Any], folder: str, point: Mapping[str, Any], seed: int, metric: str,
         runs_dir: str, rule: Optional[SmallestWithin] = None) -> dict[str, Any]:
    """The metrics of one config at one grid point and seed, trained in runs_dir/folder/POINT/seed_K (resumable);
    with `rule`, also its results.json's rule.field under SIZE."""
    from experiments import reproduce, train
    from experiments.report.common import get_path, is_number

    args = [f"{key[len(ARG):]}={value}" for key, value in point.items() if key.startswith(ARG)]
    config = make_config(args) if args else make_config()
    for key, value in point.items():
        if not key.startswith(ARG):
            reproduce.apply_override(config, f"{key}={json.dumps(value)}")
    config.seed = seed
    if not config.dataset.get("selection_size", 0) and config.dataset.get("selection_offset", -1) == -1:
        raise ValueError(f"{folder} has no selection split, and choices need one: set "
                         f"dataset.selection_size > 0 (or dataset.selection_offset for text)")
    workdir = os.path.join(runs_dir, folder, point_name(point), f"seed_{seed}")
    print(f"== {folder} {point} seed={seed} -> {workdir}")
    try:
        results = train.train_and_evaluate(config, workdir)
    except FloatingPointError as e:  # the driver's non-finite check: this setting diverges
        return {DIVERGED: str(e).splitlines()[0]}
    if results is None:
        raise RuntimeError(f"{workdir} stopped before the end (train.stop_after); rerun to resume")
    if metric not in results["metrics"]:
        raise ValueError(f"{folder} reports no {metric}: choices need a selection split "
                         f"(dataset.selection_size > 0, or dataset.selection_offset for text)")
    if rule is None:
        return dict(results["metrics"])
    size = get_path(results, rule.field)
    if not is_number(size):
        raise ValueError(f"{workdir}/results.json has no number at {rule.field!r} (--smallest): name a field "
                         f"every run writes, e.g. compression.bytes_exported")
    return {**results["metrics"], SIZE: float(size)}


def choice_name(config_names: Sequence[str], name: str = "") -> str:
    """NAME of the choice's file: `name`, or the single config's NAME_variant; several configs need a name."""
    if name:
        return name
    if len(config_names) != 1:
        raise ValueError(f"--config names {len(config_names)} configs: give --name for the choice's file")
    return config_names[0].replace(":", "_")


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from experiments import reproduce

    reproduce.check_committed(FLAGS.out)
    rule = SmallestWithin(FLAGS.smallest, FLAGS.within) if FLAGS.smallest or FLAGS.within is not None else None
    name = choice_name(FLAGS.config, FLAGS.name)
    configs = {c.replace(":", "_"): (lambda args=(), c=c: reproduce.load_config(config_spec(c, args)))
               for c in FLAGS.config}
    select(configs, name, parse_grid(FLAGS.grid), reproduce.unique_seeds(FLAGS.seeds), FLAGS.metric, FLAGS.runs,
           os.path.join(FLAGS.out, f"{name}.json"), " ".join(["python -m experiments.select"] + sys.argv[1:]), rule)


if __name__ == "__main__":
    define_flags()
    app.run(main)
