"""The reproduction report builder (paper/README.md and paper/figures/).

common.py holds the shared helpers, builder.py the ordered list of family
modules (one per reproduction family) and the command's logic; the command
itself is `python -m experiments.build_paper`.
"""
