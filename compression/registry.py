"""Techniques looked up by name from a config (as jaxpruner and big_vision do).

A technique module registers a factory `fn(**settings) -> Transform`; a
config names the techniques of a run in order and gives each its settings,
so "prune then quantize" is a config, not a new script.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

from compression.transform import Transform, identity, named_chain, stage_names

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


def factory(name: str) -> Callable[..., Transform]:
    """The factory registered as `name` (its `__module__` says which module registered it)."""
    _load_techniques()
    if name not in _FACTORIES:
        raise ValueError(f"unknown technique {name!r}; registered techniques: {names()}")
    return _FACTORIES[name]


def build(name: str, **settings: Any) -> Transform:
    """Builds the transform registered as `name` with `settings`."""
    _load_techniques()
    if name not in _FACTORIES:
        raise ValueError(f"unknown technique {name!r}; registered techniques: {names()}")
    try:
        transform = _FACTORIES[name](**settings)
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
