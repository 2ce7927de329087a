"""The step benchmark: the whole driver loop per step against a minimal hand-written jitted loop.

    python -m experiments.benchmark_step [--repeats=3] [--steps=N] [--dataset=synthetic] [--out=FILE]

For LeNet-300-100 (configs/baseline_lenet300.py, batch 128), LeNet-5 with
BatchNorm (configs/baseline_lenet5.py with model.batch_norm) and the char
Transformer (configs/baseline_char_transformer.py, synthetic tokens), two
loops train the same model with the same optimizer
(`train.build_optimizer`), the same loss (`train.cross_entropy`) and the
same in-memory batches (a pool of numpy batches from `data.train_batch`,
batch `s` being pool[s % size]):

- driver: `train.train_loop` exactly as a run uses it, with the config's own
  train settings (log_every, checkpoint_every), the progress bar, a
  MetricsLog and a fresh temporary workdir per repetition; only the data
  pipeline is replaced, by `batches=`.
- hand: `state, loss = step(state, batch)` in a Python for-loop, `step`
  jitted with the state donated, numpy batches passed straight to it, no
  metrics, no checkpoints and no host sync until the final
  `block_until_ready`.

Both run on one device (the config's mesh is set to 1 x 1; the hand loop
has no mesh).

Method. Compilation is excluded by a warm-up call of each loop before any
timing (the driver's jitted step lives on its `Run`, so later `train_loop`
calls reuse it; the compile counts are reported). T(n) is the wall time of
one whole loop of n steps: for the driver, the `train_loop` call from entry
to return (checkpoint manager, progress bar, every step, the final
checkpoint written); for the hand loop, from before the first dispatch to the
end of `block_until_ready`. The time per step is

    (T(base + steps) - T(base)) / steps,

measured the same way for both, so costs paid once per loop (creating the
checkpoint manager, orbax's first checkpoint at step 1, the final save,
pipeline fill and drain) cancel, and what remains is the steady-state cost of
`steps` steps, the periodic costs included at the config's cadence: when
`steps` >= log_every it is rounded up to a multiple of log_every and
base = log_every, so the difference holds exactly steps / log_every metric
fetches and every cadence checkpoint at steps in [base, base + steps) (both counts
are reported, and how long those checkpoints held the driver's loop, by the same
difference: on an H200 they were about a fifth of the driver's overhead on the char
Transformer). `--steps=0` (the default) sizes `steps` per model so that one
hand loop lasts about --seconds_per_run, from a calibration after the
warm-up; the default finishes in 2-3 minutes on a 2-core CPU. Repetitions
are interleaved (driver, hand, driver, hand, ...; 5 by default); the table
gives the median ms/step of each, the ratio of the medians and the range of
the per-repetition ratios.
"""
from __future__ import annotations

import functools
import math
import tempfile
import time
from typing import Any, Callable

import jax
import numpy as np
import optax
from absl import app, flags, logging

from configs import baseline_char_transformer, baseline_lenet5, baseline_lenet300, gpt2_small
from experiments import data as data_lib
from experiments import models, train
from experiments import workdir as workdir_lib
from experiments.metrics_log import MetricsLog

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_multi_enum("models", list(MODELS), list(MODELS + EXTRA_MODELS), "Models to benchmark.")
    flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "fashion_mnist"],
                      "LeNet-300-100's data (fashion_mnist needs the TFDS data in --data_dir); the "
                      "Transformer always uses synthetic tokens.")
    flags.DEFINE_string("data_dir", ".data", "TFDS data directory for --dataset=fashion_mnist.")
    flags.DEFINE_integer("repeats", 5, "Interleaved repetitions of each loop.")
    flags.DEFINE_integer("steps", 0, "Timed steps per repetition (after `base` steps); 0 sizes them per model "
                         "from --seconds_per_run.")
    flags.DEFINE_float("seconds_per_run", 6.0, "With --steps=0: about how long one timed hand loop runs.")
    flags.DEFINE_bool("progress", True, "Show the driver's progress bar (it is part of the timed loop).")
    flags.DEFINE_string("out", None, "Optional JSON file for the numbers.")

POOL_SIZE = 32  # distinct in-memory batches, cycled
MODELS = ("lenet300", "lenet5_bn", "char_transformer")
# Rows run only when named (--models): the precision policy and the GPT-2-small shape
# (configs/gpt2_small.py: bfloat16 compute; gpt2_small is its full shape, batch 16 at context
# 1024, for an accelerator; gpt2_small_quick its CPU-sized batch 8 at context 128).
EXTRA_MODELS = ("char_transformer_bf16", "gpt2_small", "gpt2_small_quick")


def benchmark_config(model_name: str, dataset_name: str = "synthetic", data_dir: str = ".data"):
    """(config, dataset) for `model_name` (one of MODELS) on a one-device mesh.

    lenet5_bn is the Caffe LeNet-5 with BatchNorm after each convolution: the
    row where the driver carries `batch_stats` through the step;
    char_transformer_bf16 is the char Transformer under the bfloat16
    precision policy; gpt2_small[_quick] is configs/gpt2_small.py (EXTRA_MODELS).
    """
    if model_name in ("lenet300", "lenet5_bn"):
        if model_name == "lenet300":
            config = baseline_lenet300.get_config()
        else:
            config = baseline_lenet5.get_config()
            config.model.batch_norm = True
        if dataset_name == "synthetic":
            config.dataset = {"name": "synthetic", "input_shape": (28, 28, 1), "num_classes": 10,
                              "train_size": 4096, "eval_size": 512}
        elif dataset_name != config.dataset.name:
            raise ValueError(f"{model_name} runs on 'synthetic' or 'fashion_mnist', not {dataset_name!r}")
    elif model_name in ("char_transformer", "char_transformer_bf16"):
        config = baseline_char_transformer.get_config()
        config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (),
                          "num_classes": 256, "seq_len": int(config.dataset.seq_len),
                          "train_size": 1 << 16, "eval_size": 4096}
        if model_name.endswith("_bf16"):
            config.precision.compute = "bfloat16"
    elif model_name in ("gpt2_small", "gpt2_small_quick"):
        config = gpt2_small.get_config("quick" if model_name.endswith("_quick") else "")
        config.dataset.train_size = POOL_SIZE * int(config.train.batch_size) * int(config.dataset.seq_len) + 1
        # The full run's cadence for both rows: quick's checkpoint every 3 steps (1.5 GB of
        # weights and Adam state) is there to test a resume, not how a run of this size runs.
        full = gpt2_small.get_config()
        config.train.update(log_every=full.train.log_every, checkpoint_every=full.train.checkpoint_every)
    else:
        raise ValueError(f"unknown model {model_name!r}; use one of {list(MODELS + EXTRA_MODELS)}")
    config.data_dir = data_dir
    config.mesh.data = 1
    config.mesh.model = 1
    return config, data_lib.load_dataset(config.dataset, data_dir)


def batch_pool(config: Any, dataset: Any, size: int = POOL_SIZE) -> Callable[[int], dict]:
    """batches(step) -> dict of numpy arrays, cycling through `size` training batches held in memory."""
    pool = [data_lib.train_batch(dataset, int(config.seed), s, int(config.train.batch_size),
                                 int(config.dataset.get("seq_len", 0))) for s in range(size)]
    return lambda step: pool[step % size]


def driver_loop(config: Any, dataset: Any, batches: Callable[[int], dict], progress: bool):
    """loop(n) -> seconds of one `train.train_loop` call of n steps in a fresh workdir; loop.train_step;
    loop.checkpoint_holds: (n, seconds the cadence checkpoints held that call) per call."""
    run = train.build_run(config, dataset)

    def loop(num_steps: int) -> float:
        run.config.train.stop_after = num_steps
        run.num_steps = max(run.num_steps, num_steps)
        with tempfile.TemporaryDirectory(prefix="benchmark_step_") as workdir:
            log = MetricsLog(workdir)
            try:
                start = time.perf_counter()
                timing = train.train_loop(run, workdir, log, progress, batches=batches)
                seconds = time.perf_counter() - start
            finally:
                log.close()
        if timing["steps_this_invocation"] != num_steps:
            raise RuntimeError(f"the driver ran {timing['steps_this_invocation']} steps, not {num_steps}")
        loop.checkpoint_holds.append((num_steps, timing["checkpoint_hold_s"]))
        return seconds

    loop.train_step = run.train_step
    loop.checkpoint_holds = []
    return loop


def hand_loop(config: Any, dataset: Any, batches: Callable[[int], dict]):
    """loop(n) -> seconds of n steps of a minimal jitted Flax + optax loop; loop.train_step.

    A model with BatchNorm carries its `batch_stats` as the Flax examples do
    (mutable=["batch_stats"] in training).
    """
    model = models.build_model(config.model, dataset.num_classes, config.precision.compute)
    optimizer = train.build_optimizer(config, int(config.train.num_steps))
    example = batches(0)["inputs"][:1]
    variables = jax.jit(lambda key: model.init(key, example))(jax.random.PRNGKey(int(config.seed)))
    params, batch_stats = variables["params"], variables.get("batch_stats")
    state = (params, jax.jit(optimizer.init)(params), batch_stats)

    @functools.partial(jax.jit, donate_argnums=0)
    def train_step(state, batch):
        params, opt_state, batch_stats = state

        def loss_fn(params):
            if batch_stats is None:
                logits, new_stats = model.apply({"params": params}, batch["inputs"], train=True), None
            else:
                logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["inputs"],
                                              train=True, mutable=["batch_stats"])
                new_stats = updates["batch_stats"]
            loss_sum, _, count = train.cross_entropy(logits, batch["targets"])
            return loss_sum / count, new_stats

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, new_stats), loss

    def loop(num_steps: int) -> float:
        nonlocal state
        start = time.perf_counter()
        for s in range(num_steps):
            state, loss = train_step(state, batches(s))
        jax.block_until_ready((state, loss))
        return time.perf_counter() - start

    loop.train_step = train_step
    return loop


def timed_steps(hand_ms: float, seconds_per_run: float, log_every: int, steps: int = 0) -> tuple[int, int]:
    """(base, steps): `steps` from the flag or sized from the hand loop's ms/step, and the base length."""
    if steps <= 0:
        steps = max(4, math.ceil(1000 * seconds_per_run / hand_ms))
    if steps >= log_every:
        return log_every, log_every * math.ceil(steps / log_every)
    return 2, steps


def interleaved_ms_per_step(loops: dict[str, Callable[[int], float]], base: int, steps: int,
                            repeats: int) -> dict[str, list[float]]:
    """{name: ms/step per repetition}, each (T(base + steps) - T(base)) / steps; loops interleaved.

    Repetition r starts with loop r (mod the number of loops) and takes the
    others in turn, so no loop always runs first (just after another one's
    allocations, or on a CPU that is still clocking up).
    """
    names = list(loops)
    per_step = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[:rep % len(names)]:
            short = loops[name](base)
            long = loops[name](base + steps)
            per_step[name].append(1000 * (long - short) / steps)
    return per_step


def benchmark_model(config: Any, dataset: Any, *, name: str = "", repeats: int = 3, steps: int = 0,
                    seconds_per_run: float = 6.0, progress: bool = True) -> dict[str, Any]:
    """Times the driver against the hand loop on `config`; returns ms/step per repetition, medians and ratio."""
    batches = batch_pool(config, dataset)
    driver = driver_loop(config, dataset, batches, progress)
    hand = hand_loop(config, dataset, batches)
    driver(2)  # compiles the driver's step (and warms orbax, tqdm, the log)
    hand(2)
    log_every = int(config.train.log_every)
    checkpoint_every = int(config.train.checkpoint_every)
    hand_ms = float("nan")
    if steps <= 0:  # size the timed runs from the hand loop's ms/step
        calibration, seconds = 2, 0.0
        while seconds < 0.25:
            seconds = hand(calibration)
            calibration *= 2
        hand_ms = 1000 * seconds / (calibration // 2)
    base, steps = timed_steps(hand_ms, seconds_per_run, log_every, steps)

    driver.checkpoint_holds.clear()
    per_step = interleaved_ms_per_step({"driver": driver, "hand": hand}, base, steps, repeats)
    driver_ms, hand_ms = float(np.median(per_step["driver"])), float(np.median(per_step["hand"]))
    # Of the driver's time per step, what its cadence checkpoints held the loop: the same difference of the
    # long and the short call, repetition by repetition, as the times.
    held = {n: [s for m, s in driver.checkpoint_holds if m == n] for n in (base, base + steps)}
    checkpoint_ms = [1000 * (long - short) / steps for short, long in zip(held[base], held[base + steps])]
    return {
        "model": name or config.model.name, "dataset": config.dataset.name,
        "batch_size": int(config.train.batch_size), "device": jax.devices()[0].device_kind,
        "steps": steps, "base_steps": base, "repeats": repeats,
        "log_every": log_every, "checkpoint_every": checkpoint_every,
        # Periodic events at steps in [base, base + steps): the long loop's extra ones.
        "metric_fetches_timed": (base + steps - 1) // log_every - (base - 1) // log_every,
        "checkpoints_timed": (base + steps - 1) // checkpoint_every - (base - 1) // checkpoint_every,
        "driver_ms_per_step": per_step["driver"], "hand_ms_per_step": per_step["hand"],
        "driver_ms_median": driver_ms, "hand_ms_median": hand_ms, "ratio": driver_ms / hand_ms,
        "checkpoint_ms_per_step": checkpoint_ms, "checkpoint_ms_median": float(np.median(checkpoint_ms)),
        "ratio_per_repeat": [d / h for d, h in zip(per_step["driver"], per_step["hand"])],
        "driver_compiles": int(driver.train_step._cache_size()),
        "hand_compiles": int(hand.train_step._cache_size()),
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """The printed table: model, driver and hand ms/step (medians), their ratio, the device."""
    header = ("model", "dataset", "batch", "steps", "driver ms/step", "hand ms/step", "driver/hand",
              "per-repeat range", "device")
    lines = [header] + [(r["model"], r["dataset"], str(r["batch_size"]), str(r["steps"]),
                         f"{r['driver_ms_median']:.3f}", f"{r['hand_ms_median']:.3f}", f"{r['ratio']:.3f}",
                         f"{min(r['ratio_per_repeat']):.3f}-{max(r['ratio_per_repeat']):.3f}",
                         r["device"]) for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    rows = []
    for model_name in dict.fromkeys(FLAGS.models):
        config, dataset = benchmark_config(model_name, FLAGS.dataset if model_name == "lenet300" else
                                           "synthetic", FLAGS.data_dir)
        rows.append(benchmark_model(config, dataset, name=model_name, repeats=FLAGS.repeats, steps=FLAGS.steps,
                                    seconds_per_run=FLAGS.seconds_per_run, progress=FLAGS.progress))
    print()
    print(format_table(rows))
    for r in rows:
        print(f"{r['model']}: per repeat driver {[round(v, 3) for v in r['driver_ms_per_step']]} ms, "
              f"hand {[round(v, 3) for v in r['hand_ms_per_step']]} ms; base {r['base_steps']} steps; "
              f"timed difference holds {r['metric_fetches_timed']} metric fetches and "
              f"{r['checkpoints_timed']} cadence checkpoints (which held the driver "
              f"{r['checkpoint_ms_median']:.3f} ms/step); compiles driver {r['driver_compiles']}, "
              f"hand {r['hand_compiles']}")
    if FLAGS.out:
        write_rows(FLAGS.out, rows)


def write_rows(path: str, rows: list[dict[str, Any]]) -> None:
    """A benchmark's rows as JSON at `path` (its folder made if missing), with the jax version and the device
    they were measured on."""
    # workdir_lib.write_json makes the folder: minutes of measurement must not be lost to a missing one.
    workdir_lib.write_json(path, {"jax": jax.__version__, "device": jax.devices()[0].device_kind, "results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
