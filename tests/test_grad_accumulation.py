"""Gradient accumulation (train.grad_accum_steps): k micro-batches inside one jitted step."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import data as data_lib
from experiments import models, train
from tests.helpers import tiny_config


def _params_after(config, tmp_path, name):
    run = train.build_run(config)
    timing = train.train_loop(run, str(tmp_path / name), progress=False)
    assert timing["compiles"] == 1
    return run, jax.device_get(run.state["trainable"]["params"])


def _hand_written_params(config, steps):
    """The plain step written out: mean cross-entropy, value_and_grad, the config's optax optimizer."""
    dataset = data_lib.load_dataset(config.dataset, ".data")
    model = models.build_model(config.model, dataset.num_classes)
    init_key, _, _ = jax.random.split(jax.random.PRNGKey(int(config.seed)), 3)
    params, _ = models.init_variables(model, init_key, dataset.train["inputs"][:1])
    optimizer = train.build_optimizer(config, int(config.train.num_steps))
    opt_state = optimizer.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        def loss(p):
            logits = model.apply({"params": p}, batch["inputs"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for s in range(steps):
        batch = data_lib.train_batch(dataset, int(config.seed), s, int(config.train.batch_size), 0)
        params, opt_state = step(params, opt_state, {"inputs": batch["inputs"], "targets": batch["targets"]})
    return jax.device_get(params)


def _assert_trees_close(a, b, **tolerance):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **tolerance)


def test_one_micro_batch_is_the_plain_step(tmp_path):
    # The driver's k = 1 step and the step written out by hand give bit-identical parameters
    # after 8 Adam steps: accumulation adds nothing to the plain step.
    config = tiny_config(num_steps=8, checkpoint_every=100)
    config.train.grad_accum_steps = 1
    _, driver = _params_after(config, tmp_path, "k1")
    _assert_trees_close(driver, _hand_written_params(config, 8), rtol=0, atol=0)


@pytest.mark.parametrize("k", [2, 4])
def test_k_micro_batches_equal_one_batch_k_times_larger(tmp_path, k):
    whole = tiny_config(num_steps=6, checkpoint_every=100, batch_size=64)
    micro = tiny_config(num_steps=6, checkpoint_every=100, batch_size=64, grad_accum_steps=k)
    _, one_batch = _params_after(whole, tmp_path, "whole")
    _, accumulated = _params_after(micro, tmp_path, f"k{k}")
    # Only the summation order of the mean gradient differs (k partial means, then their mean).
    _assert_trees_close(accumulated, one_batch, rtol=1e-5, atol=1e-6)
    start = jax.device_get(train.build_run(whole).state["trainable"]["params"])
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(accumulated),
                                                            jax.tree_util.tree_leaves(start)))
    assert moved > 1e-3  # the comparison is between trained parameters, not two untouched inits


def test_accumulation_gives_the_whole_batch_loss_and_gradient_on_a_hand_made_batch():
    # One step on a batch of 4 with k = 2: micro-batches are examples {0, 2} and {1, 3}; the
    # reported loss and the update equal those of the whole batch.
    config = tiny_config(num_steps=1, batch_size=4)
    config.optimizer.name, config.optimizer.momentum = "sgd", 0.0
    config.optimizer.learning_rate = 1.0
    runs = {}
    for k in (1, 2):
        config.train.grad_accum_steps = k
        runs[k] = train.build_run(config)
    batch = data_lib.train_batch(runs[1].dataset, 0, 0, 4, 0)
    out = {k: run.train_step(run.state, batch) for k, run in runs.items()}
    np.testing.assert_allclose(out[2][1]["loss"], out[1][1]["loss"], rtol=1e-6)
    np.testing.assert_allclose(out[2][1]["accuracy"], out[1][1]["accuracy"], rtol=1e-6)
    _assert_trees_close(out[2][0]["trainable"], out[1][0]["trainable"], rtol=1e-5, atol=1e-7)


def test_accumulation_on_a_sharded_mesh_matches_the_single_device_whole_batch(tmp_path):
    single = tiny_config(num_steps=4, checkpoint_every=100, batch_size=64)
    sharded = tiny_config(num_steps=4, checkpoint_every=100, batch_size=64, grad_accum_steps=2)
    for config in (single, sharded):
        config.model.hidden = (32, 16)
    sharded.mesh.data, sharded.mesh.model = 4, 2
    sharded.mesh.partition_rules = ((".*/kernel", (None, "model")), (".*/bias", ("model",)))
    _, a = _params_after(single, tmp_path, "single")
    _, b = _params_after(sharded, tmp_path, "sharded")
    _assert_trees_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_batch_that_micro_batches_cannot_split_is_refused_naming_the_multiple():
    config = tiny_config(batch_size=32, grad_accum_steps=3)
    with pytest.raises(ValueError, match="train.batch_size 32 cannot be cut into train.grad_accum_steps=3.*"
                                         "multiple of 3"):
        train.build_run(config)
    config = tiny_config(grad_accum_steps=0)
    with pytest.raises(ValueError, match="train.grad_accum_steps"):
        train.build_run(config)
