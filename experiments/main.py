"""Runs one experiment: python -m experiments.main --config=configs/NAME.py[:quick] --workdir=DIR.

Any config field can be overridden: --config.train.num_steps=100. Without
--workdir the run goes to runs/NAME (NAME from the config file, plus
`_quick` for the quick variant). Re-running the same command resumes from the
newest checkpoint in the workdir.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py[:quick]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results.json go (default runs/NAME).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.mark_flags_as_required(["config"])


def default_workdir(config_arg: str) -> str:
    """runs/NAME for --config=configs/NAME.py[:variant] (the variant appended as _variant)."""
    path, _, variant = config_arg.partition(":")
    name = os.path.splitext(os.path.basename(path))[0]
    return os.path.join("runs", f"{name}_{variant}" if variant else name)


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    import jax

    from experiments import train

    if os.environ.get("JAX_COORDINATOR_ADDRESS") or FLAGS.config.mesh.get("distributed", False):
        jax.distributed.initialize()  # multi-host: every process runs this same command
    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    results = train.train_and_evaluate(FLAGS.config, workdir, progress=FLAGS.progress)
    if results is not None:
        print(f"results: {os.path.join(workdir, 'results.json')}")
        print({k: round(v, 4) for k, v in results["metrics"].items()})


if __name__ == "__main__":
    define_flags()
    app.run(main)
