"""The distillation benchmark: a student's step time with no teacher, the teacher in the step, or its outputs read.

    python -m experiments.benchmark_distillation [--models=hinton_mlp] [--models=tinybert] [--repeats=5] [--out=FILE]

For Hinton et al.'s 800-800 student (configs/hinton2015_mlp.py, batch 128, on
synthetic 28x28 images) with its 1200-1200 teacher, and TinyBERT's 2-layer,
96-wide student (configs/jiao2020_tinybert_char_transformer.py, batch 32 x
128 synthetic tokens) with the 4-layer, 128-wide teacher, three driver runs
of the same student, optimizer and in-memory batches:

- plain: the labels only, no teacher;
- in_step: `knowledge_distillation` with the teacher's forward pass inside the
  jitted step (teacher.mode "in_step");
- precomputed: the same loss with the teacher's logits read per step from
  teacher.outputs (teacher.mode "precomputed"; the Transformer's top 16 per
  position in float16, rebuilt in the step), computed once before timing.

The teachers are randomly initialised exports (a step's cost does not depend
on the weights' values). Each is timed as experiments.benchmark_quantization
times its variants (`benchmark_variants`: the driver's `train_loop`, a fresh
workdir per call, compilation excluded, (T(base + steps) - T(base)) / steps,
repetitions interleaved), over a fixed number of timed steps per model
(TIMED_STEPS: the precomputed outputs cover exactly the steps a loop runs).
The table gives each run's median ms/step and in_step/plain and
precomputed/plain; the aim is precomputed/plain <= 1.10 on both models.
"""
from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

from absl import app, flags, logging

from configs import baseline_char_transformer, hinton2015_mlp, jiao2020_tinybert_char_transformer
from experiments import benchmark_quantization, benchmark_step, train
from experiments import data as data_lib

FLAGS = flags.FLAGS
MODELS = ("hinton_mlp", "tinybert")
VARIANTS = ("plain", "in_step", "precomputed")
TARGET_RATIO = 1.10
# Timed steps per repetition (after `base` steps): about 12 s of the MLP and 6 s of the Transformer,
# since 400 MLP steps (2.5 s) left its plain step ranging 5.2-7.9 ms across repetitions on a 2-core VM.
TIMED_STEPS = {"hinton_mlp": 2000, "tinybert": 40}


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_multi_enum("models", list(MODELS), list(MODELS), "Students to benchmark.")
    flags.DEFINE_integer("repeats", 5, "Interleaved repetitions of each run.")
    flags.DEFINE_string("out", "", "Write every number as JSON here.")
    flags.DEFINE_bool("progress", False, "Show the driver's progress bar.")


def _student_and_teacher(model_name: str) -> tuple[Any, Any]:
    """(the student's config with the teacher as its teacher, the teacher's config), on synthetic data, one device."""
    if model_name == "hinton_mlp":
        student = hinton2015_mlp.get_config("distilled")
        teacher = hinton2015_mlp.get_config("teacher")
        dataset = {"name": "synthetic", "input_shape": (28, 28, 1), "num_classes": 10, "train_size": 4096,
                   "eval_size": 512}
    elif model_name == "tinybert":
        student = jiao2020_tinybert_char_transformer.get_config("logits")
        teacher = baseline_char_transformer.get_config()
        dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 256,
                   "seq_len": int(student.dataset.seq_len), "train_size": 1 << 16, "eval_size": 4096}
    else:
        raise ValueError(f"unknown model {model_name!r}; use one of {list(MODELS)}")
    for config in (student, teacher):
        config.dataset = dict(dataset)
        config.mesh.data = config.mesh.model = 1
    teacher.train.num_steps = 0
    return student, teacher


def variant_configs(student: Any, teacher_export: str, outputs: str, timed_steps: int) -> dict[str, Any]:
    """{plain, in_step, precomputed}: the student without a teacher, with it in the step, with its outputs read."""
    student.train.num_steps = 2 * (timed_steps + int(student.train.log_every))  # covers the longest loop
    plain = student.copy_and_resolve_references()
    plain.teacher.export = ""
    plain.loss = [{"term": "cross_entropy"}]
    in_step = student.copy_and_resolve_references()
    in_step.teacher.export = teacher_export
    precomputed = in_step.copy_and_resolve_references()
    language_model = precomputed.dataset.get("kind") == "language_model"
    precomputed.teacher.update(mode="precomputed", outputs=outputs, top_k=16 if language_model else 0)
    return {"plain": plain, "in_step": in_step, "precomputed": precomputed}


def benchmark(model_name: str, repeats: int, progress: bool = False,
              timed_steps: Callable[[str], int] = TIMED_STEPS.__getitem__) -> dict[str, Any]:
    """benchmark_variants over the three runs of `model_name`'s student."""
    student, teacher = _student_and_teacher(model_name)
    with tempfile.TemporaryDirectory(prefix="benchmark_distillation_") as folder:
        train.train_and_evaluate(teacher, os.path.join(folder, "teacher"), progress=False)
        configs = variant_configs(student, os.path.join(folder, "teacher"), os.path.join(folder, "outputs"),
                                  timed_steps(model_name))
        dataset = data_lib.load_dataset(student.dataset, student.get("data_dir", ".data"))
        row = benchmark_quantization.benchmark_variants(configs, dataset, name=model_name, repeats=repeats,
                                                       steps=timed_steps(model_name), progress=progress,
                                                       reference="plain")
    row["target_ratio"] = TARGET_RATIO
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    """Model, each run's median ms/step, the ratios to plain with their per-repetition ranges, the device."""
    header = ("model", "batch", "steps", *(f"{v} ms/step" for v in VARIANTS), "in_step/plain", "precomputed/plain",
              "device")
    lines = [header]
    for r in rows:
        ratios = [f"{r['ratio_to_float'][v]:.3f} ({min(r['ratio_to_float_per_repeat'][v]):.3f}-"
                  f"{max(r['ratio_to_float_per_repeat'][v]):.3f})" for v in VARIANTS[1:]]
        lines.append((r["model"], str(r["batch_size"]), str(r["steps"]),
                      *(f"{r['ms_median'][v]:.3f}" for v in VARIANTS), *ratios, r["device"]))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    rows = [benchmark(name, FLAGS.repeats, FLAGS.progress) for name in dict.fromkeys(FLAGS.models)]
    print()
    print(format_table(rows))
    for r in rows:
        ratio = r["ratio_to_float"]["precomputed"]
        print(f"{r['model']}: precomputed/plain {ratio:.3f} "
              f"({'within' if ratio <= TARGET_RATIO else 'above'} the {TARGET_RATIO:.2f} aim); "
              f"compiles {r['compiles']}")
    if FLAGS.out:
        benchmark_step.write_rows(FLAGS.out, rows)


if __name__ == "__main__":
    define_flags()
    app.run(main)
