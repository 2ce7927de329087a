"""A teacher's outputs computed once over a run's transfer set and read from disk (`teacher.mode = "precomputed"`).

The transfer set is enumerated: it is the run's own training batches, steps
0 .. train.num_steps - 1, each a pure function of (seed, step) with its
augmentation (experiments.data.train_batch). The teacher runs over them once
(`precompute`, with a progress bar) and the student's step reads batch s's
outputs instead of running the teacher, which is what a user with a large
teacher on a TPU does. The folder `teacher.outputs` holds

    meta.json   what the outputs were computed for (`fingerprint`): a run whose
                dataset, seed, batch size, window length, steps, augmentation,
                selection split, teacher export or top-k differs is refused,
                naming each difference;
    logits.npy  [steps, batch, classes] float32 (classification), or, with
                teacher.top_k = k for a language model (all logits of every
                window would not fit: 4,000 steps x 32 x 128 x 256 floats are
                17 GB), top_values.npy [steps, batch, positions, k] float16,
                top_indices.npy (uint16) and lse.npy (float32), rebuilt into
                logits in the step by compression.distillation.dense_from_top_k.

The folder is written under a temporary name and renamed when complete, so an
interrupted precomputation leaves nothing that looks finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any, Callable, Mapping, Optional

import jax
import numpy as np
from tqdm import tqdm

from compression import distillation
from experiments import data as data_lib

META = "meta.json"
MODES = ("in_step", "precomputed")
MAX_TOP_K = 16


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def _file_sha(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def fingerprint(config: Any, dataset: data_lib.Dataset, teacher_export: str, top_k: int) -> dict[str, Any]:
    """What a run's precomputed outputs depend on; two runs may share outputs when these agree.

    The inputs of the first and last batch are hashed too, so a change in the
    batch order (or the data) that leaves every setting equal is still caught.
    """
    num_steps, batch_size = int(config.train.num_steps), int(config.train.batch_size)
    seq_len = int(config.dataset.get("seq_len", 0))
    first = data_lib.train_batch(dataset, int(config.seed), 0, batch_size, seq_len)["inputs"]
    last = data_lib.train_batch(dataset, int(config.seed), max(num_steps - 1, 0), batch_size, seq_len)["inputs"]
    return {"dataset": dataset.name, "train_size": int(len(dataset.train.get("targets", dataset.train.get("tokens")))),
            "selection_size": int(config.dataset.get("selection_size", 0)), "seed": int(config.seed),
            "batch_size": batch_size, "seq_len": seq_len, "num_steps": num_steps,
            "augment": dict(dataset.augment), "teacher_export_sha": _file_sha(teacher_export), "top_k": int(top_k),
            "first_batch_sha": _sha(first), "last_batch_sha": _sha(last)}


def check_settings(config: Any, language_model: bool) -> tuple[str, int]:
    """(teacher.outputs, teacher.top_k) for a precomputed teacher, checked; raises ValueError naming the fix."""
    teacher = config.get("teacher", {})
    outputs, top_k = str(teacher.get("outputs", "")), teacher.get("top_k", 0)
    if not outputs:
        raise ValueError("teacher.mode 'precomputed' needs teacher.outputs: the folder the teacher's outputs are "
                         "(or will be) kept in, e.g. runs/NAME_teacher_outputs")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= MAX_TOP_K:
        raise ValueError(f"teacher.top_k must be a whole number in [0, {MAX_TOP_K}] (0: every logit), not {top_k!r}")
    if language_model and top_k == 0:
        raise ValueError(f"teacher.top_k is 0, but a language model's logits for every window would not fit on "
                         f"disk: set teacher.top_k to a k in [1, {MAX_TOP_K}] (the rest of each position's mass is "
                         f"spread evenly, see compression.distillation.dense_from_top_k)")
    if not language_model and top_k:
        raise ValueError("teacher.top_k applies to language models; a classifier's logits are kept whole (set 0)")
    return outputs, top_k


def _differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    return [f"{key}: {found.get(key)!r} there, {value!r} here" for key, value in wanted.items()
            if found.get(key) != value]


class TeacherOutputs:
    """The precomputed outputs in `folder`, read per step (memory-mapped)."""

    def __init__(self, folder: str, wanted: Mapping[str, Any]):
        with open(os.path.join(folder, META)) as f:
            found = json.load(f)
        differences = _differences(found, wanted)
        if differences:
            raise ValueError(f"teacher.outputs {folder!r} was computed for another transfer set or teacher "
                             f"({'; '.join(differences)}): point teacher.outputs at a new folder (it is computed "
                             f"there) or delete this one")
        names = ("top_values", "top_indices", "lse") if wanted["top_k"] else ("logits",)
        self.arrays = {name: np.load(os.path.join(folder, f"{name}.npy"), mmap_mode="r") for name in names}

    def for_step(self, step: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """The batch entries of training step `step` (this process's `rows`): `teacher_logits`, or the top-k three."""
        return {f"teacher_{name}": np.asarray(array[step, rows]) for name, array in self.arrays.items()}


def teacher_logits(batch: Mapping[str, Any], vocab: int) -> Optional[Any]:
    """The teacher's logits a batch carries (precomputed), rebuilt from top-k where stored so; None if none."""
    if "teacher_logits" in batch:
        return batch["teacher_logits"]
    if "teacher_top_values" in batch:
        return distillation.dense_from_top_k(batch["teacher_top_values"], batch["teacher_top_indices"],
                                             batch["teacher_lse"], vocab)
    return None


def precompute(folder: str, config: Any, dataset: data_lib.Dataset, apply_teacher: Callable[[Any], Any],
               wanted: Mapping[str, Any], progress: bool = True) -> None:
    """Runs `apply_teacher(inputs) -> logits` over the run's transfer set and writes `folder` (see the module doc)."""
    num_steps, batch_size = int(config.train.num_steps), int(config.train.batch_size)
    seq_len, seed, top_k = int(config.dataset.get("seq_len", 0)), int(config.seed), int(wanted["top_k"])
    partial = folder.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    arrays: dict[str, Any] = {}
    forward = jax.jit(lambda inputs: _outputs(apply_teacher(inputs), top_k))
    for step in tqdm(range(num_steps), desc="teacher outputs", disable=not progress, mininterval=1.0):
        batch = data_lib.train_batch(dataset, seed, step, batch_size, seq_len)
        out = jax.device_get(forward(batch["inputs"]))
        for name, value in out.items():
            if name not in arrays:
                arrays[name] = np.lib.format.open_memmap(os.path.join(partial, f"{name}.npy"), mode="w+",
                                                         dtype=value.dtype, shape=(num_steps, *value.shape))
            arrays[name][step] = value
    for array in arrays.values():
        array.flush()
    with open(os.path.join(partial, META), "w") as f:
        json.dump(dict(wanted), f, indent=2, sort_keys=True)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)


def _outputs(logits: Any, top_k: int) -> dict[str, Any]:
    if not top_k:
        return {"logits": logits.astype(np.float32)}
    values, indices, lse = distillation.top_k_logits(logits, top_k)
    return {"top_values": values, "top_indices": indices.astype(np.uint16), "lse": lse}
