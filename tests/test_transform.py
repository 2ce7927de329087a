"""Tests for compression.transform: identity, the chain algebra, gradients, map_selected, NNX.

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
from flax import nnx

from compression.selection import select
from compression.transform import Transform, chain, identity, map_selected

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
        return params, score(params)

    def apply(trainable, masks):
        return jax.tree_util.tree_map(jnp.multiply, trainable, masks)

    def update(trainable, masks, grads, step):
        del grads, step
        if rescore:
            masks = score(trainable)
        return apply(trainable, masks), masks  # project: re-zero what the mask removes

    return Transform(init, apply, update)


def round_to_grid(selector, step=STEP) -> Transform:
    """Straight-through rounding of selected leaves: w + stop_gradient(round(w/step)*step - w)."""

    def init(params, key=None, batches=None):
        del key, batches
        return params, ()

    def apply(trainable, state):
        del state
        chosen = select(trainable, selector, what="round_to_grid.select")
        return map_selected(
            lambda w: w + jax.lax.stop_gradient(jnp.round(w / step) * step - w), chosen, trainable)

    def update(trainable, state, grads, step_):
        del grads, step_
        return trainable, state

    return Transform(init, apply, update)


def probe() -> Transform:
    """Passes params through; its state records the trainable, grads and step its update saw."""

    def init(params, key=None, batches=None):
        del key, batches
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return params, {"seen": params, "grads": zeros, "step": jnp.asarray(-1)}

    def apply(trainable, state):
        del state
        return trainable

    def update(trainable, state, grads, step):
        del state
        return trainable, {"seen": trainable, "grads": grads, "step": jnp.asarray(step)}

    return Transform(init, apply, update)


def _effective(t, params):
    trainable, state = t.init(params, jax.random.key(0))
    return t.apply(trainable, state)


def _assert_tree_equal(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# --- identity and trivial chains -------------------------------------------------------------

def test_identity_round_trips_params_through_init_apply_update():
    params = {"Dense_0": {"kernel": W.reshape(2, 2), "bias": np.ones(2, np.float32)}}
    t = identity()
    trainable, state = t.init(params, jax.random.key(0))
    assert state == ()
    _assert_tree_equal(t.apply(trainable, state), params)
    trainable2, state2 = t.update(trainable, state, params, 3)
    _assert_tree_equal(trainable2, params)
    assert state2 == ()


def test_chain_of_nothing_is_identity():
    params = {"w": W}
    t = chain()
    trainable, state = t.init(params)
    assert state == ()
    _assert_tree_equal(t.apply(trainable, state), params)


def test_chain_of_one_transform_is_that_transform():
    t = round_to_grid("w")
    assert chain(t) is t


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
    trainable, (round_state, mask_state) = t.init({"w": W})
    assert round_state == ()
    np.testing.assert_array_equal(mask_state["w"], M_W)
    np.testing.assert_array_equal(trainable["w"], W)
    effective = t.apply(trainable, (round_state, mask_state))
    np.testing.assert_array_equal(effective["w"], ROUND_W * M_W)  # round(W) * m


def test_prune_and_round_orders_differ_once_the_mask_is_scored_on_what_the_stage_sees():
    # A re-scoring mask scores on what its update receives: as the first stage, the
    # trainable W; as the later stage, a.apply's output round(W). So after one update,
    # chain(mask, round) sees round(W * m(W)) and chain(round, mask) sees round(W) * m(round(W)).
    params = {"w": W}
    grads = {"w": np.zeros_like(W)}
    prune_then_round = chain(magnitude_mask("w", THRESHOLD, rescore=True), round_to_grid("w"))
    round_then_prune = chain(round_to_grid("w"), magnitude_mask("w", THRESHOLD, rescore=True))

    tr, st = prune_then_round.init(params)
    tr, st = prune_then_round.update(tr, st, grads, 1)
    got_prune_then_round = prune_then_round.apply(tr, st)["w"]

    tr, st = round_then_prune.init(params)
    tr, st = round_then_prune.update(tr, st, grads, 1)
    got_round_then_prune = round_then_prune.apply(tr, st)["w"]

    np.testing.assert_array_equal(st[1]["w"], M_ROUND_W)  # mask scored on round(W)
    np.testing.assert_array_equal(got_prune_then_round, np.array([0.0, -1.0, 0.0, 1.0], np.float32))
    np.testing.assert_array_equal(got_round_then_prune, np.array([0.5, -1.0, 0.0, 1.0], np.float32))
    assert not np.array_equal(got_prune_then_round, got_round_then_prune)


def test_chain_update_first_stage_update_projects_the_stored_trainable():
    # chain(mask, round): the mask is the first stage, so its update re-zeroes the stored
    # trainable after an optimizer step revived pruned weights.
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"))
    trainable, state = t.init({"w": W})
    revived = {"w": trainable["w"] + 0.25}  # an optimizer step moved every weight
    trainable, state = t.update(revived, state, {"w": np.zeros_like(W)}, 1)
    np.testing.assert_array_equal(trainable["w"], (W + 0.25) * M_W)


def test_chain_update_later_stage_changes_only_its_state_and_its_invariant_holds_in_apply():
    # chain(round, mask): what the mask's update returns as trainable is discarded (it is a
    # function of round's output, not a stored array), so the stored weights stay revived,
    # yet the model still sees zeros where the mask is 0 because apply multiplies by it.
    t = chain(round_to_grid("w"), magnitude_mask("w", THRESHOLD))
    trainable, state = t.init({"w": W})
    revived = {"w": trainable["w"] + 0.25}
    trainable, state = t.update(revived, state, {"w": np.zeros_like(W)}, 1)
    np.testing.assert_array_equal(trainable["w"], W + 0.25)
    effective = t.apply(trainable, state)["w"]
    np.testing.assert_array_equal(effective, np.round((W + 0.25) / STEP) * STEP * M_W)
    assert np.all(effective[M_W == 0] == 0)


def test_chain_update_later_stage_sees_first_stage_apply_of_the_updated_trainable():
    # update: (Ta, Sa) = a.update(...); (_, Sb) = b.update(a.apply(Ta, Sa), Sb, g, step).
    # The re-scoring mask changes both its trainable and its mask in update, so the probe
    # must see a.apply of the *updated* pair, not of the old one.
    t = chain(magnitude_mask("w", THRESHOLD, rescore=True), probe())
    trainable, state = t.init({"w": W})
    stepped = {"w": np.array([0.5, -0.2, 0.1, 1.2], np.float32)}
    grads = {"w": np.array([1.0, 2.0, 3.0, 4.0], np.float32)}
    trainable, (mask_state, probe_state) = t.update(stepped, state, grads, 7)
    np.testing.assert_array_equal(mask_state["w"], [1.0, 0.0, 0.0, 1.0])
    projected = np.array([0.5, 0.0, 0.0, 1.2], np.float32)
    np.testing.assert_array_equal(trainable["w"], projected)
    np.testing.assert_array_equal(probe_state["seen"]["w"], projected)
    # Each stage's update sees the gradient with respect to the chain's trainable.
    np.testing.assert_array_equal(probe_state["grads"]["w"], grads["w"])
    assert int(probe_state["step"]) == 7


def test_chain_update_later_stage_sees_rounded_output_of_first_stage():
    t = chain(round_to_grid("w"), probe())
    trainable, state = t.init({"w": W})
    trainable, (_, probe_state) = t.update(trainable, state, {"w": np.zeros_like(W)}, 0)
    np.testing.assert_array_equal(probe_state["seen"]["w"], ROUND_W)
    np.testing.assert_array_equal(trainable["w"], W)


def test_chain_of_three_nests_as_first_then_chain_of_the_rest():
    # chain(a, b, c) = chain(a, chain(b, c)): state is (Sa, (Sb, Sc)); init runs c, b, a;
    # apply is c(b(a(.))); update hands c what b(a(.)) produced.
    params = {"w": W}
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"), probe())
    trainable, state = t.init(params)
    mask_state, (round_state, probe_state) = state
    np.testing.assert_array_equal(mask_state["w"], M_W)
    assert round_state == ()
    np.testing.assert_array_equal(probe_state["seen"]["w"], W)  # c.init saw the raw params
    np.testing.assert_array_equal(t.apply(trainable, state)["w"], [0.0, -1.0, 0.0, 1.0])

    nested = chain(magnitude_mask("w", THRESHOLD), chain(round_to_grid("w"), probe()))
    n_trainable, n_state = nested.init(params)
    _assert_tree_equal(n_state, state)
    _assert_tree_equal(nested.apply(n_trainable, n_state), t.apply(trainable, state))

    revived = {"w": W + 0.25}
    trainable, (_, (_, probe_state)) = t.update(revived, state, {"w": np.zeros_like(W)}, 2)
    expected_seen = np.round((W + 0.25) * M_W / STEP) * STEP
    np.testing.assert_array_equal(probe_state["seen"]["w"], expected_seen)


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

        grads = jax.jit(jax.grad(loss))(trainable)
        # Round passes the gradient unchanged (STE); the mask zeroes it where m = 0.
        np.testing.assert_array_equal(grads["Dense_0"]["kernel"], cotangent * mask_2d)
        np.testing.assert_array_equal(grads["Dense_0"]["bias"], bias_cotangent)


def test_chain_apply_and_update_run_under_jit():
    t = chain(magnitude_mask("w", THRESHOLD), round_to_grid("w"))
    trainable, state = t.init({"w": W})
    np.testing.assert_array_equal(jax.jit(t.apply)(trainable, state)["w"], [0.0, -1.0, 0.0, 1.0])
    trainable, _ = jax.jit(t.update)({"w": W + 0.25}, state, {"w": np.zeros_like(W)}, 1)
    np.testing.assert_array_equal(trainable["w"], (W + 0.25) * M_W)


# --- map_selected ------------------------------------------------------------------------------

def test_map_selected_changes_only_selected_leaves():
    tree = {"a": {"kernel": np.ones(2, np.float32), "bias": np.ones(2, np.float32)},
            "b": {"kernel": np.full(2, 3.0, np.float32)}}
    chosen = select(tree, ".*kernel")
    out = map_selected(lambda w: w * 10, chosen, tree)
    np.testing.assert_array_equal(out["a"]["kernel"], [10.0, 10.0])
    np.testing.assert_array_equal(out["b"]["kernel"], [30.0, 30.0])
    assert out["a"]["bias"] is tree["a"]["bias"]  # untouched leaves pass through as is


def test_map_selected_passes_matching_leaves_of_extra_trees():
    tree = {"kernel": np.ones(2, np.float32), "bias": np.ones(2, np.float32)}
    grads = {"kernel": np.array([0.5, 1.0], np.float32), "bias": np.array([9.0, 9.0], np.float32)}
    out = map_selected(lambda w, g: w - g, select(tree, "kernel"), tree, grads)
    np.testing.assert_array_equal(out["kernel"], [0.5, 0.0])
    np.testing.assert_array_equal(out["bias"], [1.0, 1.0])


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
