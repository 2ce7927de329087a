"""Runs one experiment: python -m experiments.main --config=configs/NAME.py[:quick] --workdir=DIR.

Any config field can be overridden: --config.train.num_steps=100. Without
--workdir the run goes to runs/NAME (NAME from the config file, plus
`_quick` for the quick variant). Re-running the same command resumes from the
newest checkpoint in the workdir; a rerun whose config changes what is
trained is refused (use a new workdir; see experiments/workdir.py). Errors
about settings, data or the workdir print one line (--traceback: the stack).

Several processes (hosts of a TPU pod, GPU nodes, or processes on one CPU)
run one experiment together when every one of them runs the same command:
on a TPU pod add --config.mesh.distributed=True (jax finds the hosts);
elsewhere add --coordinator=HOST:PORT (process 0's address) --num_processes=N
--process_id=I (see experiments/multihost.py and the README).
"""
from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/NAME.py[:quick]).",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and results.json go (default runs/NAME).")
    flags.DEFINE_bool("progress", True, "Show a progress bar.")
    flags.DEFINE_bool("traceback", False, "On a configuration or workdir error, print the whole stack "
                      "(by default only the message, which names the setting and the fix).")
    flags.DEFINE_string("coordinator", None, "Multi-process run: HOST:PORT of process 0, the same on every "
                        "process (with --num_processes and --process_id).")
    flags.DEFINE_integer("num_processes", None, "Multi-process run: how many processes run this command.")
    flags.DEFINE_integer("process_id", None, "Multi-process run: this process's id, 0 to num_processes - 1.")
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
    from experiments import multihost, train
    from experiments import workdir as workdir_lib

    if FLAGS.coordinator or FLAGS.num_processes is not None or FLAGS.process_id is not None \
            or os.environ.get("JAX_COORDINATOR_ADDRESS") or FLAGS.config.mesh.get("distributed", False):
        try:  # multi-host: every process runs this same command
            multihost.initialize(FLAGS.coordinator, FLAGS.num_processes, FLAGS.process_id)
        except ValueError as e:
            sys.exit(f"error: {e}")
    workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
    # Errors about the config, the data, the workdir or a diverged run: their message is the whole story.
    try:
        results = train.train_and_evaluate(FLAGS.config, workdir, progress=FLAGS.progress)
    except (ValueError, FileNotFoundError, FloatingPointError, workdir_lib.RunError) as e:
        if FLAGS.traceback:
            raise
        sys.exit(f"error: {e}\n(the whole stack: add --traceback)")
    if results is not None:
        print(f"results: {os.path.join(workdir, 'results.json')}")
        print({k: round(v, 4) for k, v in results["metrics"].items()})


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a --config.KEY=VALUE override of a field the config lacks said in one line."""
    try:
        return FLAGS(argv)
    except (AttributeError, KeyError) as e:  # ml_collections' config_flags on an unknown field
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        message = e
        while isinstance(message, BaseException) and message.args:  # KeyError inside AttributeError
            message = message.args[0]
        sys.exit(f"error: a --config override names a field the config does not have: "
                 f"{str(message).replace(chr(10), ' ')} "
                 f"(overrides given: {', '.join(overrides)}); an override can only change a field the "
                 f"config file defines")


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=parse_flags)
