"""A workdir belongs to one run: its config, a lock while a run is in it, and files written whole.

`train.train_and_evaluate` takes the workdir's lock (`hold`), compares the
config with the one stored by an earlier invocation (`check_config`:
a difference that changes what was trained is refused, so a results.json
never describes settings its weights were not trained with), and writes
config.json and results.json with `write_json` (a temporary file, then
`os.replace`: a kill mid-write leaves the old file or the new one, never a
truncated one).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import inspect
import json
import os
import tempfile
from typing import Any, Iterator, Mapping, Optional

import numpy as np

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"

# Keys that change how a run runs, not what it trains or reports: a rerun may
# change them (a finished run rerun with another evaluation batch size gives
# the same numbers; a run resumes on other hardware with another mesh).
# A key ending in ".*" covers everything under it.
RUNTIME_KEYS = (
    "train.log_every", "train.checkpoint_every", "train.stop_after",
    "train.eval_batch_size",
    # Evaluations during training go to the metrics log only; the final metrics
    # always cover the whole split.
    "train.eval_every", "train.eval_max_batches",
    "data_dir",
    "mesh.*",
)


class RunError(RuntimeError):
    """An error whose one-line message says what happened and what to do; commands print it alone."""


class WorkdirError(RunError):
    """A workdir cannot take this run (changed config, another run in it)."""


def _is_runtime_key(key: str) -> bool:
    return any(key == k or (k.endswith(".*") and key.startswith(k[:-1])) for k in RUNTIME_KEYS)


def plain(value: Any) -> Any:
    """`value` as JSON would store it (tuples as lists, numpy scalars as Python numbers)."""
    return json.loads(json.dumps(value, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of a nested mapping; lists (stages, loss terms) stay whole values."""
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _with_stage_defaults(stages: Any) -> Any:
    """Each compression stage with the settings it omits filled from its technique's signature.

    A setting a technique gained after a run was written then compares equal
    to its default, as a missing top-level key does.
    """
    from compression import registry

    if not isinstance(stages, list):
        return stages
    out = []
    for stage in stages:
        if not isinstance(stage, Mapping) or stage.get("technique") not in registry.TECHNIQUES:
            out.append(stage)
            continue
        parameters = inspect.signature(registry.factory(stage["technique"])).parameters.values()
        defaults = {p.name: plain(p.default) for p in parameters if p.default is not inspect.Parameter.empty}
        out.append({**defaults, **stage})
    return out


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any],
                       defaults: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, stored value, new value) for each key, outside RUNTIME_KEYS, whose values differ.

    All three are plain nested dicts. A key missing on one side compares as
    its value in `defaults` (configs/default.py), so a workdir written before
    a field existed still resumes; with no default, a missing key differs.
    """
    stored, new, defaults = (flatten(plain(t)) for t in (stored, new, defaults))
    missing = object()
    out = []
    for key in sorted(set(stored) | set(new)):
        if _is_runtime_key(key):
            continue
        a, b = stored.get(key, defaults.get(key, missing)), new.get(key, defaults.get(key, missing))
        if key == "compression.stages":
            a, b = _with_stage_defaults(a), _with_stage_defaults(b)
        if a != b:
            out.append((key, None if a is missing else a, None if b is missing else b))
    return out


def stored_config(workdir: str) -> Optional[dict]:
    """The config.json an earlier invocation stored in `workdir`, or None."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise WorkdirError(f"{path} cannot be read ({e}); this workdir's run cannot be checked against "
                           f"the config: use a new workdir") from e


def has_trained(workdir: str) -> bool:
    """Whether `workdir` holds anything a run produced: a checkpoint or a results.json."""
    checkpoints = os.path.join(workdir, "checkpoints")
    return os.path.exists(os.path.join(workdir, "results.json")) or (
        os.path.isdir(checkpoints) and any(name.isdigit() for name in os.listdir(checkpoints)))


def check_config(workdir: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuses to run `config` in a workdir that holds a run of a config that trains something else.

    Keys in RUNTIME_KEYS may differ. A workdir whose earlier invocation
    stored a config but trained nothing yet (no checkpoint, no results) takes
    the new one.
    """
    stored = stored_config(workdir)
    if stored is None or not has_trained(workdir):
        return
    diffs = config_differences(stored, config, defaults)
    if diffs:
        shown = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in diffs[:8])
        more = f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else ""
        raise WorkdirError(
            f"{workdir} holds a run of another config ({shown}{more}): its checkpoints and results were "
            f"trained with the stored {os.path.join(workdir, CONFIG_FILE)}. Use a new workdir "
            f"(--workdir=...) for the changed config, or delete this one to start over. Keys that only "
            f"change how a run runs may differ: {', '.join(RUNTIME_KEYS)}")


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value) if value is not None else "(absent)"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def write_json(path: str, value: Any) -> None:
    """Writes `value` as sorted, indented JSON to `path` atomically (a temporary file, then os.replace)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def hold(workdir: str, process_index: int = 0) -> Iterator[None]:
    """Holds `workdir`'s lock for the body; a second run in the same workdir is refused.

    An flock, which the operating system releases when its process ends, so a
    killed run leaves no stale lock. Each process of a multi-host run locks
    its own file. On a filesystem without flock (some network mounts) the
    run goes ahead unlocked.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOCK_FILE + (f".{process_index}" if process_index else ""))
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, workdir)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _lock(fd: int, workdir: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return  # no flock on this filesystem: nothing to hold
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        raise WorkdirError(f"{workdir} is in use by another run (process {holder}); wait for it to "
                           f"finish, or use another workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
