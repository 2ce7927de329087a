"""Several processes, one run: what a TPU pod or a multi-GPU cluster runs, and two processes on one CPU.

Every process runs the same command (`python -m experiments.main ...`) with
its own process id; together their devices form the config's one mesh. Each
process reads only its own part of every batch (`data.train_batch` with the
process index), the jitted step is the same program everywhere, and only
process 0 writes config.json, metrics, results.json and the export
(checkpoints are written by orbax from every process into the one shared
workdir). On a TPU pod, `jax.distributed.initialize()` finds the hosts
itself; elsewhere the coordinator's address, the process count and each
process's id are given (`--coordinator`, `--num_processes`, `--process_id`),
and on CPU the processes' collectives go over gloo.
"""
from __future__ import annotations

from typing import Any, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Joins this process to a multi-process run (jax.distributed), before any device is touched.

    With no arguments jax detects the cluster (TPU pods, SLURM, ...); with a
    coordinator "host:port", `num_processes` and this process's `process_id`
    must be given too. CPU collectives use gloo, so the same command works on
    processes that have only CPUs.
    """
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if any(given) and not all(given):
        raise ValueError("a multi-process run needs --coordinator=HOST:PORT, --num_processes=N and "
                         "--process_id=I together (or none of them on a TPU pod, where jax finds the hosts)")
    if all(given) and not 0 <= int(process_id) < int(num_processes):
        raise ValueError(f"--process_id {process_id} is not in [0, --num_processes {num_processes})")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                               process_id=process_id)


def is_writer() -> bool:
    """Whether this process writes the run's files (process 0; the only process of a plain run)."""
    return jax.process_index() == 0


def to_host(tree: Any) -> Any:
    """`tree` as numpy arrays on this host, gathered from every process where an array spans several.

    Every process must call it with the same tree (a gather is collective).
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return jax.device_get(leaf)

    return jax.tree_util.tree_map(get, tree)


def put_global(x: np.ndarray, sharding: Any) -> jax.Array:
    """A global array from `x`, which every process holds whole (each keeps only its devices' slices)."""
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
