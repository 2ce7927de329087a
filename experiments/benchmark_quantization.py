"""The quantization benchmark: QAT step time against float step time, and exported bytes against the formula.

    python -m experiments.benchmark_quantization [--repeats=3] [--steps=N] [--dataset=synthetic]
        [--parts=step_time] [--parts=bytes] [--models=lenet5] [--out=FILE]

The default (both parts, both models) takes about 8-10 minutes on a busy
2-core CPU, most of it the Transformer's step time (at least MIN_TIMED_STEPS
= 40 timed steps of about 0.6 s per repetition and variant). --out writes every number (per-repetition ms/step, medians,
ratios, compile counts, load averages, the bytes rows), the device and the
jax version as JSON.

1. Step time. For LeNet-5 (configs/baseline_lenet5.py, batch 128) and the
   char Transformer (configs/baseline_char_transformer.py, batch 32 x 128
   synthetic tokens, as in experiments.benchmark_step), three driver runs of
   the same model, optimizer and in-memory batches:

   - float: no compression stages;
   - qat: `quantization_common.weight_stage(8)` (symmetric uniform per
     output channel, min-max range recalibrated every step), over every
     kernel of LeNet-5, and over the kernels and both embeddings of the
     Transformer (the ablation_bits_char_transformer selection);
   - qat+act: that stage plus `quantization_common.activation_stage(8)` (the
     input of every layer with a kernel, asymmetric per tensor, calibrated on
     compression.init_batches = 2 batches).

   Each is timed exactly as experiments.benchmark_step times the driver (its
   `batch_pool`, `driver_loop`, `timed_steps` and `interleaved_ms_per_step`):
   `train.train_loop` with the config's log and checkpoint cadence, a fresh
   workdir per call, compilation excluded by a warm-up call, time per step =
   (T(base + steps) - T(base)) / steps, so once-per-loop costs cancel. The
   same `steps` serve all three runs; with --steps=0 they are sized so that
   one float loop lasts about --seconds_per_run, from a calibration of the
   float run (the same difference of two loops, doubled until it lasts
   0.25 s), and never fewer than --min_steps (40): with the 7 steps that 4 s
   gave the Transformer, its qat/float ratio moved by ±8 % between
   repetitions, too wide to tell a 5 % cost from none. Repetitions are interleaved (float, qat, qat+act, float, ...);
   the table gives the median ms/step of each and the ratios of the medians,
   qat/float and qat+act/float (the issue aims at qat/float <= 1.3). On a
   busy machine the absolute milliseconds move; the side-by-side ratios
   less so (the load average before and after is recorded).

2. Bytes. For LeNet-300-100 and LeNet-5 with randomly initialized params (a
   size check: the bytes do not depend on training), each weight setting of
   `quantization_common.weight_stage` at 8, 4, 3 and 2 bits and binary (1
   bit, BWN) is built with `compression.registry.build("quantize", ...)`,
   exported with its `export` and `compression.export.export_params` (the
   model config as metadata, as `train.export_run` writes it), and the
   file's size is set beside

       formula = sum over quantized kernels of ceil(n * bits / 8)
                 + 4 bytes per stored scale, zero point (only where nonzero)
                   and codebook entry
                 + 4 bytes per float32 parameter left unquantized (biases),

   counted from the transform's state, not from the file. The payload (the
   tensors' bytes, `export.payload_report`) should equal the formula when
   every kernel is packed densely; the file adds the safetensors container
   (an 8-byte length and a JSON header naming every tensor and codec), a
   fixed cost of a few KB that is a larger share of a 1- or 2-bit file. The
   `packed` codec picks a sparse layout (codes of the nonzero values plus a
   bitmap or gaps) where that is smaller, which can happen at 2 bits, where
   the symmetric grid {-1, 0, 1} rounds most weights to 0; the table's
   `index` column names the layout of each kernel, and the payload is then
   below the formula. A float32 row (no quantization) is the reference.
"""
from __future__ import annotations

import functools
import math
import os
import sys
import tempfile
from typing import Any, Callable, Optional, Sequence

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from compression import export, registry
from compression.transform import export_model
from compression.selection import leaves_by_path
from configs import baseline_lenet300, baseline_lenet5, quantization_common as qc
from experiments import benchmark_step, models
from experiments import workdir as workdir_lib
from experiments import data as data_lib

FLAGS = flags.FLAGS

MODELS = ("lenet5", "char_transformer")
VARIANTS = ("float", "qat", "qat+act")
# The Transformer's quantized weights: every kernel and both embeddings (configs/ablation_bits_char_transformer.py).
TRANSFORMER_WEIGHTS = (".*kernel", "embed/embedding", "pos_embed")
BITS_MODELS = ("lenet300", "lenet5")
BITS = (32, 8, 4, 3, 2, 1)  # 32: the float reference; 1: binary (BWN)
TARGET_RATIO = 1.3
# Timed steps per repetition at least (with --steps=0), so that a ratio's range over the
# repetitions is narrow enough to read (the report marks rows timed with fewer).
MIN_TIMED_STEPS = 40


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_multi_enum("parts", ["step_time", "bytes"], ["step_time", "bytes"], "What to measure.")
    flags.DEFINE_multi_enum("models", list(MODELS), list(MODELS), "Models of the step-time part.")
    flags.DEFINE_enum("dataset", "fashion_mnist", ["synthetic", "fashion_mnist"],
                      "LeNet-5's data (fashion_mnist needs the TFDS data in --data_dir; synthetic for machines "
                      "without it); the Transformer always uses synthetic tokens.")
    flags.DEFINE_string("data_dir", ".data", "TFDS data directory for --dataset=fashion_mnist.")
    flags.DEFINE_integer("repeats", 3, "Interleaved repetitions of each run.")
    flags.DEFINE_integer("steps", 0, "Timed steps per repetition (after `base` steps); 0 sizes them per model "
                         "from --seconds_per_run.")
    flags.DEFINE_float("seconds_per_run", 4.0, "With --steps=0: about how long one timed float loop runs.")
    flags.DEFINE_integer("min_steps", MIN_TIMED_STEPS, "With --steps=0: at least this many timed steps "
                         "per repetition, however long the float loop takes.")
    flags.DEFINE_bool("progress", True, "Show the driver's progress bar (it is part of the timed loop).")
    flags.DEFINE_string("out", None, "Optional JSON file for the numbers.")


# ---------------------------------------------------------------- step time


def benchmark_config(model_name: str, dataset_name: str = "synthetic",
                     data_dir: str = ".data") -> tuple[ml_collections.ConfigDict, data_lib.Dataset]:
    """(config, dataset) of the float run of `model_name` ('lenet5' or 'char_transformer'), one device."""
    if model_name == "char_transformer":
        return benchmark_step.benchmark_config(model_name, "synthetic", data_dir)
    if model_name != "lenet5":
        raise ValueError(f"unknown model {model_name!r}; use one of {list(MODELS)}")
    config = baseline_lenet5.get_config()
    if dataset_name == "synthetic":
        config.dataset = {"name": "synthetic", "input_shape": (28, 28, 1), "num_classes": 10,
                          "train_size": 4096, "eval_size": 512}
    elif dataset_name != config.dataset.name:
        raise ValueError(f"LeNet-5 runs on 'synthetic' or 'fashion_mnist', not {dataset_name!r}")
    config.data_dir = data_dir
    config.mesh.data = 1
    config.mesh.model = 1
    return config, data_lib.load_dataset(config.dataset, data_dir)


def variant_configs(config: ml_collections.ConfigDict, weights: Any = ".*kernel", bits: int = 8,
                    init_batches: int = 2) -> dict[str, ml_collections.ConfigDict]:
    """{float, qat, qat+act}: `config` without stages, with the weight stage, with weight and activation stages."""
    float_config = config.copy_and_resolve_references()
    qc.set_stages(float_config)
    qat = config.copy_and_resolve_references()
    qc.set_stages(qat, qc.weight_stage(bits, select=weights))
    qat_act = config.copy_and_resolve_references()
    qc.set_stages(qat_act, qc.weight_stage(bits, select=weights), qc.activation_stage(bits),
                  init_batches=init_batches)
    return {"float": float_config, "qat": qat, "qat+act": qat_act}


def calibrate_ms_per_step(loop: Callable[[int], float], seconds: float = 0.25, max_steps: int = 1 << 14) -> float:
    """ms/step of `loop` as (T(2 + n) - T(2)) / n, n doubled until the difference lasts `seconds`."""
    count = 8
    while True:
        difference = loop(2 + count) - loop(2)
        if difference >= seconds or count >= max_steps:
            return max(1000 * difference / count, 1e-3)
        count *= 2


def benchmark_variants(configs: dict[str, ml_collections.ConfigDict], dataset: data_lib.Dataset, *,
                       name: str = "", repeats: int = 3, steps: int = 0, seconds_per_run: float = 4.0,
                       progress: bool = True, min_steps: int = MIN_TIMED_STEPS,
                       reference: str = "float") -> dict[str, Any]:
    """Times the driver on each config (same data, same steps, interleaved); ms/step, medians, ratios to `reference`.

    With `steps` = 0 the timed steps are sized from `seconds_per_run`, but never fewer than
    `min_steps`; a positive `steps` is taken as given. (The ratios keep the key
    `ratio_to_float` whatever the reference run is called; `reference` names it.)
    """
    if reference not in configs:
        raise ValueError(f"the configs need a {reference!r} run to compare against (got {sorted(configs)})")
    first = configs[reference]
    for key in ("batch_size", "log_every", "checkpoint_every"):
        if len({int(c.train[key]) for c in configs.values()}) != 1:
            raise ValueError(f"the runs differ in train.{key}; a side-by-side timing needs them equal")
    batches = benchmark_step.batch_pool(first, dataset)
    loops = {which: benchmark_step.driver_loop(c, dataset, batches, progress) for which, c in configs.items()}
    for loop in loops.values():
        loop(2)  # compiles each driver's step (and warms orbax, tqdm, the log)
    log_every = int(first.train.log_every)
    checkpoint_every = int(first.train.checkpoint_every)
    float_ms = calibrate_ms_per_step(loops[reference]) if steps <= 0 else float("nan")
    if steps <= 0:
        steps = max(min_steps, math.ceil(1000 * seconds_per_run / float_ms))
    base, steps = benchmark_step.timed_steps(float_ms, seconds_per_run, log_every, steps)

    load_before = _load_average()
    per_step = benchmark_step.interleaved_ms_per_step(loops, base, steps, repeats)
    medians = {which: float(np.median(ms)) for which, ms in per_step.items()}
    ratios = {which: medians[which] / medians[reference] for which in configs if which != reference}
    return {
        "model": name or first.model.name, "dataset": first.dataset.name,
        "batch_size": int(first.train.batch_size), "device": jax.devices()[0].device_kind,
        "steps": steps, "base_steps": base, "repeats": repeats,
        "log_every": log_every, "checkpoint_every": checkpoint_every,
        "metric_fetches_timed": (base + steps - 1) // log_every - (base - 1) // log_every,
        "checkpoints_timed": (base + steps - 1) // checkpoint_every - (base - 1) // checkpoint_every,
        "stages": {which: [dict(s) for s in c.compression.stages] for which, c in configs.items()},
        "init_batches": {which: int(c.compression.init_batches) for which, c in configs.items()},
        "ms_per_step": per_step, "ms_median": medians, "ratio_to_float": ratios,
        "ratio_to_float_per_repeat": {which: [v / f for v, f in zip(per_step[which], per_step[reference])]
                                      for which in ratios},
        "reference": reference,
        "compiles": {which: int(loop.train_step._cache_size()) for which, loop in loops.items()},
        "load_average": {"before": load_before, "after": _load_average()},
    }


def run_step_time(model_names: Sequence[str], dataset_name: str, data_dir: str, **kwargs) -> list[dict]:
    """benchmark_variants for each model: LeNet-5 over '.*kernel', the Transformer over kernels and embeddings."""
    rows = []
    for model_name in dict.fromkeys(model_names):
        config, dataset = benchmark_config(model_name, dataset_name, data_dir)
        weights = TRANSFORMER_WEIGHTS if model_name == "char_transformer" else ".*kernel"
        rows.append(benchmark_variants(variant_configs(config, weights), dataset, name=model_name, **kwargs))
    return rows


def format_step_table(rows: list[dict[str, Any]]) -> str:
    """Model, ms/step of each run (medians), the ratios to float, the device."""
    header = ("model", "dataset", "batch", "steps", "float ms/step", "qat ms/step", "qat+act ms/step",
              "qat/float", "qat+act/float", "device")
    lines = [header] + [(r["model"], r["dataset"], str(r["batch_size"]), str(r["steps"]),
                         *(f"{r['ms_median'][v]:.3f}" for v in VARIANTS),
                         *(f"{r['ratio_to_float'][v]:.3f}" for v in VARIANTS[1:]), r["device"]) for r in rows]
    return _table(lines)


# ---------------------------------------------------------------- bytes


def bits_model_config(model_name: str) -> ml_collections.ConfigDict:
    """The model block of LeNet-300-100's or LeNet-5's baseline config."""
    configs = {"lenet300": baseline_lenet300, "lenet5": baseline_lenet5}
    if model_name not in configs:
        raise ValueError(f"unknown model {model_name!r}; use one of {list(configs)}")
    return configs[model_name].get_config().model


@functools.lru_cache(maxsize=None)
def random_params(model_name: str, seed: int = 0) -> Any:
    """The model's freshly initialized params as numpy (its own initializers; cached: one compile per model)."""
    model = models.build_model(bits_model_config(model_name), 10)
    return jax.device_get(jax.jit(lambda k: model.init(k, np.zeros((1, 28, 28, 1), np.uint8))["params"])(
        jax.random.PRNGKey(seed)))


def formula_bytes(params: Any, state: dict[str, Any]) -> dict[str, int]:
    """The formula's bytes, from the quantize transform's state: packed codes, scales, float leaves."""
    codes = scales = 0
    for path, s in state.items():
        n = int(np.size(leaves_by_path(params)[path]))
        if "qmin" in s:  # affine: codes at `bits`, a scale per channel, a zero point where one is nonzero
            bits = int(s["bits"])
            stored = np.size(s["scale"]) + (np.size(s["zero_point"]) if np.any(np.asarray(s["zero_point"])) else 0)
        elif "delta" in s:  # ternary: 2-bit codes, a 3-entry codebook per channel
            bits, stored = 2, 3 * np.size(s["positive"])
        else:  # binary: 1-bit codes, a 2-entry codebook per channel
            bits, stored = 1, 2 * np.size(s["scale"])
        codes += math.ceil(n * bits / 8)
        scales += 4 * int(stored)
    floats = 4 * sum(int(np.size(leaf)) for path, leaf in leaves_by_path(params).items() if path not in state)
    return {"codes": codes, "scales": scales, "float_params": floats, "total": codes + scales + floats}


def measure_bytes(model_name: str, bits: int, seed: int = 0) -> dict[str, Any]:
    """Exports `model_name`'s random params quantized at `bits` (32: float) and sets the bytes beside the formula."""
    model_config = bits_model_config(model_name)
    params = random_params(model_name, seed)
    stage = qc.weight_stage(bits)
    config_dict = model_config.to_dict()
    if stage is None:
        exported, state = params, {}
    else:
        settings = {k: v for k, v in stage.items() if k != "technique"}
        transform = registry.build(stage["technique"], **settings)
        # One compiled program each for init and apply (op by op, the many small reductions compile one by one).
        trainable, state = jax.jit(transform.init)(params, jax.random.PRNGKey(seed))
        effective = jax.device_get(jax.jit(transform.apply)(trainable, state))
        state = jax.device_get(state)
        exported, config_dict = export_model(transform, effective, state, config_dict)
    formula = formula_bytes(params, state)
    with tempfile.TemporaryDirectory(prefix="benchmark_quantization_") as tmp:
        path = os.path.join(tmp, "params.safetensors")
        file_bytes = export.export_params(path, exported, metadata={"model": config_dict})
        payload = export.payload_report(path)
        records = export.read_header(path)["params"]
    layouts = sorted({records[p].get("index", "dense") for p in state}) or ["float"]
    return {
        "model": model_name, "bits": bits, "scheme": "float32" if stage is None else stage["scheme"],
        "params": sum(int(np.size(leaf)) for leaf in leaves_by_path(params).values()),
        "params_quantized": sum(int(np.size(leaves_by_path(params)[p])) for p in state),
        "quantized_leaves": sorted(state), "index": layouts,
        "bytes_file": int(file_bytes), "bytes_formula": formula["total"], "formula": formula, **payload,
        "file_vs_formula": (file_bytes - formula["total"]) / formula["total"],
        "payload_vs_formula": (payload["bytes_payload"] - formula["total"]) / formula["total"],
    }


def run_bytes(model_names: Sequence[str] = BITS_MODELS, bit_widths: Sequence[int] = BITS) -> list[dict]:
    return [measure_bytes(m, b) for m in model_names for b in bit_widths]


def format_bytes_table(rows: list[dict[str, Any]]) -> str:
    """Per model and bit-width: file, formula, payload and header bytes, their relative differences."""
    header = ("model", "weights", "params", "file B", "formula B", "payload B", "header B",
              "(file-formula)/formula", "(payload-formula)/formula", "bits/param (file)", "index")
    lines = [header] + [(r["model"], "float32" if r["bits"] == 32 else
                         f"{r['bits']} bit ({'binary' if r['scheme'] == 'binary' else r['scheme']})",
                         str(r["params"]), str(r["bytes_file"]), str(r["bytes_formula"]), str(r["bytes_payload"]),
                         str(r["bytes_header"]), f"{100 * r['file_vs_formula']:+.2f}%",
                         f"{100 * r['payload_vs_formula']:+.2f}%", f"{8 * r['bytes_file'] / r['params']:.3f}",
                         ",".join(r["index"])) for r in rows]
    return _table(lines)


# ---------------------------------------------------------------- shared


def _table(lines: list[Sequence[str]]) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def _load_average() -> Optional[list[float]]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    result: dict[str, Any] = {"jax": jax.__version__, "device": jax.devices()[0].device_kind,
                              "cpu_count": os.cpu_count()}
    if "step_time" in FLAGS.parts:
        rows = run_step_time(FLAGS.models, FLAGS.dataset, FLAGS.data_dir, repeats=FLAGS.repeats,
                             steps=FLAGS.steps, seconds_per_run=FLAGS.seconds_per_run, progress=FLAGS.progress,
                             min_steps=FLAGS.min_steps)
        result["step_time"] = rows
        print()
        print(f"Step time: the driver's train_loop, median ms/step of {FLAGS.repeats} interleaved repetitions "
              f"(aim: qat/float <= {TARGET_RATIO})")
        print(format_step_table(rows))
        for r in rows:
            print(f"{r['model']}: per repeat " + "; ".join(
                f"{v} {[round(ms, 3) for ms in r['ms_per_step'][v]]} ms" for v in VARIANTS)
                + f"; base {r['base_steps']} steps; timed difference holds {r['metric_fetches_timed']} metric "
                f"fetches and {r['checkpoints_timed']} cadence checkpoints; compiles {r['compiles']}; "
                f"load average {r['load_average']['before']} -> {r['load_average']['after']}")
    if "bytes" in FLAGS.parts:
        rows = run_bytes()
        result["bytes"] = rows
        print()
        print("Exported bytes (random params): formula = sum ceil(n*bits/8) over quantized kernels "
              "+ 4 B per scale/zero point/codebook entry + 4 B per float param")
        print(format_bytes_table(rows))
    if FLAGS.out:
        result["command"] = " ".join(["python -m experiments.benchmark_quantization"] + sys.argv[1:])
        workdir_lib.write_json(FLAGS.out, result)
        print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
