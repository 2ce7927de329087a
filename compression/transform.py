"""The transform protocol: compression as a reparameterization of the parameter pytree.

A `Transform` is a triple of pure functions, in the spirit of an optax
`GradientTransformation`:

    init(params, key, batches=None) -> (trainable, state)
    apply(trainable, state)         -> params   # what the unmodified model sees
    update(trainable, state, grads, step) -> (trainable, state)

The optimizer sees `trainable`; gradients are taken with respect to it;
`update` runs after each optimizer step (schedules, re-scoring, projections
such as re-zeroing pruned weights). Masks, scales and schedule values are
arrays in `state`, never Python constants, so a changing schedule does not
recompile the train step. `batches` is None or, for data-aware techniques
(SNIP, calibration, DRONE), an `InitBatches`: a few training batches and
the training loss over the model's params, which is a pure function, so a
transform still never sees a model.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax

from compression.selection import leaves_by_path, path_str

PyTree = Any


class InitBatches(NamedTuple):
    """What a data-aware `init` reads: training batches and `loss_fn(params, batch) -> scalar`.

    `module_inputs(params, module_paths) -> {module path: inputs}`, where the
    driver provides it, returns the first positional input each named module
    received over the batches (concatenated along axis 0): what activation
    calibration reads, without a transform ever seeing a module.
    """

    batches: Sequence[Any]
    loss_fn: Callable[[PyTree, Any], Any]
    module_inputs: Optional[Callable[[PyTree, Sequence[str]], dict]] = None

    def mean_gradient(self, params: PyTree) -> PyTree:
        """The gradient of the loss with respect to `params`, averaged over the batches."""
        grad = jax.jit(jax.grad(self.loss_fn))
        total = None
        for batch in self.batches:
            g = grad(params, batch)
            total = g if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, g)
        return jax.tree_util.tree_map(lambda x: x / len(self.batches), total)


class Transform(NamedTuple):
    """A compression technique as pure functions over parameter pytrees.

    `export`, when a technique has one, makes the effective params physically
    smaller for the exported artifact: export(params, state, model_config)
    -> (params, model_config), e.g. structured pruning drops pruned units and
    shrinks the model config to match, so the exported model loads as a
    smaller instance of the same model. Without it the effective params are
    exported as they are.

    `keep`, where a technique has one, reaches into the optimizer's state:
    keep(trainable, state) is a tree shaped like the trainable whose leaves
    broadcast against it (0/1 masks, or a scalar 1 for untouched leaves), and
    after each step the driver multiplies every parameter-shaped part of the
    optimizer state (Adam's moments, say) by it, so an entry the technique
    removed keeps no momentum (optax.tree_utils.tree_map_params).
    """

    init: Callable[..., tuple[PyTree, PyTree]]
    apply: Callable[[PyTree, PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree, Any], tuple[PyTree, PyTree]]
    export: Optional[Callable[[PyTree, PyTree, dict], tuple[PyTree, dict]]] = None
    keep: Optional[Callable[[PyTree, PyTree], PyTree]] = None


def identity() -> Transform:
    """The transform that changes nothing: trainable = params, state = ()."""

    def init(params, key=None, batches=None):
        del key, batches
        return params, ()

    def apply(trainable, state):
        del state
        return trainable

    def update(trainable, state, grads, step):
        del grads, step
        return trainable, state

    return Transform(init, apply, update)


def chain(*transforms: Transform) -> Transform:
    """Composes transforms so that chain(a, b) means "a, then b".

    The algebra, for chain(a, b) over params P (longer chains nest the same
    way: chain(a, b, c) = chain(a, chain(b, c))):

        init:   (Tb, Sb) = b.init(P)                 # b reparameterizes the params
                (Ta, Sa) = a.init(Tb)                # a reparameterizes b's trainable
        apply:  b.apply(a.apply(Ta, Sa), Sb)         # the model sees b applied to what a produced
        update: (Ta, Sa) = a.update(Ta, Sa, g, step)
                (_,  Sb) = b.update(a.apply(Ta, Sa), Sb, g, step)
        export: a.export, then b.export, on the effective params (each where defined)

    Only the first transform's trainable is stored and optimized; it holds
    b's trainable leaves (b's learned scales, say) because a treats them as
    parameters and selects by path. So prune-then-quantize, chain(prune,
    quantize), makes the model see Q(W * m), and quantize-then-prune,
    chain(quantize, prune), sees Q(W) * m, with masks scored on W at init
    (b.init sees the params) and on Q(W) when prune re-scores in `update`
    (b.update sees a.apply's output). So a mask fixed at init and an
    elementwise Q with Q(0) = 0 give the same params in either order; the
    orders differ once the mask is re-scored.
    A later stage may change only its state in `update`: what it returns as
    trainable is a function of the earlier stages' output, not a stored
    array, so its invariants (a mask, a positive scale) must hold in its
    `apply`, which every forward pass runs. Each stage's `update` sees the
    gradient with respect to the chain's trainable.
    """
    if not transforms:
        return identity()
    if len(transforms) == 1:
        return transforms[0]
    first, rest = transforms[0], chain(*transforms[1:])

    def init(params, key=None, batches=None):
        key_first, key_rest = (None, None) if key is None else jax.random.split(key)
        rest_trainable, rest_state = rest.init(params, key_rest, batches)
        first_batches = None
        if batches is not None:
            # The first stage's params are the rest's trainable: its loss goes through rest.apply.
            capture = batches.module_inputs
            first_batches = InitBatches(
                batches.batches, lambda t, batch: batches.loss_fn(rest.apply(t, rest_state), batch),
                None if capture is None else lambda t, paths: capture(rest.apply(t, rest_state), paths))
        first_trainable, first_state = first.init(rest_trainable, key_first, first_batches)
        return first_trainable, (first_state, rest_state)

    def apply(trainable, state):
        first_state, rest_state = state
        return rest.apply(first.apply(trainable, first_state), rest_state)

    def update(trainable, state, grads, step):
        first_state, rest_state = state
        trainable, first_state = first.update(trainable, first_state, grads, step)
        _, rest_state = rest.update(first.apply(trainable, first_state), rest_state, grads, step)
        return trainable, (first_state, rest_state)

    def export(params, state, model_config):
        # Stage order again: first's export, then the rest's, each with its own state.
        first_state, rest_state = state
        if first.export is not None:
            params, model_config = first.export(params, first_state, model_config)
        if rest.export is not None:
            params, model_config = rest.export(params, rest_state, model_config)
        return params, model_config

    def keep(trainable, state):
        # Both stages' keep trees, multiplied by path; the rest's applies to the
        # entries of the chain's trainable at its own paths (same shape).
        # jax.numpy at call time: this module loads while jax itself initializes (see __init__).
        jnp = jax.numpy
        first_state, rest_state = state
        ones = jax.tree_util.tree_map(lambda leaf: jnp.ones((), jnp.float32), trainable)
        out = ones if first.keep is None else jax.tree_util.tree_map(
            lambda a, b: a * b, ones, first.keep(trainable, first_state))
        if rest.keep is not None:
            rest_keep = leaves_by_path(rest.keep(first.apply(trainable, first_state), rest_state))
            out = jax.tree_util.tree_map_with_path(
                lambda kp, k, leaf: k * rest_keep[path_str(kp)]
                if path_str(kp) in rest_keep and jnp.ndim(rest_keep[path_str(kp)]) <= jnp.ndim(leaf) else k,
                out, trainable)
        return out

    has_export = first.export is not None or rest.export is not None
    has_keep = first.keep is not None or rest.keep is not None
    return Transform(init, apply, update, export if has_export else None, keep if has_keep else None)


def map_selected(fn: Callable[..., Any], selection: PyTree, tree: PyTree, *rest: PyTree) -> PyTree:
    """Applies `fn(leaf, *rest_leaves)` where `selection` is True; other leaves pass through.

    The reusable piece (like `optax.masked`) that lets a technique act on the
    leaves its selector chose without re-implementing the selection.
    """
    return jax.tree_util.tree_map(
        lambda chosen, leaf, *others: fn(leaf, *others) if chosen else leaf,
        selection, tree, *rest)
