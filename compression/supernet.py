"""HAT's SuperTransformer: one set of weights, every sub-architecture a slice of it (Wang et al. 2020).

The search space (`SearchSpace`) is the Transformer's elastic sizes below the
maxima of one supernet (a `CharTransformer` config): the number of layers,
each layer's heads and FFN width, and the hidden width (which is also the
embedding width, as HAT's). An `Architecture` is one point of it. As in HAT,
a sub-architecture takes the *first* units of every elastic axis: the first
`width` hidden dimensions, the first `heads[i]` heads and `ffn[i]` FFN units
of layer i, the first `depth` layers. So:

- `slice_params` cuts the supernet's parameters to an architecture: a
  standalone model (`Architecture.model_config`) with its own parameters —
  the export of a found model, and how an inherited-weight model is scored;
- `supernet_masks` zeroes, at one width, the heads, FFN units and layers an
  architecture does not use (their output projections' rows, FFN columns,
  the block's output kernels: exact zeros, so a block beyond the depth is the
  identity and an unused head or unit contributes nothing), so training and
  scoring any architecture of one width bucket run in one compiled step with
  the masks as arguments. Hidden width cannot be masked this way (LayerNorm's
  statistics would count the zeroed dimensions), so widths are a few buckets
  (`MAX_WIDTH_BUCKETS`), each its own compiled step on the parameters sliced
  to it.

Sampling, mutation and crossover take a numpy Generator, so a search seeded by
(seed, step) is reproducible.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from compression.selection import leaves_by_path, nest_paths

MAX_WIDTH_BUCKETS = 3
# The elastic axes of each CharTransformer parameter (path regex, {axis: "width" | "heads" | "ffn"}).
ELASTIC_AXES: tuple[tuple[str, dict[int, str]], ...] = (
    (r"embed/embedding", {1: "width"}),
    (r"pos_embed", {1: "width"}),
    (r"(block_\d+/ln_(attn|ffn)|ln_final)/(scale|bias)", {0: "width"}),
    (r"block_\d+/attn/(query|key|value)/kernel", {0: "width", 1: "heads"}),
    (r"block_\d+/attn/(query|key|value)/bias", {0: "heads"}),
    (r"block_\d+/attn/out/kernel", {0: "heads", 2: "width"}),
    (r"block_\d+/attn/out/bias", {0: "width"}),
    (r"block_\d+/ffn_in/kernel", {0: "width", 1: "ffn"}),
    (r"block_\d+/ffn_in/bias", {0: "ffn"}),
    (r"block_\d+/ffn_out/kernel", {0: "ffn", 1: "width"}),
    (r"block_\d+/ffn_out/bias", {0: "width"}),
    (r"head/kernel", {0: "width"}),
    (r"head/bias", {}),
)
BLOCK = re.compile(r"block_(\d+)/")


def _choices(name: str, values: Any) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"search space {name} must be a non-empty list of positive integers (got {values!r})")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"search space {name} must be a non-empty list of positive integers (got {values!r})")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise ValueError(f"search space {name} {values!r} repeats a value")
    return tuple(sorted(out))


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One sub-Transformer: hidden (= embedding) width, and per layer its heads and FFN width."""

    width: int
    heads: tuple[int, ...]
    ffn: tuple[int, ...]

    @property
    def depth(self) -> int:
        return len(self.heads)

    def model_config(self, supernet: Mapping[str, Any]) -> dict:
        """The standalone model's config: the supernet's, at this architecture's sizes."""
        return {**dict(supernet), "width": self.width, "num_layers": self.depth, "num_heads": list(self.heads),
                "ffn_dim": list(self.ffn)}

    def as_dict(self) -> dict:
        return {"width": self.width, "heads": list(self.heads), "ffn": list(self.ffn)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Architecture":
        return cls(int(d["width"]), tuple(int(h) for h in d["heads"]), tuple(int(f) for f in d["ffn"]))


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The choices of each elastic size (HAT's space), all within one supernet's maxima."""

    depths: tuple[int, ...]
    heads: tuple[int, ...]
    ffn: tuple[int, ...]
    widths: tuple[int, ...]

    def __post_init__(self):
        for name in ("depths", "heads", "ffn", "widths"):
            object.__setattr__(self, name, _choices(name, getattr(self, name)))
        if len(self.widths) > MAX_WIDTH_BUCKETS:
            raise ValueError(f"search space widths {list(self.widths)}: at most {MAX_WIDTH_BUCKETS} width buckets "
                             f"(each compiles its own step; heads, FFN width and depth are masked inside one)")

    @classmethod
    def from_config(cls, space: Mapping[str, Any], supernet: Mapping[str, Any]) -> "SearchSpace":
        """The space `space` ({depths, heads, ffn, widths}) names, checked against the supernet's model config."""
        unknown = sorted(set(space) - {"depths", "heads", "ffn", "widths"})
        if unknown:
            raise ValueError(f"search space has unknown field(s) {unknown}; use depths, heads, ffn and widths")
        built = cls(space["depths"], space["heads"], space["ffn"], space["widths"])
        built.check_supernet(supernet)
        return built

    def check_supernet(self, supernet: Mapping[str, Any]) -> None:
        """A ValueError naming every maximum of the space above the supernet's size (it could not be sliced)."""
        layers = int(supernet["num_layers"])
        heads = supernet["num_heads"]
        ffn = supernet["ffn_dim"]
        sizes = {"depths": (max(self.depths), layers, "num_layers"),
                 "heads": (max(self.heads), min(heads) if isinstance(heads, Sequence) else int(heads), "num_heads"),
                 "ffn": (max(self.ffn), min(ffn) if isinstance(ffn, Sequence) else int(ffn), "ffn_dim"),
                 "widths": (max(self.widths), int(supernet["width"]), "width")}
        over = [f"{name} up to {top} but the supernet's {field} is {have}"
                for name, (top, have, field) in sizes.items() if top > have]
        if over:
            raise ValueError("the search space exceeds the supernet: " + "; ".join(over)
                             + ": shrink the space or enlarge config.model")
        if (supernet.get("embed_dim") or None) is not None:
            raise ValueError("the SuperTransformer ties the embedding width to the hidden width: set model.embed_dim "
                             "to None")

    def largest(self) -> Architecture:
        d = max(self.depths)
        return Architecture(max(self.widths), (max(self.heads),) * d, (max(self.ffn),) * d)

    def smallest(self) -> Architecture:
        d = min(self.depths)
        return Architecture(min(self.widths), (min(self.heads),) * d, (min(self.ffn),) * d)

    def contains(self, arch: Architecture) -> bool:
        return (arch.width in self.widths and arch.depth in self.depths and len(arch.ffn) == arch.depth
                and all(h in self.heads for h in arch.heads) and all(f in self.ffn for f in arch.ffn))

    def check(self, arch: Architecture) -> Architecture:
        if not self.contains(arch):
            raise ValueError(f"architecture {arch.as_dict()} is not in the search space {dataclasses.asdict(self)}")
        return arch

    def sample(self, rng: np.random.Generator) -> Architecture:
        """A uniformly random architecture: depth, then each layer's heads and FFN width, then the width."""
        depth = int(rng.choice(self.depths))
        return Architecture(int(rng.choice(self.widths)), tuple(int(rng.choice(self.heads)) for _ in range(depth)),
                            tuple(int(rng.choice(self.ffn)) for _ in range(depth)))

    def mutate(self, arch: Architecture, rng: np.random.Generator, probability: float = 0.3) -> Architecture:
        """Each size resampled with `probability` (HAT's mutation); a deeper layer copies its new sizes at random."""
        depth = int(rng.choice(self.depths)) if rng.random() < probability else arch.depth
        heads, ffn = [], []
        for i in range(depth):
            h = arch.heads[i] if i < arch.depth else int(rng.choice(self.heads))
            f = arch.ffn[i] if i < arch.depth else int(rng.choice(self.ffn))
            heads.append(int(rng.choice(self.heads)) if rng.random() < probability else h)
            ffn.append(int(rng.choice(self.ffn)) if rng.random() < probability else f)
        width = int(rng.choice(self.widths)) if rng.random() < probability else arch.width
        return self.check(Architecture(width, tuple(heads), tuple(ffn)))

    def crossover(self, a: Architecture, b: Architecture, rng: np.random.Generator) -> Architecture:
        """Each size from one parent or the other, with equal chance (layers beyond a parent's depth from the other)."""
        depth = a.depth if rng.random() < 0.5 else b.depth
        pick = lambda x, y: x if rng.random() < 0.5 else y
        heads, ffn = [], []
        for i in range(depth):
            options = [p for p in (a, b) if i < p.depth]
            heads.append(pick(*(p.heads[i] for p in options)) if len(options) == 2 else options[0].heads[i])
            ffn.append(pick(*(p.ffn[i] for p in options)) if len(options) == 2 else options[0].ffn[i])
        return self.check(Architecture(pick(a.width, b.width), tuple(heads), tuple(ffn)))


def _axes(path: str) -> dict[int, str]:
    for pattern, axes in ELASTIC_AXES:
        if re.fullmatch(pattern, path):
            return axes
    raise ValueError(f"supernet parameter {path} is not one of the Transformer's (its elastic axes are unknown)")


def _layer(path: str) -> Optional[int]:
    m = BLOCK.match(path)
    return int(m.group(1)) if m else None


def slice_params(params: Any, arch: Architecture) -> dict:
    """The supernet's parameters cut to `arch` (first units of every axis, first layers): a standalone model's."""
    out = {}
    for path, w in leaves_by_path(params).items():
        layer = _layer(path)
        if layer is not None and layer >= arch.depth:
            continue
        sizes = {"width": arch.width}
        if layer is not None:
            sizes.update(heads=arch.heads[layer], ffn=arch.ffn[layer])
        index = tuple(slice(0, sizes[kind]) if (kind := _axes(path).get(axis)) else slice(None)
                      for axis in range(np.ndim(w)))
        out[path] = w[index]
    return nest_paths(out)


def supernet_masks(params: Any, arch: Architecture) -> dict:
    """{path: 0/1 float array} at `params`' width: what zeroes the heads, FFN units and layers `arch` leaves out.

    Only the leaves whose zeroing removes a unit are masked (the attention
    output kernel's head rows, ffn_in's columns and bias, ffn_out's rows; every
    output kernel and bias of a block beyond the depth); the rest are 1. The
    masks depend on the architecture, not on the weights: passed as arguments
    to one compiled step, any architecture of this width runs without
    recompiling.
    """
    masks = {}
    for path, w in leaves_by_path(params).items():
        mask = np.ones(np.shape(w), np.float32)
        layer = _layer(path)
        if layer is not None:
            if layer >= arch.depth:
                if re.search(r"/(attn/out|ffn_out)/", path):
                    mask[...] = 0.0
            else:
                axes = _axes(path)
                for axis, kind in axes.items():
                    keep = {"heads": arch.heads[layer], "ffn": arch.ffn[layer]}.get(kind)
                    if keep is not None and (kind == "ffn" or path.endswith("attn/out/kernel")):
                        index = [slice(None)] * mask.ndim
                        index[axis] = slice(keep, None)
                        mask[tuple(index)] = 0.0
        masks[path] = mask
    return masks
