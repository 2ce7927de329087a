"""The driver: results contract, one compile, export equals training view, sharding, resume, NaN, bad configs."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from compression import export
from experiments import data as data_lib
from experiments import train
from tests.helpers import tiny_config

RESULT_KEYS = {
    "metrics": {"test_accuracy", "test_loss"},
    "compression": {"params_total", "params_nonzero", "bits_per_weight", "bytes_dense_fp32", "bytes_exported",
                    "ratio"},
    "timing": {"train_step_ms_median", "compiles", "wall_s"},
    "versions": {"python", "jax", "flax", "optax", "git_commit"},
}


def _final_params(run):
    return jax.device_get(run.apply_transform(run.state["trainable"], run.state["comp_state"]))


def test_run_writes_results_json_with_the_contract_keys_and_compiles_once(tmp_path):
    config = tiny_config()
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    on_disk = json.load(open(tmp_path / "results.json"))
    assert on_disk["config"]["model"]["hidden"] == [16]
    for block, keys in RESULT_KEYS.items():
        assert keys <= set(on_disk[block]), (block, set(on_disk[block]))
    assert results["timing"]["compiles"] == 1
    size = results["compression"]
    assert size["params_total"] == 784 * 16 + 16 + 16 * 10 + 10
    assert size["bytes_exported"] == os.path.getsize(tmp_path / "export" / "params.safetensors")
    assert 32.0 < size["bits_per_weight"] < 33.0  # dense fp32 plus the container's header
    assert size["flops_per_example"] == 2 * (784 * 16 + 16 * 10)
    lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert [l["step"] for l in lines if "train_loss" in l] == [4, 8, 12]
    assert os.listdir(tmp_path / "tensorboard")


def test_exported_params_give_the_same_predictions_as_the_trained_model(tmp_path):
    config = tiny_config()
    run = train.build_run(config)
    train.train_loop(run, str(tmp_path), progress=False)
    path, _ = train.export_run(run, str(tmp_path))
    x = run.dataset.eval["inputs"][:16]
    expected = run.model.apply({"params": _final_params(run)}, x)
    loaded = run.model.apply({"params": export.load_params(path)}, x)
    np.testing.assert_array_equal(np.asarray(expected), np.asarray(loaded))


def test_training_learns_a_learnable_task(tmp_path):
    config = tiny_config(num_steps=150, log_every=50, checkpoint_every=1000)
    config.optimizer.learning_rate = 3e-3
    run = train.build_run(config)
    # Make the label visible: example of class k has its k-th block of 78 pixels saturated.
    for split in (run.dataset.train, run.dataset.eval):
        flat = split["inputs"].reshape(len(split["inputs"]), -1)
        for k in range(10):
            flat[split["targets"] == k, 78 * k:78 * (k + 1)] = 255
    before = train.evaluate_params(run, _final_params(run))
    train.train_loop(run, str(tmp_path), progress=False)
    after = train.evaluate_params(run, _final_params(run))
    assert before["loss"] > 2.0 and before["accuracy"] < 0.25
    assert after["loss"] < 1.5 and after["accuracy"] > 0.5, (before, after)


def test_sharded_run_on_a_data4_model2_mesh_matches_a_single_device_run(tmp_path):
    assert jax.device_count() >= 8, "tests/conftest.py should give 8 host devices"
    single = tiny_config(num_steps=6, checkpoint_every=100)
    single.model.hidden = (32, 16)
    sharded = tiny_config(num_steps=6, checkpoint_every=100)
    sharded.model.hidden = (32, 16)
    sharded.mesh.data, sharded.mesh.model = 4, 2
    sharded.mesh.partition_rules = ((".*/kernel", (None, "model")), (".*/bias", ("model",)))
    runs = []
    for name, config in (("single", single), ("sharded", sharded)):
        run = train.build_run(config)
        timing = train.train_loop(run, str(tmp_path / name), progress=False)
        assert timing["compiles"] == 1
        runs.append(run)
    kernel = runs[1].state["trainable"]["params"]["Dense_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "model")
    assert len(kernel.sharding.device_set) == 8
    for a, b in zip(jax.tree_util.tree_leaves(_final_params(runs[0])),
                    jax.tree_util.tree_leaves(_final_params(runs[1]))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    ev = [train.evaluate(r, r.state["trainable"], r.state["comp_state"]) for r in runs]
    assert ev[0]["loss"] == pytest.approx(ev[1]["loss"], rel=1e-5)


def test_run_stopped_and_resumed_ends_with_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    config = tiny_config(num_steps=13, checkpoint_every=4)
    config.model.dropout_rate = 0.2  # the dropout key must also continue exactly
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"), progress=False)

    staged = config.copy_and_resolve_references()
    staged.train.stop_after = 6  # each invocation runs at most 6 more steps: 6, 12, then 13
    for _ in range(2):
        assert train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False) is None
        assert not (tmp_path / "staged" / "results.json").exists()  # nothing that looks finished
    resumed = train.train_and_evaluate(staged, str(tmp_path / "staged"), progress=False)
    assert resumed["timing"]["steps_this_invocation"] == 1
    # Timing covers all three invocations: 13 steps, the median of the 6-step ones.
    assert resumed["timing"]["invocations"] == 3 and resumed["timing"]["steps_trained"] == 13
    assert resumed["timing"]["train_step_ms_median"] is not None and resumed["timing"]["compiles"] == 1
    assert resumed["metrics"] == straight["metrics"]
    a = export.load_params(str(tmp_path / "straight" / "export" / "params.safetensors"))
    b = export.load_params(str(tmp_path / "staged" / "export" / "params.safetensors"))
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_sigterm_checkpoints_the_step_reached_and_a_rerun_continues_from_it(tmp_path, capsys):
    # A background job ignores SIGINT and `kill`/a preempted TPU VM sends SIGTERM: neither may lose steps.
    config = tiny_config(num_steps=12, checkpoint_every=100)  # no cadence save before the signal
    run = train.build_run(config)
    before = signal.getsignal(signal.SIGTERM)

    def batches(step):
        if step == 5:  # asked for once step 5 has been applied
            os.kill(os.getpid(), signal.SIGTERM)
        return data_lib.train_batch(run.dataset, int(config.seed), step, int(config.train.batch_size), 0)

    with pytest.raises(train.Terminated, match="SIGTERM"):
        train.train_loop(run, str(tmp_path), progress=False, batches=batches)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "stopped at step 5 of 12" in capsys.readouterr().out
    manager = train._checkpoint_manager(str(tmp_path), config)
    assert manager.latest_step() == 5
    manager.close()
    timing = train.train_loop(train.build_run(config), str(tmp_path), progress=False)
    assert timing["steps_this_invocation"] == 7 and timing["finished"]


def test_an_interrupted_invocation_counts_in_the_finished_runs_timing(tmp_path, monkeypatch):
    # `kill` at step 5, then a rerun: results.json's timing covers both invocations, not only the rerun's 7 steps.
    config = tiny_config(num_steps=12, checkpoint_every=100)
    train_batch = data_lib.train_batch

    def interrupting(dataset, seed, step, *args):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_batch(dataset, seed, step, *args)

    with monkeypatch.context() as patch:
        patch.setattr(data_lib, "train_batch", interrupting)
        with pytest.raises(train.Terminated):
            train.train_and_evaluate(config, str(tmp_path), progress=False)
    first = [json.loads(line) for line in open(tmp_path / train.TIMING_LOG)]
    assert [line["steps"] for line in first] == [5] and first[0]["wall_s"] > 0
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    timing = results["timing"]
    assert timing["steps_this_invocation"] == 7 and timing["steps_trained"] == 12 and timing["invocations"] == 2
    assert timing["wall_s"] > first[0]["wall_s"]


def test_rerunning_a_finished_run_keeps_the_timing_of_the_steps_it_trained(tmp_path):
    config = tiny_config(num_steps=6)
    first = train.train_and_evaluate(config, str(tmp_path), progress=False)
    again = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert again["timing"]["steps_this_invocation"] == 0
    assert again["timing"]["train_step_ms_median"] == first["timing"]["train_step_ms_median"]
    assert again["timing"]["compiles"] == 1 and again["timing"]["steps_trained"] == 6
    assert again["timing"]["wall_s"] > first["timing"]["wall_s"]
    assert again["metrics"] == first["metrics"]


def test_a_nan_loss_stops_the_run_with_the_step_and_writes_no_results(tmp_path):
    config = tiny_config(num_steps=8, log_every=2)
    config.optimizer.learning_rate = 1e38  # Adam steps of 1e38 overflow float32 at once
    with pytest.raises(FloatingPointError, match=r"step 2"):
        train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("change, message", [
    (lambda c: c.mesh.update(data=16, model=1), "needs 16 devices"),
    (lambda c: c.train.update(batch_size=30) or c.mesh.update(data=4), "batch_size 30 is not divisible by mesh data"),
    (lambda c: c.train.update(eval_batch_size=30) or c.mesh.update(data=4), "eval_batch_size 30 is not divisible"),
    (lambda c: c.model.update(name="resnet9000"), "unknown model 'resnet9000'"),
    (lambda c: c.compression.update(stages=[{"technique": "no_such_thing"}]), "unknown technique"),
    (lambda c: c.mesh.update(model=2, partition_rules=((".*/kernel", (None, "model")), (".*", ())))
     or c.model.update(hidden=(15,)), r"Dense_0/kernel of shape \(784, 15\) cannot be split"),
    (lambda c: c.mesh.update(partition_rules=((".*/kernel", ()),)), "no rule matches Dense_0/bias"),
    (lambda c: c.optimizer.update(name="adagradx"), "unknown optimizer.name"),
    (lambda c: c.train.update(num_steps=-1), "train.num_steps must be an integer >= 0"),
])
def test_bad_configs_fail_before_training_with_a_message_naming_the_fix(change, message):
    config = tiny_config()
    change(config)
    with pytest.raises(ValueError, match=message):
        train.build_run(config)


def test_a_run_can_start_from_an_export_and_zero_steps_only_evaluates_and_exports(tmp_path):
    trained = train.train_and_evaluate(tiny_config(), str(tmp_path / "a"), progress=False)
    config = tiny_config(num_steps=0)
    config.init_from = str(tmp_path / "a" / "export" / "params.safetensors")
    again = train.train_and_evaluate(config, str(tmp_path / "b"), progress=False)
    assert again["metrics"] == trained["metrics"]
    assert again["timing"]["steps_this_invocation"] == 0


def test_init_from_a_missing_or_mismatched_export_says_what_is_wrong(tmp_path):
    trained_dir = tmp_path / "a"
    train.train_and_evaluate(tiny_config(num_steps=2), str(trained_dir), progress=False)
    config = tiny_config()
    config.init_from = str(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="run the config that trains it first"):
        train.build_run(config)
    config.init_from = str(trained_dir / "export" / "params.safetensors")
    config.model.hidden = (8,)
    with pytest.raises(ValueError, match=r"Dense_0/kernel: \(784, 8\) vs \(784, 16\)"):
        train.build_run(config)
