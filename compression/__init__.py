"""The compression lab's library: pure transforms over Flax parameter pytrees.

A technique is a `Transform` (init / apply / update) over the parameter
pytree; `chain` composes them; `selection` picks the leaves a technique
touches by parameter path; `accounting` and `export` measure what a model
really costs. Nothing here imports a model, a driver or a config.

Python 3.14 added a standard-library package also named `compression`
(`compression.zstd`, ...). `LAB_PACKAGE` marks this one, so a caller can tell
which package it got (see `experiments.ensure_lab_package`). jax itself tries
`from compression import zstd` while it initializes, so this file imports no
technique module (they use jax at import time); the registries load them on
first use.
"""

LAB_PACKAGE = "compression-lab"

from compression.selection import path_str, leaf_paths, select, selected_paths, match_rules  # noqa: E402
from compression.selection import map_at_paths  # noqa: E402
from compression.transform import Transform, chain, export_model, identity, named_chain  # noqa: E402
from compression import registry  # noqa: E402

__all__ = [
    "LAB_PACKAGE", "Transform", "chain", "named_chain", "export_model", "identity", "map_at_paths", "path_str", "leaf_paths",
    "select", "selected_paths", "match_rules", "registry",
]
