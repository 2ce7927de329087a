"""Inference latency of exported models, side by side: does the compression make the model faster?

    python -m experiments.benchmark_inference --runs=DIR_REF,DIR_2,... [--batch_sizes=1,128]
        [--repeats=7] [--seconds_per_repeat=0.25] [--out=FILE.json]

Each run directory holds an export (DIR/export/params.safetensors, written by
`experiments.train.export_run`). The model is rebuilt from the export alone:
its header's model config (`header["metadata"]["model"]`, which a structured
export has shrunk, e.g. conv_features (10, 25)) goes to
`models.build_model`, and `compression.export.load_params` decodes the
parameters. The first run is the reference (normally the dense baseline);
every other is reported as a speedup against it.

What is timed: one jitted forward pass (`model.apply`, eval mode) on the
CPU backend (`--backend`), params and a batch of random uint8 28x28x1
images (the same for every model; for language models, `char_transformer`,
random token windows of the model's max_len over the vocabulary its
embedding holds, and then every run must be such a model) already on the
device, each call waited
for with `block_until_ready`: the latency of one call, dispatch included,
not a pipelined throughput. Compilation is excluded by a warm-up call; the
number of calls in one repetition is calibrated per model and batch size to
last about --seconds_per_repeat. Repetitions are interleaved across models
(every model at one batch size, then the next repetition), and each
repetition starts with the next model in turn, so drifting load on a shared
machine hits every model alike. A repetition's value is the median of its
per-call times; the table shows the median over repetitions.

What to expect, honestly:
- A structured export (neurons or filters removed) is a smaller *dense*
  model: fewer multiply-adds, and XLA runs it faster at every batch size
  once the compute outweighs the per-call overhead.
- An unstructured (sparse) export is small on disk, but `load_params`
  densifies it: XLA has no sparse matmul or convolution on this path, so the
  model runs the dense shapes, zeros included, at dense speed. Its bytes on
  disk shrink; its latency does not. Only structured pruning shrinks compute
  here (a sparse kernel library would be needed to turn zeros into speed).
- At batch 1 a small model's call is mostly fixed overhead (dispatch, thread
  hand-off), so even a much smaller model gains little there.
- The load average before and after the timing is recorded: on a busy
  machine absolute milliseconds move, the side-by-side ratios less so.

The JSON written to --out holds every repetition's median, the calls per
repetition, the device kind, jax version, CPU count and load, and the
command line.
"""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from compression import accounting, export
from experiments import models, train
from experiments import workdir as workdir_lib

FLAGS = flags.FLAGS
EXPORT = os.path.join("export", "params.safetensors")
IMAGE_SHAPE = (28, 28, 1)


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_list("runs", None, "Run workdirs holding export/params.safetensors; the first is the reference.")
    flags.DEFINE_list("batch_sizes", ["1", "128"], "Batch sizes to time.")
    flags.DEFINE_integer("repeats", 7, "Interleaved repetitions per model and batch size.")
    flags.DEFINE_float("seconds_per_repeat", 0.25, "About how long one repetition of one model runs.")
    flags.DEFINE_integer("num_classes", 10, "Classes of the image models.")
    flags.DEFINE_string("backend", "cpu", "JAX backend to time on.")
    flags.DEFINE_integer("seed", 0, "Seed of the random input images.")
    flags.DEFINE_string("out", None, "Optional JSON file for the numbers.")
    flags.mark_flags_as_required(["runs"])


def run_name(run_dir: str) -> str:
    """A short label: the workdir's name, with its parent for seed_K folders."""
    path = os.path.normpath(run_dir)
    base = os.path.basename(path)
    return f"{os.path.basename(os.path.dirname(path))}/{base}" if base.startswith("seed_") else base


def load_run(run_dir: str, num_classes: int = 10) -> dict[str, Any]:
    """The exported model of `run_dir`: model built from the header's config, params decoded, sizes."""
    path = os.path.join(run_dir, EXPORT)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: --runs takes run workdirs that hold {EXPORT}")
    header = export.read_header(path)
    if not header["metadata"].get("model"):
        raise ValueError(f"{path} records no model config in its metadata; it cannot be rebuilt")
    # The model's other collections (BatchNorm's running statistics) are stored beside its params.
    model_config, params, model_state = train.read_export(path)
    if model_config.get("name") == "char_transformer":
        # A language model's classes are its vocabulary, which its token embedding holds.
        num_classes = int(np.shape(params["embed"]["embedding"])[0])
        example_input = {"kind": "tokens", "shape": (int(model_config["max_len"]),), "dtype": "int32",
                         "high": num_classes}
        output_shape = (int(model_config["max_len"]), num_classes)
    else:
        example_input = {"kind": "images", "shape": IMAGE_SHAPE, "dtype": "uint8", "high": 256}
        output_shape = (num_classes,)
    model = models.build_model(ml_collections.ConfigDict(model_config), num_classes)
    accuracy = None
    results_path = os.path.join(run_dir, "results.json")
    if os.path.exists(results_path):
        with open(results_path) as f:
            accuracy = json.load(f).get("metrics", {}).get("test_accuracy")
    matrices = accounting.weight_matrices(params)
    example = np.zeros((1,) + tuple(example_input["shape"]), example_input["dtype"])
    return {
        "run": run_name(run_dir), "dir": run_dir, "model": model_config, "module": model, "params": params,
        "params_total": accounting.params_total(params), "params_nonzero": accounting.params_nonzero(params),
        "weights_total": accounting.params_total(matrices), "weights_nonzero": accounting.params_nonzero(matrices),
        "bytes_exported": os.path.getsize(path),
        "codecs": sorted({record["codec"] for record in header["params"].values()}),
        "flops_per_example": accounting.count_flops(
            lambda p, x: models.apply_model(model, p, x, model_state=model_state), params, example),
        "model_state": model_state,
        "test_accuracy": accuracy, "input": example_input, "output_shape": output_shape,
    }


def _forward(module: Any):
    return jax.jit(lambda variables, x: models.apply_model(module, variables[0], x, model_state=variables[1]))


def _time_calls(fn, params, x, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn(params, x).block_until_ready()
        times.append(time.perf_counter() - start)
    return times


def benchmark(run_dirs: Sequence[str], batch_sizes: Sequence[int] = (1, 128), repeats: int = 7,
              seconds_per_repeat: float = 0.25, num_classes: int = 10, backend: str = "cpu",
              seed: int = 0, min_calls: int = 3, max_calls: int = 20000) -> dict[str, Any]:
    """Times each run's exported model side by side (see the module docstring); returns the numbers.

    The result holds one row per run (in the given order, the first being
    the reference) with sizes, accuracy (from results.json when present),
    per batch size the median ms per call, every repetition's median, the
    calls per repetition and the speedup against the reference.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    batch_sizes = [int(b) for b in batch_sizes]
    if not batch_sizes or min(batch_sizes) < 1:
        raise ValueError(f"batch sizes must be positive integers (got {batch_sizes})")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1 (got {repeats})")
    device = jax.devices(backend)[0]
    rng = np.random.default_rng(seed)
    runs = [load_run(d, num_classes) for d in run_dirs]
    spec = runs[0]["input"]
    for r in runs[1:]:
        if r["input"] != spec:
            raise ValueError(f"{r['run']} reads {r['input']}, the reference {runs[0]['run']} reads {spec}: "
                             f"time models of one input kind side by side")
    inputs = {b: jax.device_put(rng.integers(0, spec["high"], size=(b,) + tuple(spec["shape"]),
                                             dtype=spec["dtype"]), device)
              for b in batch_sizes}
    for r in runs:
        r["fn"] = _forward(r["module"])
        r["device_params"] = jax.device_put((r["params"], r["model_state"]), device)

    calls: dict[tuple[int, int], int] = {}
    for i, r in enumerate(runs):
        for b in batch_sizes:
            out = r["fn"](r["device_params"], inputs[b])  # compiles
            if out.shape != (b,) + tuple(r["output_shape"]) or not bool(np.all(np.isfinite(np.asarray(out)))):
                raise ValueError(f"{r['run']}: forward pass gave shape {out.shape} or non-finite logits")
            probe = float(np.median(_time_calls(r["fn"], r["device_params"], inputs[b], min_calls)))
            calls[i, b] = int(min(max_calls, max(min_calls, math.ceil(seconds_per_repeat / max(probe, 1e-7)))))

    load_before = os.getloadavg()
    per_repeat: dict[tuple[int, int], list[float]] = {(i, b): [] for i in range(len(runs)) for b in batch_sizes}
    for rep in range(repeats):
        order = [(rep + k) % len(runs) for k in range(len(runs))]
        for b in batch_sizes:
            for i in order:
                r = runs[i]
                times = _time_calls(r["fn"], r["device_params"], inputs[b], calls[i, b])
                per_repeat[i, b].append(1000 * float(np.median(times)))
    load_after = os.getloadavg()

    rows = []
    for i, r in enumerate(runs):
        ms = {str(b): float(np.median(per_repeat[i, b])) for b in batch_sizes}
        rows.append({k: r[k] for k in ("run", "dir", "model", "params_total", "params_nonzero", "weights_total",
                                       "weights_nonzero", "bytes_exported", "codecs", "flops_per_example",
                                       "test_accuracy")}
                    | {"ms_median": ms,
                       "ms_per_repeat": {str(b): per_repeat[i, b] for b in batch_sizes},
                       "calls_per_repeat": {str(b): calls[i, b] for b in batch_sizes}})
    for row in rows:
        row["speedup"] = {b: rows[0]["ms_median"][b] / row["ms_median"][b] for b in row["ms_median"]}
    return {
        "reference": rows[0]["run"], "batch_sizes": batch_sizes, "repeats": repeats,
        "seconds_per_repeat": seconds_per_repeat, "backend": backend, "device": device.device_kind,
        "platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
        "load_average_before": list(load_before), "load_average_after": list(load_after),
        "jax": jax.__version__, "rows": rows,
        "input": f"random {spec['dtype']} {spec['kind']} {tuple(spec['shape'])} below {spec['high']}, seed {seed}",
    }


def format_table(result: dict[str, Any]) -> str:
    """The printed table: run, format, accuracy, sizes, MFLOPs, then ms and speedup per batch size."""
    sizes = [str(b) for b in result["batch_sizes"]]
    header = ["run", "export", "test acc %", "params", "nonzeros", "nonzero weights", "bytes", "MFLOP/ex"]
    for b in sizes:
        header += [f"ms b={b}", f"x b={b}"]
    lines = [header]
    for r in result["rows"]:
        acc = "-" if r["test_accuracy"] is None else f"{100 * r['test_accuracy']:.2f}"
        line = [r["run"], "+".join(r["codecs"]), acc, f"{r['params_total']:,}", f"{r['params_nonzero']:,}",
                f"{r['weights_nonzero']:,}", f"{r['bytes_exported']:,}", f"{r['flops_per_example'] / 1e6:.3f}"]
        for b in sizes:
            line += [f"{r['ms_median'][b]:.4f}", f"{r['speedup'][b]:.2f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str]) -> Optional[int]:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    result = benchmark(FLAGS.runs, [int(b) for b in FLAGS.batch_sizes], FLAGS.repeats, FLAGS.seconds_per_repeat,
                       FLAGS.num_classes, FLAGS.backend, FLAGS.seed)
    result["command"] = " ".join(["python -m experiments.benchmark_inference"] + sys.argv[1:])
    print(format_table(result))
    print(f"reference: {result['reference']}; x = its ms / this ms (> 1 is faster); {result['device']} "
          f"({result['backend']}, {result['cpu_count']} CPUs, load {result['load_average_before'][0]:.1f} -> "
          f"{result['load_average_after'][0]:.1f}), jax {result['jax']}; median of {result['repeats']} "
          f"interleaved repetitions. Sparse exports are densified at load: they run the dense shapes.")
    if FLAGS.out:
        workdir_lib.write_json(FLAGS.out, result)
        print(f"wrote {FLAGS.out}")
    return None


if __name__ == "__main__":
    define_flags()
    app.run(main)
