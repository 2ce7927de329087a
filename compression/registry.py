"""Techniques looked up by name from a config (as jaxpruner and big_vision do).

A technique module registers a factory `fn(**settings) -> Transform`; a
config names the techniques of a run in order and gives each its settings,
so "prune then quantize" is a config, not a new script.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

from compression.transform import Transform, chain, identity

_FACTORIES: dict[str, Callable[..., Transform]] = {}
# Modules whose import registers techniques; loaded on first lookup (see compression/__init__.py).
TECHNIQUE_MODULES = ("compression.pruning", "compression.structured_pruning", "compression.quantization",
                     "compression.activation_quantization")


def _load_techniques() -> None:
    for module in TECHNIQUE_MODULES:
        importlib.import_module(module)


def register(name: str) -> Callable[[Callable[..., Transform]], Callable[..., Transform]]:
    """Decorator registering a transform factory under `name` (names are unique)."""

    def wrap(factory):
        if name in _FACTORIES and _FACTORIES[name] is not factory:
            raise ValueError(f"a technique named {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory

    return wrap


def names() -> list[str]:
    """The registered technique names, sorted."""
    _load_techniques()
    return sorted(_FACTORIES)


def build(name: str, **settings: Any) -> Transform:
    """Builds the transform registered as `name` with `settings`."""
    _load_techniques()
    if name not in _FACTORIES:
        raise ValueError(f"unknown technique {name!r}; registered techniques: {names()}")
    try:
        return _FACTORIES[name](**settings)
    except TypeError as e:
        raise ValueError(f"technique {name!r} does not accept settings {sorted(settings)}: {e}") from e


def build_chain(stages: Sequence[Mapping[str, Any]]) -> Transform:
    """Builds chain(stage_0, stage_1, ...) from mappings {'technique': name, **settings}."""
    transforms = []
    for i, stage in enumerate(stages):
        stage = dict(stage)
        if "technique" not in stage:
            raise ValueError(f"compression stage {i} ({stage}) has no 'technique' field; "
                             f"registered techniques: {names()}")
        transforms.append(build(stage.pop("technique"), **stage))
    return chain(*transforms)


register("identity")(identity)
