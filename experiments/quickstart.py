"""`make quickstart`: train LeNet-300-100 dense and compressed, export both, print one table.

python -m experiments.quickstart [--workdir=runs/quickstart]
"""
from __future__ import annotations

import os

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_string("workdir", "runs/quickstart", "Where the run's checkpoints, metrics and results go.")


def format_table(rows: list[dict]) -> str:
    """One row per run: accuracy, parameters, nonzeros, bytes on disk and compression ratio."""
    header = ["compression", "test accuracy", "params", "nonzero", "bytes on disk", "ratio"]
    cells = []
    for results in rows:
        size, metrics = results["compression"], results["metrics"]
        stages = [s["technique"] for s in results["config"]["compression"]["stages"]] or ["none (dense)"]
        cells.append([" -> ".join(stages), f"{100 * metrics['test_accuracy']:.2f}%", f"{size['params_total']:,}",
                      f"{size['params_nonzero']:,}", f"{size['bytes_exported']:,}", f"{size['ratio']:.2f}x"])
    widths = [max(len(c) for c in column) for column in zip(header, *cells)]
    line = lambda row: "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from configs import quickstart
    from experiments import train

    rows = []
    runs = (("dense", os.path.join(FLAGS.workdir, "dense")), ("pruned", os.path.join(FLAGS.workdir, "pruned")),
            ("", FLAGS.workdir))
    for variant, workdir in runs:
        print(f"== {variant or 'pruned, then quantized'}: {workdir}")
        rows.append(train.train_and_evaluate(quickstart.get_config(variant), workdir))
    print()
    print(format_table(rows))
    print(f"\nresults.json:  {os.path.join(FLAGS.workdir, 'results.json')} "
          f"(dense, pruned: {os.path.join(FLAGS.workdir, '{dense,pruned}', 'results.json')})")
    print(f"TensorBoard:   tensorboard --logdir {FLAGS.workdir}")
    print(f"export:        {os.path.join(FLAGS.workdir, rows[-1]['artifacts']['export'])}")

if __name__ == "__main__":
    define_flags()
    app.run(main)
