"""Hooks on module inputs, carried in the parameter pytree: how activation techniques reach an unedited model.

A transform that acts on activations (activation quantization, later
feature capture) puts, beside the model's params, a top-level entry
`params[INTERCEPT_KEY]` that nests module paths down to {hook name: hook
params}, e.g. {"~intercept": {"Dense_1": {"fake_quant_input": {"scale": ...}}}}.
The hook functions are registered here by name (`register_input_hook`) as
pure functions `fn(hook_params, x) -> x` of arrays, so compression/ still
sees only pytrees. The driver strips the entry before `model.apply` and
passes the first positional input of each named module's `__call__` through
its hooks (flax.linen.intercept_methods; see experiments/models.apply_model).
Because the hooks and their params travel in the params, an export carries
them and the loaded model quantizes its activations exactly as in training.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

import jax.numpy as jnp

INTERCEPT_KEY = "~intercept"
# Modules whose import registers hooks; loaded on first lookup (see compression/__init__.py).
HOOK_MODULES = ("compression.activation_quantization",)
_HOOKS: dict[str, Callable[[Any, Any], Any]] = {}


def register_input_hook(name: str, fn: Callable[[Any, Any], Any]) -> None:
    """Makes `fn(hook_params, x) -> x` available as the input hook `name`."""
    if name in _HOOKS and _HOOKS[name] is not fn:
        raise ValueError(f"an input hook named {name!r} is already registered")
    _HOOKS[name] = fn


def hook_names() -> list[str]:
    """The registered input hook names, sorted."""
    for module in HOOK_MODULES:
        importlib.import_module(module)
    return sorted(_HOOKS)


def split_params(params: Mapping[str, Any]) -> tuple[dict, dict[tuple[str, ...], list[tuple[str, Any]]]]:
    """(the model's params, {module path: [(hook name, hook params), ...]}) of a params tree."""
    if not isinstance(params, Mapping) or INTERCEPT_KEY not in params:
        return params, {}
    names = set(hook_names())
    hooks: dict[tuple[str, ...], list[tuple[str, Any]]] = {}

    def walk(node, path):
        for key, value in node.items():
            if key in names:
                hooks.setdefault(path, []).append((key, value))
            elif isinstance(value, Mapping):
                walk(value, path + (key,))
            else:
                raise ValueError(f"{INTERCEPT_KEY}/{'/'.join(path + (key,))} is neither a module nor a "
                                 f"registered input hook ({sorted(names)})")

    walk(params[INTERCEPT_KEY], ())
    return {k: v for k, v in params.items() if k != INTERCEPT_KEY}, hooks


def run_hooks(hooks: list[tuple[str, Any]], x: Any) -> Any:
    """x passed through a module's hooks in order, computed in float32 and returned in x's dtype.

    Under a bfloat16 precision policy a hook (activation fake quantization)
    divides by its step and rounds in float32, where the codes are exact; only
    the dequantized result is rounded to bfloat16, as the module's input.
    """
    dtype = getattr(x, "dtype", None)
    low_precision = dtype is not None and jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32
    if low_precision:
        x = x.astype(jnp.float32)
    for name, hook_params in hooks:
        x = _HOOKS[name](hook_params, x)
    return x.astype(dtype) if low_precision else x
