"""The transform protocol: compression as a reparameterization of the parameter pytree.

A `Transform` is a bundle of pure functions, in the spirit of an optax
`GradientTransformation`:

    init(params, key, batches=None) -> (trainable, state)
    apply(trainable, state)         -> params   # what the unmodified model sees
    update(trainable, state, grads, step) -> (trainable, state)

`trainable` is always a dict: `trainable["params"]` holds the model's
parameters as the technique stores them (the same paths as the params it was
given; a structural technique may store a leaf as a subtree, W -> {u, v}),
and any other key holds arrays the technique adds (learned scales, factors,
centroids) under names of its choosing. The optimizer sees the whole
trainable; gradients are taken with respect to it; `update` runs after each
optimizer step (schedules, re-scoring) and ends with the technique's
projection (re-zeroing pruned weights, BinaryConnect's clip). Masks, scales
and schedule values are arrays in `state`, never Python constants, so a
changing schedule does not recompile the train step. `batches` is None or,
for data-aware techniques (SNIP, calibration, DRONE), an `InitBatches`; such
a technique calls `require_batches` first, so that no batches (None) and an
empty list are refused alike, with one message.

Optional capabilities, each with an identity default so that neither `chain`
nor a driver tests for their absence:

    project(trainable, state) -> trainable   the projection alone (what `update` ends with),
                                             by parameter path on whatever tree it is given
    keep(trainable, state) -> tree like trainable, leaves broadcasting against it (0/1):
                                             the driver multiplies the optimizer's
                                             parameter-shaped state by it after each step, so an
                                             entry a technique removed keeps no momentum
    encode(params, state) -> params          hands parameters to the export already encoded
                                             (`compression.export.Coded`: packed codes and scales)
    export(params, state, model_config) -> (params, model_config)
                                             the structural export: a physically smaller model
                                             (dropped units, fewer layers) and the config that
                                             reads it; it passes `Coded` leaves through
                                             (`compression.export.take`)
    check(params, state) -> None             raises ValueError when the effective params break
                                             what the stage guarantees (a dropped layer not an
                                             identity); `chain` runs it after every stage's init

`export_model(t, params, state, config)` runs every encoding, then every
structural export; see `chain` for the order across stages.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax

from compression.selection import leaves_by_path, nest_paths

PyTree = Any
PARAMS = "params"


class InitBatches(NamedTuple):
    """What a data-aware `init` reads: training batches and `loss_fn(params, batch) -> scalar`.

    `statistics(params, module_paths, kinds) -> {module path: {kind: array}}`,
    where the driver provides it, returns the calibration statistics
    (`compression.calibration`: X^T X, per-feature squared norms, min/max,
    counts, or the raw `inputs` rows) of the first positional input each
    named module received over the batches, run with `params`: what
    activation calibration, DRONE, SparseGPT, GPTQ and Wanda read, without a
    transform ever seeing a module. Pass `one_at_a_time=True` for an iterator
    of (path, statistics) that holds one module's statistics at a time.
    """

    batches: Sequence[Any]
    loss_fn: Callable[[PyTree, Any], Any]
    statistics: Optional[Callable[..., Any]] = None

    def mean_gradient(self, params: PyTree) -> PyTree:
        """The gradient of the loss with respect to `params`, averaged over the batches."""
        grad = jax.jit(jax.grad(self.loss_fn))
        total = None
        for batch in self.batches:
            g = grad(params, batch)
            total = g if total is None else jax.tree_util.tree_map(lambda a, b: a + b, total, g)
        return jax.tree_util.tree_map(lambda x: x / len(self.batches), total)

    def through(self, apply: Callable[[PyTree], PyTree]) -> "InitBatches":
        """The same batches for a stage whose output `apply` turns into the params this loss reads."""
        statistics = self.statistics
        return InitBatches(self.batches, lambda p, batch: self.loss_fn(apply(p), batch),
                           None if statistics is None else
                           lambda p, *args, **kwargs: statistics(apply(p), *args, **kwargs))


def require_batches(batches: Optional[InitBatches], who: str, hint: str = "") -> InitBatches:
    """`batches` if it holds at least one batch, else the one ValueError every data-aware technique raises.

    None (the driver's `compression.init_batches = 0`) and an empty list get
    the same message: without a batch a gradient is a sum of nothing (SNIP's
    scores), a calibration range has no inputs, a sensitivity is a mean of
    nothing (NaN). `who` names the technique and setting that reads data;
    `hint` is an alternative that needs none, if there is one.
    """
    if batches is None or not len(batches.batches):
        raise ValueError(f"{who} needs at least one batch at init: set config.compression.init_batches > 0"
                         + hint)
    return batches


def require_statistics(batches: Optional[InitBatches], who: str, hint: str = "") -> InitBatches:
    """`require_batches`, and then batches that carry `statistics`: what a technique reading layer inputs needs.

    Calibration (activation ranges), DRONE, Wanda and SparseGPT read the
    inputs each module receives, which only the driver can gather
    (`experiments.models.module_statistics`); InitBatches built without it
    are refused with one message, `who` and `hint` as in `require_batches`.
    """
    batches = require_batches(batches, who, hint)
    if batches.statistics is None:
        raise ValueError(f"{who} needs their calibration statistics, and these InitBatches have no `statistics` "
                         f"(the driver's models.module_statistics) to read them with" + hint)
    return batches


def no_update(trainable: PyTree, state: PyTree, grads: PyTree, step: Any) -> tuple[PyTree, PyTree]:
    """An `update` with nothing to do after a step: the optimizer alone trains what the technique stores."""
    del grads, step
    return trainable, state


def join_factors(params: PyTree, paths: Any, names: Sequence[str], join: Callable[..., Any]) -> dict:
    """`params` with the subtree {name: factor} stored at each path replaced by join(*factors in `names` order).

    The `apply` of a structural technique that stores a leaf W as factors
    (low rank's {u, v}, a separable split's {depthwise, pointwise}).
    """
    flat = dict(leaves_by_path(params))
    for p in paths:
        flat[p] = join(*(flat.pop(f"{p}/{name}") for name in names))
    return nest_paths(flat)


def no_projection(trainable: PyTree, state: PyTree) -> PyTree:
    """The default `project`: nothing to enforce."""
    del state
    return trainable


def keep_everything(trainable: PyTree, state: PyTree) -> PyTree:
    """The default `keep`: a scalar 1 for every leaf (no optimizer state is dropped)."""
    del state
    jnp = jax.numpy  # at call time: this module loads while jax itself initializes (see __init__)
    return jax.tree_util.tree_map(lambda leaf: jnp.ones((), jnp.float32), trainable)


def no_check(params: PyTree, state: PyTree) -> None:
    """The default `check`: a stage that guarantees nothing about the effective params beyond its apply."""
    del params, state


def no_encoding(params: PyTree, state: PyTree) -> PyTree:
    """The default `encode`: every parameter is written by the codec the export config names."""
    del state
    return params


def same_structure(params: PyTree, state: PyTree, model_config: dict) -> tuple[PyTree, dict]:
    """The default structural `export`: the model keeps its shapes and its config."""
    del state
    return params, model_config


class Transform(NamedTuple):
    """A compression technique as pure functions over parameter pytrees (see the module docstring)."""

    init: Callable[..., tuple[PyTree, PyTree]]
    apply: Callable[[PyTree, PyTree], PyTree]
    update: Callable[[PyTree, PyTree, PyTree, Any], tuple[PyTree, PyTree]]
    project: Callable[[PyTree, PyTree], PyTree] = no_projection
    keep: Callable[[PyTree, PyTree], PyTree] = keep_everything
    encode: Callable[[PyTree, PyTree], PyTree] = no_encoding
    export: Callable[[PyTree, PyTree, dict], tuple[PyTree, dict]] = same_structure
    name: str = "transform"
    check: Callable[[PyTree, PyTree], None] = no_check


def split_trainable(trainable: PyTree) -> tuple[PyTree, dict]:
    """(trainable["params"], the technique's added arrays {key: subtree}) of one trainable."""
    if not isinstance(trainable, dict) or PARAMS not in trainable:
        raise ValueError(f"a transform's trainable must be a dict with a {PARAMS!r} entry (the model's "
                         f"parameters as the technique stores them), got {type(trainable).__name__}"
                         + (f" with keys {sorted(trainable)}" if isinstance(trainable, dict) else ""))
    return trainable[PARAMS], {k: v for k, v in trainable.items() if k != PARAMS}


def export_model(transform: Transform, params: PyTree, state: PyTree,
                 model_config: dict) -> tuple[PyTree, dict]:
    """The exported params and model config: `transform.encode`, then its structural `export`."""
    return transform.export(transform.encode(params, state), state, model_config)


def identity() -> Transform:
    """The transform that changes nothing: trainable = {"params": params}, state = ()."""

    def init(params, key=None, batches=None):
        del key, batches
        return {PARAMS: params}, ()

    def apply(trainable, state):
        del state
        return trainable[PARAMS]

    def update(trainable, state, grads, step):
        del grads, step
        return trainable, state

    return Transform(init, apply, update, name="identity")


def stage_names(transforms: Sequence[Transform]) -> list[str]:
    """Each stage's name: its transform's name, numbered (_0, _1, ...) where several share one."""
    counts: dict[str, int] = {}
    for t in transforms:
        counts[t.name] = counts.get(t.name, 0) + 1
    seen: dict[str, int] = {}
    names = []
    for t in transforms:
        if counts[t.name] == 1:
            names.append(t.name)
        else:
            names.append(f"{t.name}_{seen.get(t.name, 0)}")
            seen[t.name] = seen.get(t.name, 0) + 1
    return names


def _stage_keys(key, n: int) -> list:
    # The same keys as the earlier nested chain(a, chain(b, c)) handed out, so a
    # seeded run draws what it drew before: split in two, the first for the first stage.
    if key is None:
        return [None] * n
    keys = []
    for _ in range(n - 1):
        first, key = jax.random.split(key)
        keys.append(first)
    return keys + [key]


def chain(*transforms: Transform) -> Transform:
    """Composes transforms so that chain(a, b) means "a, then b"; stages are named by `stage_names`.

    Same as `named_chain` with each transform's name (see there for the algebra).
    """
    return named_chain(*zip(stage_names(transforms), transforms))


def named_chain(*stages: tuple[str, Transform]) -> Transform:
    """Composes (name, transform) stages; the model sees the last stage applied to what the others produced.

    The chain's state is {name: that stage's state}, and its trainable is
    {"params": the stored parameters, name: the arrays that stage added}
    (a stage that adds nothing has no entry), as optax's `named_chain` keeps
    each state under its name. The algebra, for stages s_1 ... s_n over params P:

        init:    (T_n, S_n) = s_n.init(P); (T_i, S_i) = s_i.init(T_{i+1}["params"]) for i = n-1 ... 1
                 # each stage reparameterizes what the later ones stored; the stored
                 # parameters are T_1["params"], and a data-aware s_i's loss runs
                 # through s_{i+1} ... s_n
        apply:   x_0 = stored; x_i = s_i.apply({"params": x_{i-1}, **added_i}, S_i); the model sees x_n
        update:  s_1.update on the stored trainable; then for i = 2 ... n, s_i.update sees
                 x_{i-1} (the earlier stages applied to the stored parameters with their new
                 states) and gives S_i and its added arrays, and s_i.project then acts on the
                 stored parameters themselves, so every stage's projection (BinaryConnect's
                 clip, re-zeroing pruned weights) holds in the stored trainable whatever its
                 place in the chain; projections run in stage order
        keep:    the product, by parameter path, of every stage's keep on the stored parameters
        encode:  s_1.encode, ..., s_n.encode on the effective params (stage order)
        export:  s_1.export, ..., s_n.export (stage order), after every encode, each
                 passing on the `Coded` leaves the encodes made, so a state shaped like a
                 parameter (a quantizer's per-channel scales) follows that parameter
                 through a structural export (dropped filters drop their scales)

    So prune-then-quantize, chain(prune, quantize), makes the model see
    Q(W * m), and quantize-then-prune, chain(quantize, prune), sees Q(W) * m,
    with masks scored on W at init (the later stage's init sees the raw
    params) and on Q(W) when prune re-scores in `update`. A mask fixed at
    init and an elementwise Q with Q(0) = 0 give the same params in either
    order; the orders differ once the mask is re-scored. Each stage's update
    sees the gradient with respect to the stored parameters.

    A stage that changes a parameter's structure (W stored as factors
    {u, v}) hands the later stages W = u @ v by its `apply`, so a later stage
    selecting W by path acts on the product in the forward pass. Its
    projection and its keep act by path on the stored parameters, where W is
    no longer a leaf: `init` checks every later stage's `project` and `keep`
    on the stored parameters and refuses the chain, naming both stages,
    when one cannot reach a parameter it needs. Select the factors
    themselves (their paths are W's path plus the factor's name) with a
    stage placed *before* the structural one to act on them.
    """
    names = [name for name, _ in stages]
    transforms = [t for _, t in stages]
    for name in names:
        if not isinstance(name, str) or not name or "/" in name or name == PARAMS:
            raise ValueError(f"chain stage name {name!r}: use a non-empty name without '/', not {PARAMS!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"chain stage names {names} are not unique; name the stages (config: a stage's 'name')")
    n = len(transforms)

    def views(trainable):
        stored, _ = split_trainable(trainable)
        return stored, [trainable.get(name, {}) for name in names]

    def forward(stored, added, state, upto):
        x = stored
        for i in range(upto):
            x = transforms[i].apply({PARAMS: x, **added[i]}, state[names[i]])
        return x

    def init(params, key=None, batches=None):
        keys = _stage_keys(key, n)
        x = params
        states, added = [None] * n, [None] * n
        for i in reversed(range(n)):
            stage_batches = None
            if batches is not None:
                later = [(j, added[j], states[j]) for j in range(i + 1, n)]

                def through(p, later=later):
                    for j, extra, st in later:
                        p = transforms[j].apply({PARAMS: p, **extra}, st)
                    return p

                stage_batches = batches.through(through)
            trainable_i, states[i] = transforms[i].init(x, keys[i], stage_batches)
            x, added[i] = split_trainable(trainable_i)
        _check_reach(x, added, states)
        effective = forward(x, added, dict(zip(names, states)), n)
        for i in range(n):
            try:
                transforms[i].check(effective, states[i])
            except ValueError as e:
                raise ValueError(f"chain: stage {names[i]!r} does not hold on the effective parameters after "
                                 f"stage(s) {names[i + 1:]} ({e}); put {names[i]!r} after the stage that "
                                 f"restructures its parameters") from e
        trainable = {PARAMS: x, **{names[i]: added[i] for i in range(n) if added[i]}}
        return trainable, {names[i]: states[i] for i in range(n)}

    def _check_reach(stored, added, states):
        for i in range(1, n):
            view = {PARAMS: stored, **added[i]}
            for what in ("project", "keep"):
                try:
                    getattr(transforms[i], what)(view, states[i])
                except (KeyError, ValueError, TypeError) as e:
                    raise ValueError(
                        f"chain: stage {names[i]!r} cannot {what} the stored parameters after stage(s) "
                        f"{names[:i]} reparameterized them ({e}); put {names[i]!r} before the stage that "
                        f"restructures its parameters, or select other parameters") from e

    def apply(trainable, state):
        stored, added = views(trainable)
        return forward(stored, added, state, n)

    def update(trainable, state, grads, step):
        stored, added = views(trainable)
        grad_stored, grad_added = views(grads)
        state = dict(state)
        for i, (name, t) in enumerate(zip(names, transforms)):
            stage_grads = {PARAMS: grad_stored, **grad_added[i]}
            if i == 0:
                new, state[name] = t.update({PARAMS: stored, **added[i]}, state[name], stage_grads, step)
            else:
                seen = forward(stored, added, state, i)
                new, state[name] = t.update({PARAMS: seen, **added[i]}, state[name], stage_grads, step)
                new = t.project({PARAMS: stored, **split_trainable(new)[1]}, state[name])
            stored, added[i] = split_trainable(new)
        return {PARAMS: stored, **{names[i]: added[i] for i in range(n) if added[i]}}, state

    def project(trainable, state):
        stored, added = views(trainable)
        for i, t in enumerate(transforms):
            stored, added[i] = split_trainable(t.project({PARAMS: stored, **added[i]}, state[names[i]]))
        return {PARAMS: stored, **{names[i]: added[i] for i in range(n) if added[i]}}

    def keep(trainable, state):
        stored, added = views(trainable)
        out = keep_everything({PARAMS: stored}, None)[PARAMS]
        kept_added = {}
        for i, t in enumerate(transforms):
            stage_keep, stage_added = split_trainable(t.keep({PARAMS: stored, **added[i]}, state[names[i]]))
            out = jax.tree_util.tree_map(lambda a, b: a * b, out, stage_keep)
            if added[i]:
                kept_added[names[i]] = stage_added
        return {PARAMS: out, **kept_added}

    def encode(params, state):
        for name, t in zip(names, transforms):
            params = t.encode(params, state[name])
        return params

    def export(params, state, model_config):
        for i, (name, t) in enumerate(zip(names, transforms)):
            try:
                params, model_config = t.export(params, state[name], model_config)
            except (KeyError, ValueError) as e:
                if i == 0:
                    raise
                raise ValueError(f"chain: stage {name!r} cannot export after the export of stage(s) {names[:i]} "
                                 f"changed the model ({e}); try the stages in the other order") from e
        return params, model_config

    # Its stages' checks run inside its own init, with their names in the message.
    return Transform(init, apply, update, project, keep, encode, export, name="chain")
