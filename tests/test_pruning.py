"""The prune transform: exact masks, schedules in the step, masks enforced after Adam, errors, driver."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from compression import export, registry
from compression.pruning import prune
from compression.transform import chain, identity
from experiments import train
from tests.helpers import tiny_config

W = jnp.array([[0.1, -0.5, 0.3, 0.05],
               [-0.2, 0.4, -0.01, 0.6]])


def mask_sparsity(state):
    """The fraction of pruned entries over all masked (selected) tensors of a prune state."""
    masks = [np.asarray(mk) for mk in jax.tree_util.tree_leaves(state["masks"]) if np.ndim(mk) > 0]
    return 1.0 - sum(int(mk.sum()) for mk in masks) / sum(mk.size for mk in masks)


def _params():
    return {"a": {"kernel": W, "bias": jnp.array([1.0, 2.0, 3.0, 4.0])},
            "b": {"kernel": jnp.array([[2.0], [-0.02], [0.7], [0.03]])}}


def test_layer_scope_prunes_the_smallest_magnitudes_of_each_selected_tensor():
    t = prune(".*kernel", 0.5)
    trainable, state = t.init(_params())
    out = t.apply(trainable, state)
    np.testing.assert_array_equal(out["a"]["kernel"], np.float32([[0.0, -0.5, 0.3, 0.0], [0.0, 0.4, 0.0, 0.6]]))
    np.testing.assert_array_equal(out["b"]["kernel"], np.float32([[2.0], [0.0], [0.7], [0.0]]))
    np.testing.assert_array_equal(out["a"]["bias"], [1.0, 2.0, 3.0, 4.0])  # not selected


def test_global_scope_uses_one_threshold_across_tensors():
    t = prune(".*kernel", 0.5, scope="global")  # 12 weights, the 6 smallest go
    out = t.apply(*t.init(_params()))
    np.testing.assert_array_equal(out["a"]["kernel"], np.float32([[0.0, -0.5, 0.3, 0.0], [0.0, 0.4, 0.0, 0.6]]))
    np.testing.assert_array_equal(out["b"]["kernel"], np.float32([[2.0], [0.0], [0.7], [0.0]]))
    t = prune(".*kernel", 0.25, scope="global")  # 3 go: 0.01, 0.02, 0.03; layer a loses 1, b loses 2
    out = t.apply(*t.init(_params()))
    assert int(jnp.sum(out["a"]["kernel"] == 0)) == 1 and int(jnp.sum(out["b"]["kernel"] == 0)) == 2


def test_nm_scope_keeps_n_of_every_m_inputs():
    w = jax.random.normal(jax.random.key(0), (8, 6))
    t = prune("k", 0.5, scope="nm", n=2, m=4)
    out = t.apply(*t.init({"k": w}))["k"]
    groups = (out != 0).reshape(2, 4, 6).sum(axis=1)
    assert bool(jnp.all(groups == 2))
    # The kept ones are the two largest |w| of each group.
    kept = jnp.sort(jnp.abs(w).reshape(2, 4, 6), axis=1)[:, 2:, :]
    np.testing.assert_allclose(jnp.sort(jnp.abs(out).reshape(2, 4, 6), axis=1)[:, 2:, :], kept)


def test_random_criterion_prunes_the_requested_fraction_with_a_fixed_mask():
    w = jnp.ones((40, 10))
    t = prune("k", 0.3, criterion="random")
    trainable, state = t.init({"k": w}, jax.random.key(3))
    first = state["masks"]["k"]
    for step in range(3):
        trainable, state = t.update(trainable, state, {"params": {"k": jnp.ones_like(w)}}, step)
    np.testing.assert_array_equal(state["masks"]["k"], first)
    assert int(jnp.sum(~first)) == 120


def test_polynomial_schedule_drives_the_masks_inside_one_compiled_update():
    t = prune(".*kernel", {"kind": "polynomial", "final_sparsity": 0.75, "begin_step": 0, "end_step": 4})
    w = jax.random.normal(jax.random.key(1), (16, 16))
    trainable, state = t.init({"d": {"kernel": w}})
    update = jax.jit(t.update)
    seen, previous = [], jnp.ones((16, 16), bool)
    for step in range(6):
        trainable, state = update(trainable, state, {"params": {"d": {"kernel": jnp.zeros_like(w)}}}, jnp.int32(step))
        mask = state["masks"]["d"]["kernel"]
        assert not bool(jnp.any(mask & ~previous))  # masks only shrink
        previous = mask
        seen.append(float(mask_sparsity(state)))
    expected = [0.75 + (0 - 0.75) * (1 - t_ / 4) ** 3 for t_ in (1, 2, 3, 4, 4, 4)]
    np.testing.assert_allclose(seen, np.round(np.array(expected) * 256) / 256, atol=1e-6)
    assert update._cache_size() == 1


def test_pruned_weights_stay_exactly_zero_under_adam_momentum():
    rng = jax.random.key(0)
    w = jax.random.normal(rng, (32, 8))
    t = prune("k", {"kind": "one_shot", "sparsity": 0.5, "at_step": 5})
    opt = optax.adamw(0.1, weight_decay=0.1)
    trainable, state = t.init({"k": w})
    opt_state = opt.init(trainable)

    def loss(tr, st):
        return jnp.sum(t.apply(tr, st)["k"] * jnp.arange(8.0))  # a constant pull on every weight

    for step in range(20):
        grads = jax.grad(loss)(trainable, state)
        updates, opt_state = opt.update(grads, opt_state, trainable)
        trainable, state = t.update(optax.apply_updates(trainable, updates), state, grads, step)
        if step >= 4:
            pruned = ~state["masks"]["k"]
            assert int(pruned.sum()) == 128
            assert bool(jnp.all(trainable["params"]["k"][pruned] == 0))
    # Adam still holds momentum for pruned entries (built before step 5): it cannot revive them.
    assert float(jnp.abs(opt_state[0].mu["params"]["k"][~state["masks"]["k"]]).max()) > 0


def test_taylor_and_movement_scores_accumulate_from_the_gradients():
    w = jnp.array([1.0, -2.0, 3.0, -4.0])
    g = jnp.array([0.5, 0.5, -1.0, 0.1])
    for criterion, expected in (("taylor", jnp.abs(g * w) * 2), ("movement", -g * w * 2)):
        t = prune("k", {"kind": "one_shot", "sparsity": 0.5, "at_step": 100}, criterion=criterion)
        trainable, state = t.init({"k": w})
        for step in range(2):
            trainable, state = t.update(trainable, state, {"params": {"k": g}}, step)
        np.testing.assert_allclose(state["scores"]["k"], expected)
    # At step 100 movement pruning drops the weights moving toward zero (lowest -w*g).
    t = prune("k", {"kind": "one_shot", "sparsity": 0.5, "at_step": 1}, criterion="movement")
    trainable, state = t.init({"k": w})
    trainable, state = t.update(trainable, state, {"params": {"k": g}}, 0)
    np.testing.assert_array_equal(state["masks"]["k"], [False, True, True, False])


@pytest.mark.parametrize("settings, message", [
    ({"sparsity": 1.0}, "1.0"),
    ({"sparsity": -0.1}, "-0.1"),
    ({"select": "nope/.*"}, "prune.select 'nope/.\\*' matches no parameter"),
    ({"scope": "nm", "n": 3, "m": 2}, "n=3, m=2"),
    ({"scope": "nm", "n": 2, "m": 3}, "a/kernel of shape \\(2, 4\\) cannot take 2:3"),
    ({"criterion": "gradient_magic"}, "criterion 'gradient_magic'"),
    ({"sparsity": {"kind": "cosine"}}, "kind 'cosine'"),
    ({"select": ".*"}, None),
])
def test_bad_prune_settings_name_the_parameter_and_value(settings, message):
    def build_and_init():
        t = registry.build("prune", **{"select": ".*kernel", **settings})
        return t.init(_params())

    if message is None:  # selecting everything, biases included, is allowed
        build_and_init()
        return
    with pytest.raises(ValueError, match=message):
        build_and_init()


def test_prune_composes_in_a_chain():
    t = chain(prune(".*kernel", 0.5), identity())
    out = t.apply(*t.init(_params()))
    assert int(jnp.sum(out["a"]["kernel"] == 0)) == 4


def test_driver_runs_gradual_pruning_compiles_once_and_exports_a_smaller_sparse_file(tmp_path):
    config = tiny_config(num_steps=20, checkpoint_every=10)
    config.model.hidden = (64,)
    config.compression.stages = [{"technique": "prune", "select": ".*kernel", "scope": "global",
                                  "sparsity": {"kind": "polynomial", "final_sparsity": 0.9, "begin_step": 2,
                                               "end_step": 12, "frequency": 2}}]
    config.export.codecs = ((".*kernel", "sparse"), (".*", "dense"))
    results = train.train_and_evaluate(config, str(tmp_path / "pruned"), progress=False)
    dense = train.train_and_evaluate(tiny_config(num_steps=2), str(tmp_path / "dense"), progress=False)
    size = results["compression"]
    kernels = 784 * 64 + 64 * 10
    assert results["timing"]["compiles"] == 1
    assert size["params_nonzero"] == size["params_total"] - round(0.9 * kernels)
    assert size["weights_total"] == kernels and size["weights_nonzero"] == kernels - round(0.9 * kernels)
    assert size["bytes_exported"] < 0.2 * size["bytes_dense_fp32"] and size["ratio"] > 5
    del dense
    run = train.build_run(config)
    train.train_loop(run, str(tmp_path / "pruned"), progress=False)  # restores the final checkpoint
    x = run.dataset.eval["inputs"][:8]
    expected = run.model.apply({"params": run.apply_transform(run.state["trainable"], run.state["comp_state"])}, x)
    loaded = export.load_params(str(tmp_path / "pruned" / "export" / "params.safetensors"))
    np.testing.assert_array_equal(np.asarray(run.model.apply({"params": loaded}, x)), np.asarray(expected))


def test_snip_scores_are_gradient_times_weight_at_init_averaged_over_batches():
    from compression.transform import InitBatches

    w = jnp.array([1.0, -2.0, 3.0, -4.0])
    # loss = sum(c * w) per batch, so dL/dw = c and the SNIP score is |c * w| averaged over batches.
    batches = [jnp.array([1.0, 0.0, 0.1, 0.5]), jnp.array([1.0, 1.0, 0.1, 0.5])]
    data = InitBatches(batches, lambda params, c: jnp.sum(c * params["k"]))
    t = prune("k", 0.5, criterion="snip")
    trainable, state = t.init({"k": w}, None, data)
    np.testing.assert_allclose(state["scores"]["k"], [1.0, 1.0, 0.3, 2.0])
    np.testing.assert_array_equal(state["masks"]["k"], [False, True, False, True])  # tie: lower index pruned first
    with pytest.raises(ValueError, match="init_batches"):
        t.init({"k": w})


def test_snip_in_a_chain_differentiates_through_the_later_stage():
    from compression.transform import InitBatches, Transform

    double = Transform(lambda p, k=None, b=None: ({"params": p}, ()), lambda t, s: {"k": 2 * t["params"]["k"]},
                       lambda t, s, g, step: (t, s))
    data = InitBatches([jnp.array([1.0, 0.0, 3.0, 1.0])], lambda params, c: jnp.sum(c * params["k"]))
    t = chain(prune("k", 0.5, criterion="snip"), double)
    trainable, state = t.init({"k": jnp.array([1.0, 1.0, 1.0, 5.0])}, None, data)
    # The model sees 2 * W, so dL/dW = 2c and the scores are |2c * W| = [2, 0, 6, 10].
    np.testing.assert_allclose(state["prune"]["scores"]["k"], [2.0, 0.0, 6.0, 10.0])


def test_driver_prunes_at_initialization_with_snip(tmp_path):
    config = tiny_config(num_steps=6)
    config.compression.init_batches = 2
    config.compression.stages = [{"technique": "prune", "select": ".*kernel", "sparsity": 0.9,
                                  "criterion": "snip", "scope": "global"}]
    run = train.build_run(config)
    initial_mask = np.asarray(run.state["comp_state"]["prune"]["masks"]["Dense_0"]["kernel"])  # the state is donated
    assert float(mask_sparsity(run.state["comp_state"]["prune"])) == pytest.approx(0.9, abs=1e-4)
    train.train_loop(run, str(tmp_path), progress=False)
    np.testing.assert_array_equal(run.state["comp_state"]["prune"]["masks"]["Dense_0"]["kernel"],
                                  initial_mask)  # fixed after init


def test_the_driver_zeroes_the_optimizer_state_of_pruned_entries_after_every_step():
    # Through the real train step: Adam's moments (mu, nu) of pruned kernel entries are
    # exactly zero from the pruning step on, while live entries keep theirs.
    from experiments import train
    from tests.helpers import tiny_config

    config = tiny_config(num_steps=8)
    config.compression.stages = [{"technique": "prune", "sparsity": {"kind": "one_shot", "sparsity": 0.5,
                                                                      "at_step": 3}}]
    run = train.build_run(config)
    state = run.state
    for step in range(6):
        batch = train.data_lib.train_batch(run.dataset, 0, step, 32)
        state, _ = run.train_step(state, batch)
    masks = state["comp_state"]["prune"]["masks"]["Dense_0"]["kernel"]
    adam = state["opt_state"][0] if hasattr(state["opt_state"][0], "mu") else state["opt_state"][-1][0]
    for moment in (adam.mu, adam.nu):
        kernel = np.asarray(moment["params"]["Dense_0"]["kernel"])
        assert int((~np.asarray(masks)).sum()) > 0
        assert np.all(kernel[~np.asarray(masks)] == 0)
        assert np.any(kernel[np.asarray(masks)] != 0)


def test_chain_keep_multiplies_the_stages_masks_by_path():
    from compression.transform import chain

    w = jnp.array([[1.0, -2.0], [3.0, -0.5]])
    a = prune("k", 0.25)  # drops -0.5
    b = prune("k", 0.5)   # on a's trainable: drops 1.0 and -0.5
    t = chain(a, b)
    trainable, state = t.init({"k": w, "bias": jnp.ones(2)})
    keep = t.keep(trainable, state)
    np.testing.assert_array_equal(keep["params"]["k"], [[0.0, 1.0], [1.0, 0.0]])
    assert float(keep["params"]["bias"]) == 1.0
