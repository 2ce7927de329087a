"""The training loss as a list of named pure terms, each looked up by name from the config.

A term is built from its settings and is a pure function

    term(outputs, batch, extras) -> scalar

of arrays only: `outputs` = {"logits": [B, C] or [B, L, V], "intermediates":
the model's sown values}, `batch` = {"inputs", "targets"}, and `extras` =
{"params": the effective params the model saw, "teacher": the teacher's
outputs shaped like `outputs` (when the config names a teacher),
"loss_params": the trainable parameters of the terms that own some}. The
driver adds the terms up, each times its `weight`, and never branches on
one: label smoothing, weight decay in the loss and the distillation terms
are terms (compression/distillation.py). A term module registers its factories with `register_loss`;
`build_loss` turns the config's list into the total loss.

A term that learns parameters of its own (FitNets' regressor from a thin
student layer to a wide teacher layer, a projection between hidden widths) is
a `ParamTerm`: the driver creates its parameters once from the shapes of the
outputs, trains them with the model's optimizer beside the model's trainable,
and never exports them.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax

from compression.registries import Registry
from compression.selection import leaves_by_path
from compression.settings import require_float

LossTerm = Callable[[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Any]
# Modules whose import registers more terms; loaded on first lookup, like the techniques.
TERM_MODULES = ("compression.distillation",)
TERMS = Registry("loss term", TERM_MODULES)
# Decorator registering a loss-term factory `fn(**settings) -> term` under a name.
register_loss = TERMS.register


def loss_names() -> list[str]:
    """The registered loss-term names, sorted."""
    return TERMS.names()


class ParamTerm(NamedTuple):
    """A loss term with trainable parameters of its own.

    `init(key, outputs, extras) -> params` reads only the shapes of `outputs`
    and `extras` (jax.ShapeDtypeStruct leaves will do); `apply(params,
    outputs, batch, extras) -> scalar` is the term.
    """

    init: Callable[[Any, Mapping[str, Any], Mapping[str, Any]], Any]
    apply: Callable[[Any, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]], Any]


class Loss(NamedTuple):
    """The configured loss.

    `total(outputs, batch, extras) -> (scalar, {term name: value})`;
    `init(key, outputs, extras) -> {term name: params}` for the terms that own
    parameters (`ParamTerm`), {} when none does, so a loss without them
    changes nothing in the driver's state.
    """

    total: Callable[..., tuple[Any, dict]]
    names: tuple[str, ...]
    init: Callable[[Any, Mapping[str, Any], Mapping[str, Any]], dict] = lambda key, outputs, extras: {}
    owners: tuple[str, ...] = ()  # the names of the terms with parameters


def build_loss(specs: Sequence[Mapping[str, Any]]) -> Loss:
    """The weighted sum of the terms `specs` names: [{"term": name, "weight": w, "name": label, **settings}].

    Each weight is a finite number >= 0, and at least one is > 0; each term's
    factory checks its own settings.
    """
    specs = list(specs)
    if not specs:
        raise ValueError("config.loss names no term; use [{'term': 'cross_entropy'}] for the plain loss")
    terms, labels, weights = [], [], []
    for i, spec in enumerate(specs):
        spec = dict(spec)
        name = spec.pop("term", None)
        if name not in loss_names():
            raise ValueError(f"config.loss[{i}] term {name!r} is not one of {loss_names()}")
        # 0 keeps a term for its logged value; a negative weight would maximize it, NaN poisons the total.
        weight = require_float(f"config.loss[{i}] ({name}) weight", spec.pop("weight", 1.0), low=0)
        labels.append(spec.pop("name", name))
        try:
            terms.append(TERMS[name](**spec))
        except TypeError as e:
            raise ValueError(f"loss term {name!r} does not accept settings {sorted(spec)}: {e}") from e
        weights.append(weight)
    if len(set(labels)) != len(labels):
        raise ValueError(f"config.loss terms {labels} repeat a name; give repeated terms a 'name'")
    if not any(weights):
        raise ValueError(f"config.loss terms {labels} all have weight 0, so the loss would train nothing; "
                         f"give at least one term a weight > 0")

    owners = {label: term for label, term in zip(labels, terms) if isinstance(term, ParamTerm)}

    def value(label, term, outputs, batch, extras):
        if label in owners:
            # A term whose parameters came out empty (no widths to bridge) gets {}.
            return term.apply(extras.get("loss_params", {}).get(label, {}), outputs, batch, extras)
        return term(outputs, batch, extras)

    def total(outputs, batch, extras):
        values = {label: value(label, term, outputs, batch, extras) for label, term in zip(labels, terms)}
        parts = [v if w == 1.0 else w * v for v, w in zip(values.values(), weights)]
        out = parts[0]
        for part in parts[1:]:
            out = out + part
        return out, values

    def init(key, outputs, extras):
        return {label: term.init(jax.random.fold_in(key, i), outputs, extras)
                for i, (label, term) in enumerate(owners.items())}

    return Loss(total, tuple(labels), init, tuple(owners))


def mean_cross_entropy(logits, targets, label_smoothing: float = 0.0):
    """Mean softmax cross-entropy over every example (and position), with optional label smoothing.

    Label smoothing (Szegedy et al. 2016): the target is (1 - s) one-hot + s / C.
    """
    if label_smoothing == 0.0:
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, targets))
    classes = logits.shape[-1]
    labels = optax.smooth_labels(jax.nn.one_hot(targets, classes, dtype=logits.dtype), label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, labels))


@register_loss("cross_entropy")
def cross_entropy(label_smoothing: float = 0.0) -> LossTerm:
    """The hard-label cross-entropy of the logits against batch["targets"] (optionally smoothed).

    `label_smoothing` is in [0, 1): at 1 the target is uniform and says nothing of the label.
    """
    label_smoothing = require_float("cross_entropy.label_smoothing", label_smoothing, low=0, high=1,
                                    high_open=True, fix="the target is (1 - s) one-hot + s / classes")
    return lambda outputs, batch, extras: mean_cross_entropy(outputs["logits"], batch["targets"], label_smoothing)


@register_loss("l2")
def l2(select: str = ".*kernel") -> LossTerm:
    """Half the sum of squares of the effective params whose path `select` fully matches (weight decay as a loss)."""
    try:
        pattern = re.compile(select)
    except re.error as e:
        raise ValueError(f"l2.select {select!r} is not a valid regular expression: {e}") from e

    def term(outputs, batch, extras):
        chosen = [w for p, w in leaves_by_path(extras["params"]).items() if pattern.fullmatch(p)]
        if not chosen:
            raise ValueError(f"l2.select {select!r} matches no parameter")
        return 0.5 * sum(jnp.sum(jnp.square(w.astype(jnp.float32))) for w in chosen)

    return term
