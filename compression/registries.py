"""One small registry type for everything the lab looks up by name from a config.

Techniques (`compression.registry`), loss terms (`compression.losses`),
pruning criteria (`compression.pruning_criteria`) and quantization schemes
(`compression.quantization_schemes`) are each a `Registry`: a module
registers its objects with the `register(name)` decorator when it is
imported, a name is registered once (registering the same object again is
allowed, so a module may be reloaded), and the modules that hold the
built-in entries are imported on the first lookup.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterator, Optional, Sequence


class Registry:
    """Names -> registered objects of one kind (`kind` names it in error messages)."""

    def __init__(self, kind: str, modules: Sequence[str] = (), base: Optional[type] = None):
        self.kind, self._modules, self._base = kind, tuple(modules), base
        self._entries: dict[str, Any] = {}

    def _load(self) -> None:
        for module in self._modules:
            importlib.import_module(module)

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator registering an object under `name`; a class gets `name` as its `name` attribute."""

        def wrap(obj):
            if self._base is not None and not (isinstance(obj, type) and issubclass(obj, self._base)):
                raise TypeError(f"register({name!r}) decorates a {self._base.__name__} subclass, got {obj!r}")
            known = self._entries.get(name)
            if known is not None and known is not obj:
                raise ValueError(f"a {self.kind} named {name!r} is already registered "
                                 f"({known.__module__}.{known.__qualname__})")
            if isinstance(obj, type):
                obj.name = name
            self._entries[name] = obj
            return obj

        return wrap

    def names(self) -> list[str]:
        """The registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return isinstance(name, str) and name in self._entries

    def __getitem__(self, name: str) -> Any:
        self._load()
        return self._entries[name]

    def items(self) -> Iterator[tuple[str, Any]]:
        """(name, object) pairs, sorted by name."""
        self._load()
        return iter(sorted(self._entries.items()))
