"""Techniques looked up by name from a config (as jaxpruner and big_vision do).

A technique module registers a factory `fn(**settings) -> Transform`; a
config names the techniques of a run in order and gives each its settings,
so "prune then quantize" is a config, not a new script.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from compression.registries import Registry
from compression.transform import Transform, identity, named_chain, stage_names

# Modules whose import registers techniques; loaded on first lookup (see compression/__init__.py).
TECHNIQUE_MODULES = ("compression.pruning", "compression.structured_pruning", "compression.layer_drop",
                     "compression.quantization", "compression.activation_quantization", "compression.low_rank",
                     "compression.weight_clustering", "compression.sharing", "compression.separable",
                     "compression.sparsegpt", "compression.gptq")
TECHNIQUES = Registry("technique", TECHNIQUE_MODULES)
# Decorator registering a transform factory `fn(**settings) -> Transform` under a name.
register = TECHNIQUES.register


def names() -> list[str]:
    """The registered technique names, sorted."""
    return TECHNIQUES.names()


def factory(name: str) -> Callable[..., Transform]:
    """The factory registered as `name` (its `__module__` says which module registered it)."""
    if name not in TECHNIQUES:
        raise ValueError(f"unknown technique {name!r}; registered techniques: {names()}")
    return TECHNIQUES[name]


def build(name: str, **settings: Any) -> Transform:
    """Builds the transform registered as `name` with `settings`."""
    make = factory(name)
    try:
        transform = make(**settings)
    except TypeError as e:
        raise ValueError(f"technique {name!r} does not accept settings {sorted(settings)}: {e}") from e
    return transform._replace(name=name)


def build_chain(stages: Sequence[Mapping[str, Any]]) -> Transform:
    """Builds the named chain of mappings {'technique': name, 'name': optional stage name, **settings}.

    A stage's name keys its state and the arrays it adds to the trainable;
    it defaults to the technique's name, numbered where several share one
    (`compression.transform.stage_names`).
    """
    transforms, given = [], []
    for i, stage in enumerate(stages):
        stage = dict(stage)
        if "technique" not in stage:
            raise ValueError(f"compression stage {i} ({stage}) has no 'technique' field; "
                             f"registered techniques: {names()}")
        given.append(stage.pop("name", None))
        transforms.append(build(stage.pop("technique"), **stage))
    default = stage_names(transforms)
    return named_chain(*((g or d, t) for g, d, t in zip(given, default, transforms)))


register("identity")(identity)
