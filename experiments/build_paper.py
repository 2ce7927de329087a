"""Builds the reproduction report in paper/ from committed results.json files.

    python -m experiments.build_paper --results=paper/results --out=paper

The builder is the package experiments/report/: common.py holds the shared
helpers, builder.py the ordered list of family modules (one per reproduction
family) and what this command runs.
"""

from absl import app

from experiments.report.builder import define_flags, main, write_paper

__all__ = ["define_flags", "main", "write_paper"]

if __name__ == "__main__":
    define_flags()
    app.run(main)
