"""Selecting parameter leaves by their path.

A path is the '/'-joined key path of a leaf in a nested dict of arrays, e.g.
`Dense_0/kernel` or `blocks_1/attn/query/kernel`. Selectors are a regular
expression (full match, as qwix and big_vision do), a sequence of them (any
matches), or a predicate `(path, leaf) -> bool`. A selector that matches no
leaf is an error: a typo in a pattern must never silently select nothing.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, Sequence, Union

import jax

Selector = Union[str, Sequence[str], Callable[[str, Any], bool]]


def path_str(key_path: Sequence[Any]) -> str:
    """Joins a `jax.tree_util` key path into 'a/b/c' (dict keys, indices, attributes)."""
    parts = []
    for key in key_path:
        if isinstance(key, jax.tree_util.DictKey):
            parts.append(str(key.key))
        elif isinstance(key, jax.tree_util.SequenceKey):
            parts.append(str(key.idx))
        elif isinstance(key, jax.tree_util.GetAttrKey):
            parts.append(str(key.name))
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            parts.append(str(key.key))
        else:  # pragma: no cover - future key kinds
            parts.append(str(key))
    return "/".join(parts)


def leaf_paths(tree: Any) -> list[str]:
    """Returns the path of every leaf of `tree`, in flattening order."""
    return [path_str(kp) for kp, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def leaves_by_path(tree: Any) -> dict[str, Any]:
    """The leaves of `tree` keyed by their path, in flattening order."""
    return {path_str(kp): leaf for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nest_paths(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The nested dict whose leaf at path 'a/b/c' is flat['a/b/c'] (the inverse of `leaves_by_path`)."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def kernel_module(path: str, setting: str) -> str:
    """The module path of a kernel leaf ('.../kernel' -> '...'), or a ValueError naming the `setting` that picked it.

    Techniques that read a layer's inputs (calibration statistics are
    gathered per module) or rewrite a layer's module (factored exports) act
    on kernels only.
    """
    if not path.endswith("/kernel"):
        raise ValueError(f"{setting} picked {path!r}, which is not a '.../kernel' leaf: this technique acts on a "
                         f"layer's kernel through the module it belongs to; narrow {setting}")
    return path[: -len("/kernel")]


def _as_predicate(selector: Selector) -> Callable[[str, Any], bool]:
    if callable(selector):
        return selector
    patterns = [selector] if isinstance(selector, str) else list(selector)
    if not patterns:
        raise ValueError("empty selector: give a regex, a list of regexes or a predicate")
    compiled = []
    for p in patterns:
        try:
            compiled.append(re.compile(p))
        except re.error as e:
            raise ValueError(f"selector {p!r} is not a valid regular expression: {e}") from e
    return lambda path, leaf: any(c.fullmatch(path) for c in compiled)


def _describe(selector: Selector) -> str:
    return getattr(selector, "__name__", "predicate") if callable(selector) else repr(selector)


def select(tree: Any, selector: Selector, *, what: str = "selector") -> Any:
    """Returns a pytree of bools shaped like `tree`: True where `selector` matches the leaf's path.

    Raises ValueError naming the selector and the available paths when it
    matches no leaf. `what` names the caller in that message (e.g. 'prune.select').
    """
    pred = _as_predicate(selector)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    chosen = [bool(pred(path_str(kp), leaf)) for kp, leaf in flat]
    if not any(chosen):
        paths = ", ".join(path_str(kp) for kp, _ in flat[:40])
        more = "" if len(flat) <= 40 else f", ... ({len(flat)} in all)"
        raise ValueError(
            f"{what} {_describe(selector)} matches no parameter; patterns are full-match "
            f"regexes over paths such as: {paths}{more}")
    return jax.tree_util.tree_unflatten(treedef, chosen)


def selected_paths(tree: Any, selector: Selector, *, what: str = "selector") -> list[str]:
    """The paths that `selector` matches in `tree` (raises like `select` when none)."""
    mask = select(tree, selector, what=what)
    return [p for p, m in zip(leaf_paths(tree), jax.tree_util.tree_leaves(mask)) if m]


def match_rules(tree: Any, rules: Sequence[tuple[str, Any]], *, what: str = "rules",
                allow_unused: bool = False) -> Any:
    """Maps every leaf to the value of the first rule whose regex fully matches its path.

    Policies must cover every parameter: a leaf that no rule matches is an
    error, and so is a rule that matches no leaf (a typo would otherwise be
    silently unused) unless `allow_unused` (for shared defaults such as
    partition rules written for several models). Returns a pytree of rule values shaped like `tree`;
    values are kept as given (use a sentinel, not None, for "nothing").
    """
    compiled = []
    for pattern, value in rules:
        try:
            compiled.append((re.compile(pattern), pattern, value))
        except re.error as e:
            raise ValueError(f"{what}: {pattern!r} is not a valid regular expression: {e}") from e
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    used = [False] * len(compiled)
    values, unmatched = [], []
    for kp, _ in flat:
        path = path_str(kp)
        for i, (c, _, value) in enumerate(compiled):
            if c.fullmatch(path):
                used[i] = True
                values.append(value)
                break
        else:
            unmatched.append(path)
            values.append(None)
    if unmatched:
        raise ValueError(
            f"{what}: no rule matches {', '.join(unmatched)}; add a rule for them "
            f"(a final ('.*', ...) rule catches everything)")
    unused = [p for (_, p, _), u in zip(compiled, used) if not u]
    if unused and not allow_unused:
        raise ValueError(f"{what}: rule(s) {unused} match no parameter (a typo?)")
    return jax.tree_util.tree_unflatten(treedef, values)


def map_at_paths(fn: Callable[[str, Any], Any], tree: Any, paths: Any, *, what: str = "transform") -> Any:
    """`tree` with each leaf at one of `paths` replaced by fn(path, leaf); other leaves pass through.

    The reusable piece (like `optax.masked`) that lets a technique act on the
    leaves it chose at init, by path, on whatever tree it is later handed (a
    chain's stored parameters, say). A path that is not a leaf of `tree` is a
    ValueError naming `what`: a stage must never silently miss a parameter.
    """
    wanted = set(paths)
    found = set()

    def visit(kp, leaf):
        path = path_str(kp)
        if path in wanted:
            found.add(path)
            return fn(path, leaf)
        return leaf

    out = jax.tree_util.tree_map_with_path(visit, tree)
    missing = sorted(wanted - found)
    if missing:
        raise ValueError(f"{what}: no parameter leaf at {', '.join(missing[:10])}"
                         f"{' ...' if len(missing) > 10 else ''} (it was a parameter when the stage was "
                         f"initialized; an earlier stage restructured it?)")
    return out
