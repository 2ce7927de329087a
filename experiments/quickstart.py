"""`make quickstart`: train, compress and export LeNet-300-100, then print one table.

python -m experiments.quickstart [--workdir=runs/quickstart]
"""
from __future__ import annotations

import os

from absl import app, flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_string("workdir", "runs/quickstart", "Where the run's checkpoints, metrics and results go.")


def format_table(results: dict) -> str:
    """One row per run: accuracy, parameters, nonzeros, bytes on disk and compression ratio."""
    size, metrics = results["compression"], results["metrics"]
    stages = [s["technique"] for s in results["config"]["compression"]["stages"]] or ["none (dense)"]
    header = ["compression", "test accuracy", "params", "nonzero", "bytes on disk", "ratio"]
    row = [" -> ".join(stages), f"{100 * metrics['test_accuracy']:.2f}%", f"{size['params_total']:,}",
           f"{size['params_nonzero']:,}", f"{size['bytes_exported']:,}", f"{size['ratio']:.2f}x"]
    widths = [max(len(h), len(r)) for h, r in zip(header, row)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", line(row)])


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)
    from configs import quickstart
    from experiments import train

    results = train.train_and_evaluate(quickstart.get_config(), FLAGS.workdir)
    print()
    print(format_table(results))
    print(f"\nresults.json:  {os.path.join(FLAGS.workdir, 'results.json')}")
    print(f"TensorBoard:   tensorboard --logdir {os.path.join(FLAGS.workdir, 'tensorboard')}")
    print(f"export:        {os.path.join(FLAGS.workdir, results['artifacts']['export'])}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
