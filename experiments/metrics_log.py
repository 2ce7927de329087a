"""Metrics to a JSONL file and to TensorBoard event files, without importing TensorFlow.

TensorBoard's event writer would import TensorFlow when it is installed
(seconds of start-up, and GPU memory on an accelerator). TensorBoard checks
for a module `tensorboard.compat.notf` to mean "use the TensorFlow stub
instead"; registering an empty one before the writer is imported keeps
TensorFlow for the data pipeline alone.
"""
from __future__ import annotations

import json
import os
import sys
import time
import types
from typing import Mapping

sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402


class MetricsLog:
    """Appends `{step, name: value}` lines to DIR/metrics.jsonl and scalars to DIR/tensorboard/."""

    def __init__(self, workdir: str):
        os.makedirs(workdir, exist_ok=True)
        self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
        self.tensorboard_dir = os.path.join(workdir, "tensorboard")
        self._jsonl = open(self.jsonl_path, "a")
        self._events = EventFileWriter(self.tensorboard_dir)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records `scalars` at `step` in both sinks."""
        record = {"step": int(step), **{k: float(v) for k, v in scalars.items()}}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        values = [summary_pb2.Summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        self._events.add_event(event_pb2.Event(wall_time=time.time(), step=int(step),
                                               summary=summary_pb2.Summary(value=values)))

    def close(self) -> None:
        self._jsonl.close()
        self._events.close()
