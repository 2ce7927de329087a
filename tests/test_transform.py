"""Tests for compression.transform: identity, the named chain algebra, projections, gradients, NNX.

The transforms under test are built here, not taken from compression/: a
magnitude mask (trainable = params, state = 0/1 masks scored |w| >= threshold
at init, apply = w * m, update re-zeroes masked weights, or re-scores the
masks when `rescore`), a straight-through rounding to a grid of 0.5, and a
probe that records what its `update` received. The arrays are chosen so every
expected value is exact in float32 (no round-half ties; w and round(w) within
a factor of 2, so w + (round(w) - w) is exactly round(w)).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from compression.selection import leaves_by_path, map_at_paths, nest_paths, select, selected_paths
from compression.transform import Transform, chain, identity, named_chain, stage_names

STEP = 0.5
THRESHOLD = 0.4
W = np.array([0.3, -0.8, 0.1, 1.2], np.float32)
M_W = np.array([0.0, 1.0, 0.0, 1.0], np.float32)        # |W| >= 0.4
ROUND_W = np.array([0.5, -1.0, 0.0, 1.0], np.float32)   # round(W / 0.5) * 0.5
M_ROUND_W = np.array([1.0, 1.0, 0.0, 1.0], np.float32)  # |round(W)| >= 0.4


def magnitude_mask(selector, threshold, rescore=False) -> Transform:
    """Masks selected leaves where |w| < threshold; other leaves get a mask of ones."""

    def score(tree):
        chosen = select(tree, selector, what="magnitude_mask.select")
        return jax.tree_util.tree_map(
            lambda c, w: (jnp.abs(w) >= threshold).astype(w.dtype) if c else jnp.ones_like(w),
            chosen, tree)

    def init(params, key=None, batches=None):
        del key, batches
        return {"params": params}, score(params)

    def apply(trainable, masks):
        return jax.tree_util.tree_map(jnp.multiply, trainable["params"], masks)

    def project(trainable, masks):
        return {"params": apply(trainable, masks)}

    def update(trainable, masks, grads, step):
        del grads, step
        if rescore:
            masks = score(trainable["params"])
        return project(trainable, masks), masks  # project: re-zero what the mask removes

    return Transform(init, apply, update, project, name="mask")


def round_to_grid(selector, step=STEP) -> Transform:
    """Straight-through rounding of selected leaves: w + stop_gradient(round(w/step)*step - w)."""

    def init(params, key=None, batches=None):
        del key, batches
        return {"params": params}, ()

    def apply(trainable, state):
        del state
        paths = selected_paths(trainable["params"], selector, what="round_to_grid.select")
        return map_at_paths(lambda p, w: w + jax.lax.stop_gradient(jnp.round(w / step) * step - w),
                            trainable["params"], paths)

    def update(trainable, state, grads, step_):
        del grads, step_
        return trainable, state

    return Transform(init, apply, update, name="round")


def clip_to_one(selector) -> Transform:
    """BinaryConnect's projection alone: selected leaves clipped to [-1, 1] after each step."""

    def init(params, key=None, batches=None):
        del key, batches
        return {"params": params}, ()

    def project(trainable, state):
        paths = selected_paths(trainable["params"], selector, what="clip.select")
        return {"params": map_at_paths(lambda p, w: jnp.clip(w, -1.0, 1.0), trainable["params"], paths)}

    def update(trainable, state, grads, step):
        del grads, step
        return project(trainable, state), state

    return Transform(init, lambda t, s: t["params"], update, project, name="clip")


def probe() -> Transform:
    """Passes params through; its state records the trainable, grads and step its update saw."""

    def init(params, key=None, batches=None):
        del key, batches
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return {"params": params}, {"seen": params, "grads": zeros, "step": jnp.asarray(-1)}

    def apply(trainable, state):
        del state
        return trainable["params"]

    def update(trainable, state, grads, step):
        del state
        return trainable, {"seen": trainable["params"], "grads": grads["params"], "step": jnp.asarray(step)}

    return Transform(init, apply, update, name="probe")


def learned_scale() -> Transform:
    """Multiplies every leaf by a learned scalar that it adds to the trainable (as LSQ adds its step)."""

    def init(params, key=None, batches=None):
        del key, batches
        return {"params": params, "scale": jnp.float32(2.0)}, ()

    def apply(trainable, state):
        del state
        return jax.tree_util.tree_map(lambda w: w * trainable["scale"], trainable["params"])

    def project(trainable, state):
        del state
        return dict(trainable, scale=jnp.maximum(trainable["scale"], 0.5))

    def update(trainable, state, grads, step):
        del grads, step
        return project(trainable, state), state

    return Transform(init, apply, update, project, name="scale")


def factorize(path) -> Transform:
    """Stores the leaf W at `path` as factors {u: W, v: identity} (a toy W -> (u, v); apply gives u @ v)."""

    def init(params, key=None, batches=None):
        del key, batches
        w = leaves_by_path(params)[path]
        flat = dict(leaves_by_path(params))
        flat[path] = {"u": jnp.asarray(w), "v": jnp.eye(w.shape[1], dtype=w.dtype)}
        return {"params": nest_paths(flat)}, ()

    def apply(trainable, state):
        del state
        flat = dict(leaves_by_path(trainable["params"]))
        u, v = flat.pop(path + "/u"), flat.pop(path + "/v")
        flat[path] = u @ v
        return nest_paths(flat)

    def update(trainable, state, grads, step):
        del grads, step
        return trainable, state

    return Transform(init, apply, update, name="factorize")


def _effective(t, params):
    trainable, state = t.init(params, jax.random.key(0))
    return t.apply(trainable, state)


def _assert_tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


ZEROS = {"params": {"w": np.zeros_like(W)}}


# --- identity and trivial chains -------------------------------------------------------------

def test_identity_round_trips_params_through_init_apply_update():
    params = {"Dense_0": {"kernel": W.reshape(2, 2), "bias": np.ones(2, np.float32)}}
    t = identity()
    trainable, state = t.init(params, jax.random.key(0))
    assert state == ()
    _assert_tree_equal(t.apply(trainable, state), params)
    trainable2, state2 = t.update(trainable, state, {"params": params}, 3)
    _assert_tree_equal(trainable2, {"params": params})
    assert state2 == ()


def test_default_capabilities_are_identities():
    t = identity()
    trainable = {"params": {"w": W}}
    _assert_tree_equal(t.project(trainable, ()), trainable)
    _assert_tree_equal(t.encode({"w": W}, ()), {"w": W})
    assert t.export({"w": W}, (), {"a": 1}) == ({"w": W}, {"a": 1})
    keep = t.keep(trainable, ())
    assert float(keep["params"]["w"]) == 1.0 and np.ndim(keep["params"]["w"]) == 0


def test_chain_of_nothing_is_identity():
    params = {"w": W}
    t = chain()
    trainable, state = t.init(params)
    assert state == {}
    _assert_tree_equal(t.apply(trainable, state), params)


def test_chain_state_is_named_by_stage_and_repeated_names_are_numbered():
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"), magnitude_mask("w", 0.0))
    assert stage_names([magnitude_mask("w", 0.1), round_to_grid("w"), magnitude_mask("w", 0.0)]) == \
        ["mask_0", "round", "mask_1"]
    _, state = t.init({"w": W})
    assert sorted(state) == ["mask_0", "mask_1", "round"]
    named = named_chain(("first", magnitude_mask("w", THRESHOLD)), ("second", round_to_grid("w")))
    _, state = named.init({"w": W})
    assert sorted(state) == ["first", "second"]


def test_chain_refuses_bad_or_repeated_stage_names():
    with pytest.raises(ValueError, match="not unique"):
        named_chain(("a", identity()), ("a", identity()))
    with pytest.raises(ValueError, match="'params'"):
        named_chain(("params", identity()))


def test_added_trainables_live_under_the_stage_name():
    t = chain(magnitude_mask("w", THRESHOLD), learned_scale())
    trainable, state = t.init({"w": W})
    assert sorted(trainable) == ["params", "scale"]
    assert float(trainable["scale"]["scale"]) == 2.0
    np.testing.assert_array_equal(t.apply(trainable, state)["w"], W * M_W * 2.0)
    # The later stage's projection reaches its own added arrays too.
    trainable["scale"]["scale"] = jnp.float32(0.1)
    trainable, _ = t.update(trainable, state, {"params": {"w": W}, "scale": {"scale": 0.0}}, 0)
    assert float(trainable["scale"]["scale"]) == 0.5


# --- the order algebra of chain(a, b) --------------------------------------------------------

def test_chain_mask_then_round_gives_round_of_masked_weights():
    effective = _effective(chain(magnitude_mask("w", THRESHOLD), round_to_grid("w")), {"w": W})
    # round(W * m), m scored on W.
    np.testing.assert_array_equal(effective["w"], np.array([0.0, -1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(effective["w"], np.round(W * M_W / STEP) * STEP)


def test_chain_init_runs_later_stage_first_and_masks_at_init_are_scored_on_raw_params():
    # init: (Tb, Sb) = b.init(P); (Ta, Sa) = a.init(Tb). In chain(round, mask), b = mask
    # sees the raw params P, so its initial mask is scored on W, not on round(W): W[0] = 0.3
    # is pruned although round(W[0]) = 0.5 would survive the threshold 0.4.
    t = chain(round_to_grid("w"), magnitude_mask("w", THRESHOLD))
    trainable, state = t.init({"w": W})
    assert state["round"] == ()
    np.testing.assert_array_equal(state["mask"]["w"], M_W)
    effective = t.apply(trainable, state)
    np.testing.assert_array_equal(effective["w"], ROUND_W * M_W)  # round(W) * m


def test_prune_and_round_orders_differ_once_the_mask_is_scored_on_what_the_stage_sees():
    # A re-scoring mask scores on what its update receives: as the first stage, the
    # trainable W; as the later stage, a.apply's output round(W). So after one update,
    # chain(mask, round) sees round(W * m(W)) and chain(round, mask) sees round(W) * m(round(W)).
    params = {"w": W}
    prune_then_round = chain(magnitude_mask("w", THRESHOLD, rescore=True), round_to_grid("w"))
    round_then_prune = chain(round_to_grid("w"), magnitude_mask("w", THRESHOLD, rescore=True))

    tr, st = prune_then_round.init(params)
    tr, st = prune_then_round.update(tr, st, ZEROS, 1)
    got_prune_then_round = prune_then_round.apply(tr, st)["w"]

    tr, st = round_then_prune.init(params)
    tr, st = round_then_prune.update(tr, st, ZEROS, 1)
    got_round_then_prune = round_then_prune.apply(tr, st)["w"]

    np.testing.assert_array_equal(st["mask"]["w"], M_ROUND_W)  # mask scored on round(W)
    np.testing.assert_array_equal(got_prune_then_round, np.array([0.0, -1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(got_round_then_prune, np.array([0.5, -1.0, 0.0, 1.0], np.float32))
    assert not np.array_equal(got_prune_then_round, got_round_then_prune)


def test_chain_update_first_stage_update_projects_the_stored_trainable():
    # chain(mask, round): the mask is the first stage, so its update re-zeroes the stored
    # trainable after an optimizer step revived pruned weights.
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"))
    trainable, state = t.init({"w": W})
    revived = {"params": {"w": trainable["params"]["w"] + 0.25}}  # an optimizer step moved every weight
    trainable, state = t.update(revived, state, ZEROS, 1)
    np.testing.assert_array_equal(trainable["params"]["w"], (W + 0.25) * M_W)


def test_chain_update_later_stage_projection_reaches_the_stored_trainable():
    # chain(round, mask): the mask is the later stage; its projection acts on the stored
    # weights themselves (not on round's output), so revived pruned weights are re-zeroed.
    t = chain(round_to_grid("w"), magnitude_mask("w", THRESHOLD))
    trainable, state = t.init({"w": W})
    revived = {"params": {"w": trainable["params"]["w"] + 0.25}}
    trainable, state = t.update(revived, state, ZEROS, 1)
    np.testing.assert_array_equal(trainable["params"]["w"], (W + 0.25) * M_W)
    effective = t.apply(trainable, state)["w"]
    np.testing.assert_array_equal(effective, np.round((W + 0.25) / STEP) * STEP * M_W)


def test_clip_projection_holds_in_the_stored_trainable_in_either_order():
    # The regression of issue 14: chain(prune, binary) kept [3, -2] un-clipped after update.
    params = {"w": np.array([3.0, -2.0, 0.1, 0.5], np.float32)}
    for t in (chain(magnitude_mask("w", 0.0), clip_to_one("w")), chain(clip_to_one("w"), magnitude_mask("w", 0.0))):
        trainable, state = t.init(params)
        trainable, state = t.update(trainable, state, ZEROS, 0)
        np.testing.assert_array_equal(trainable["params"]["w"], np.array([1.0, -1.0, 0.1, 0.5], np.float32))


def test_chain_update_later_stage_sees_first_stage_apply_of_the_updated_trainable():
    t = chain(magnitude_mask("w", THRESHOLD, rescore=True), probe())
    trainable, state = t.init({"w": W})
    stepped = {"params": {"w": np.array([0.5, -0.2, 0.1, 1.2], np.float32)}}
    grads = {"params": {"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32)}}
    trainable, state = t.update(stepped, state, grads, 7)
    np.testing.assert_array_equal(state["mask"]["w"], [1.0, 0.0, 0.0, 1.0])
    projected = np.array([0.5, 0.0, 0.0, 1.2], np.float32)
    np.testing.assert_array_equal(trainable["params"]["w"], projected)
    np.testing.assert_array_equal(state["probe"]["seen"]["w"], projected)
    # Each stage's update sees the gradient with respect to the stored parameters.
    np.testing.assert_array_equal(state["probe"]["grads"]["w"], grads["params"]["w"])
    assert int(state["probe"]["step"]) == 7


def test_chain_update_later_stage_sees_rounded_output_of_first_stage():
    t = chain(round_to_grid("w"), probe())
    trainable, state = t.init({"w": W})
    trainable, state = t.update(trainable, state, ZEROS, 0)
    np.testing.assert_array_equal(state["probe"]["seen"]["w"], ROUND_W)
    np.testing.assert_array_equal(trainable["params"]["w"], W)


def test_chain_of_three_applies_in_order_and_nested_chains_agree():
    params = {"w": W}
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"), probe())
    trainable, state = t.init(params)
    np.testing.assert_array_equal(state["mask"]["w"], M_W)
    np.testing.assert_array_equal(state["probe"]["seen"]["w"], W)  # the last stage's init saw the raw params
    np.testing.assert_array_equal(t.apply(trainable, state)["w"], [0.0, -1.0, 0.0, 1.0])

    nested = chain(magnitude_mask("w", THRESHOLD), chain(round_to_grid("w"), probe()))
    n_trainable, n_state = nested.init(params)
    _assert_tree_equal(nested.apply(n_trainable, n_state), t.apply(trainable, state))

    revived = {"params": {"w": W + 0.25}}
    trainable, state = t.update(revived, state, ZEROS, 2)
    expected_seen = np.round((W + 0.25) * M_W / STEP) * STEP
    np.testing.assert_array_equal(state["probe"]["seen"]["w"], expected_seen)


def test_keep_of_a_chain_multiplies_every_stage_keep_by_path():
    def masked_keep(threshold):
        t = magnitude_mask("w", threshold)
        return t._replace(keep=lambda tr, masks: {"params": masks})

    t = chain(masked_keep(THRESHOLD), round_to_grid("w"), masked_keep(1.0))
    trainable, state = t.init({"w": W})
    np.testing.assert_array_equal(t.keep(trainable, state)["params"]["w"], M_W * (np.abs(W) >= 1.0))


# --- a stage that changes a parameter's structure ----------------------------------------------

def test_structural_stage_hands_later_stages_the_product_and_a_later_projection_is_refused():
    params = {"k": W.reshape(2, 2)}
    t = chain(factorize("k"), round_to_grid("k"))
    trainable, state = t.init(params)
    assert sorted(leaves_by_path(trainable["params"])) == ["k/u", "k/v"]
    np.testing.assert_array_equal(t.apply(trainable, state)["k"], ROUND_W.reshape(2, 2))
    # A later stage whose projection must reach W cannot: W is stored as factors.
    with pytest.raises(ValueError, match=r"stage 'clip' cannot project .*'factorize'"):
        chain(factorize("k"), clip_to_one("k")).init(params)
    # Placed before the structural stage, it selects the factors themselves.
    t = chain(clip_to_one("k/u"), factorize("k"))
    trainable, state = t.init({"k": 3 * W.reshape(2, 2)})
    trainable, state = t.update(trainable, state, {"params": jax.tree_util.tree_map(jnp.zeros_like,
                                                                                     trainable["params"])}, 0)
    np.testing.assert_array_equal(t.apply(trainable, state)["k"], np.clip(3 * W, -1, 1).reshape(2, 2))


# --- gradients through a chain ----------------------------------------------------------------

def test_grad_through_chain_is_straight_through_for_round_and_zero_where_masked():
    params = {"Dense_0": {"kernel": W.reshape(2, 2), "bias": np.array([0.3, 0.7], np.float32)}}
    cotangent = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    bias_cotangent = np.array([5.0, 6.0], np.float32)
    mask_2d = M_W.reshape(2, 2)
    for t in (chain(magnitude_mask(".*kernel", THRESHOLD), round_to_grid(".*")),
              chain(round_to_grid(".*"), magnitude_mask(".*kernel", THRESHOLD))):
        trainable, state = t.init(params)

        def loss(tr, state=state, t=t):
            p = t.apply(tr, state)["Dense_0"]
            return jnp.sum(cotangent * p["kernel"]) + jnp.sum(bias_cotangent * p["bias"])

        grads = jax.jit(jax.grad(loss))(trainable)["params"]
        # Round passes the gradient unchanged (STE); the mask zeroes it where m = 0.
        np.testing.assert_array_equal(grads["Dense_0"]["kernel"], cotangent * mask_2d)
        np.testing.assert_array_equal(grads["Dense_0"]["bias"], bias_cotangent)


def test_chain_apply_and_update_run_under_jit():
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"))
    trainable, state = t.init({"w": W})
    np.testing.assert_array_equal(jax.jit(t.apply)(trainable, state)["w"], [0.0, -1.0, 0.0, 1.0])
    trainable, _ = jax.jit(t.update)({"params": {"w": W + 0.25}}, state, ZEROS, 1)
    np.testing.assert_array_equal(trainable["params"]["w"], (W + 0.25) * M_W)


# --- map_at_paths ------------------------------------------------------------------------------

def test_map_at_paths_changes_only_the_named_leaves_and_refuses_a_missing_one():
    tree = {"a": {"kernel": np.ones(2, np.float32), "bias": np.ones(2, np.float32)},
            "b": {"kernel": np.full(2, 3.0, np.float32)}}
    out = map_at_paths(lambda p, w: w * 10, tree, ["a/kernel", "b/kernel"])
    np.testing.assert_array_equal(out["a"]["kernel"], [10.0, 10.0])
    np.testing.assert_array_equal(out["b"]["kernel"], [30.0, 30.0])
    assert out["a"]["bias"] is tree["a"]["bias"]  # untouched leaves pass through as is
    with pytest.raises(ValueError, match="probe: no parameter leaf at c/kernel"):
        map_at_paths(lambda p, w: w, tree, ["c/kernel"], what="probe")


# --- the same transform on a Flax NNX model and on Linen params --------------------------------

KERNEL_0 = np.array([[0.3, -0.8, 0.1], [1.2, -0.05, 0.6]], np.float32)  # (in 2, out 3)
BIAS_0 = np.array([0.1, -0.2, 0.3], np.float32)
KERNEL_1 = np.array([[0.9], [-0.2], [0.45]], np.float32)                # (in 3, out 1)
BIAS_1 = np.array([0.05], np.float32)


class NnxMLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.hidden = nnx.Linear(2, 3, rngs=rngs)
        self.out = nnx.Linear(3, 1, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1, name="out")(nn.relu(nn.Dense(3, name="hidden")(x)))


def _hand_params():
    return {"hidden": {"kernel": KERNEL_0, "bias": BIAS_0},
            "out": {"kernel": KERNEL_1, "bias": BIAS_1}}


def test_mask_transform_applies_to_nnx_state_and_linen_params_alike():
    x = np.array([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]], np.float32)
    t = magnitude_mask(".*kernel", THRESHOLD)
    masked_0 = KERNEL_0 * (np.abs(KERNEL_0) >= THRESHOLD)
    masked_1 = KERNEL_1 * (np.abs(KERNEL_1) >= THRESHOLD)

    # NNX: split into (graphdef, State), compress the State's pure dict, put it back, merge.
    graphdef, nnx_state = nnx.split(NnxMLP(nnx.Rngs(0)))
    pure = nnx.to_pure_dict(nnx_state)
    assert jax.tree_util.tree_structure(pure) == jax.tree_util.tree_structure(_hand_params())
    nnx.replace_by_pure_dict(nnx_state, _hand_params())
    effective_nnx = _effective(t, nnx.to_pure_dict(nnx_state))
    nnx.replace_by_pure_dict(nnx_state, effective_nnx)
    model = nnx.merge(graphdef, nnx_state)
    y_nnx = model(x)

    h = np.maximum(x @ masked_0 + BIAS_0, 0.0)
    expected = h @ masked_1 + BIAS_1
    np.testing.assert_allclose(np.asarray(y_nnx), expected, rtol=1e-6, atol=1e-6)

    # Linen: the same transform, on the params dict with the same paths.
    linen = LinenMLP()
    variables = linen.init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(variables["params"]) == jax.tree_util.tree_structure(pure)
    effective_linen = _effective(t, _hand_params())
    np.testing.assert_array_equal(effective_linen["hidden"]["kernel"], masked_0)
    for layer in ("hidden", "out"):
        np.testing.assert_array_equal(effective_linen[layer]["kernel"],
                                      effective_nnx[layer]["kernel"])
    y_linen = linen.apply({"params": effective_linen}, x)
    np.testing.assert_array_equal(np.asarray(y_linen), np.asarray(y_nnx))
