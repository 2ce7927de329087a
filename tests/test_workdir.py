"""A run never lies about what it is (issue 15): one config per workdir, a lock, whole files, one-line errors."""
import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from compression import export
from experiments import train
from experiments import workdir as workdir_lib
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNED = [{"technique": "prune", "sparsity": 0.5}]


def pruned_config(**train_settings):
    config = tiny_config(**train_settings)
    config.compression.stages = [dict(s) for s in PRUNED]
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 12-step run of a 50%-pruned tiny MLP: (its workdir, its results)."""
    path = tmp_path_factory.mktemp("finished")
    return path, train.train_and_evaluate(pruned_config(), str(path), progress=False)


def copy_of(finished, tmp_path):
    shutil.copytree(finished[0], tmp_path / "w")
    return str(tmp_path / "w")


def read(path):
    with open(path) as f:
        return f.read()


# ---------------------------------------------------------------- a workdir belongs to one config

def test_a_finished_run_rerun_with_another_sparsity_is_refused_and_nothing_is_rewritten(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    before = {name: read(os.path.join(workdir, name)) for name in ("config.json", "results.json")}
    config = pruned_config()
    config.compression.stages = [{"technique": "prune", "sparsity": 0.9}]
    with pytest.raises(workdir_lib.WorkdirError, match=r"compression.stages: .*0\.5.* -> .*0\.9.*Use a new workdir"):
        train.train_and_evaluate(config, workdir, progress=False)
    assert {name: read(os.path.join(workdir, name)) for name in before} == before


def test_keys_that_only_change_how_a_run_runs_may_differ_on_a_rerun(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    config = pruned_config(eval_batch_size=32, log_every=3, checkpoint_every=7, stop_after=5)
    config.mesh.data = 2  # resumed on other hardware
    again = train.train_and_evaluate(config, workdir, progress=False)
    # The same weights, evaluated in other batches on other devices: equal up to summation order.
    assert again["metrics"] == pytest.approx(finished[1]["metrics"], rel=1e-6)
    assert again["timing"]["steps_this_invocation"] == 0
    assert json.loads(read(os.path.join(workdir, "config.json")))["mesh"]["data"] == 2


def test_a_key_an_older_config_json_lacks_compares_equal_to_its_default(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    path = os.path.join(workdir, "config.json")
    stored = json.loads(read(path))
    del stored["init_from"], stored["teacher"], stored["export"]  # fields a newer lab added
    with open(path, "w") as f:
        json.dump(stored, f)
    config = pruned_config()
    # A stage setting the stored stage omits compares equal to the technique's default.
    config.compression.stages = [{"technique": "prune", "sparsity": 0.5, "criterion": "magnitude"}]
    assert train.train_and_evaluate(config, workdir, progress=False)["metrics"] == finished[1]["metrics"]


def test_config_differences_ignores_runtime_keys_and_fills_defaults():
    defaults = {"seed": 0, "train": {"batch_size": 128}}
    stored = {"train": {"log_every": 10, "batch_size": 128}, "mesh": {"data": 4}}
    new = {"seed": 0, "train": {"log_every": 99}, "mesh": {"data": 1, "model": 2}, "extra": 1}
    assert workdir_lib.config_differences(stored, new, defaults) == [("extra", None, 1)]
    assert workdir_lib.config_differences({"seed": 1}, {}, defaults) == [("seed", 1, 0)]


def test_a_rejected_config_does_not_replace_the_stored_one(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    before = read(os.path.join(workdir, "config.json"))
    config = pruned_config(eval_batch_size=0)  # a runtime key, so only the range check stops it
    with pytest.raises(ValueError, match="train.eval_batch_size must be an integer >= 1"):
        train.train_and_evaluate(config, workdir, progress=False)
    assert read(os.path.join(workdir, "config.json")) == before
    fresh = tmp_path / "fresh"
    with pytest.raises(ValueError, match="optimizer.learning_rate must be a finite number > 0"):
        train.train_and_evaluate(_with_lr(0.0), str(fresh), progress=False)
    assert not (fresh / "config.json").exists()


def _with_lr(lr):
    config = tiny_config()
    config.optimizer.learning_rate = lr
    return config


# ---------------------------------------------------------------- lock and whole files

def test_a_second_run_in_a_workdir_in_use_is_refused(tmp_path):
    with workdir_lib.hold(str(tmp_path)):
        with pytest.raises(workdir_lib.WorkdirError, match=f"in use by another run \\(process {os.getpid()}\\)"):
            train.train_and_evaluate(tiny_config(num_steps=1), str(tmp_path), progress=False)
    assert not (tmp_path / "config.json").exists()


def test_a_killed_run_leaves_no_stale_lock(tmp_path):
    code = ("import sys, time; from experiments import workdir; lock = workdir.hold(sys.argv[1]); lock.__enter__(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(workdir_lib.WorkdirError, match=f"process {holder.pid}"):
            with workdir_lib.hold(str(tmp_path)):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdir_lib.hold(str(tmp_path)):  # the kernel released the dead run's lock
        pass


def test_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    workdir_lib.write_json(str(path), {"a": (1, 2), "b": np.float32(0.5)})
    assert json.loads(read(path)) == {"a": [1, 2], "b": 0.5}

    def killed(*args):
        raise KeyboardInterrupt  # as if the run were stopped between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        workdir_lib.write_json(str(path), {"a": "new"})
    assert json.loads(read(path)) == {"a": [1, 2], "b": 0.5}
    assert os.listdir(tmp_path) == ["results.json"]  # no temporary file left behind


# ---------------------------------------------------------------- checkpoints

# Orbax's writer thread, cut short by the failed save, reports its closed event loop.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_full_disk_during_a_save_is_one_line_and_the_checkpoints_stay_usable(finished, tmp_path, monkeypatch):
    from orbax.checkpoint._src.path import async_path
    write_text = async_path.write_text

    async def full_disk(path, text):
        if "10.orbax-checkpoint-tmp" in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    workdir = str(tmp_path / "w")
    with pytest.raises(train.CheckpointError,
                       match=r"failed at step 1[02]: \[Errno 28\] No space left on device.*step 5\) is kept.*"
                             r"Free some disk space") as error:
        train.train_and_evaluate(pruned_config(), workdir, progress=False)
    assert "\n" not in str(error.value)
    assert "No space left" in read(os.path.join(workdir, "checkpoint_errors.log"))  # orbax's logs, kept aside
    monkeypatch.setattr(async_path, "write_text", write_text)
    resumed = train.train_and_evaluate(pruned_config(), workdir, progress=False)
    assert resumed["metrics"] == finished[1]["metrics"]


def test_a_checkpoint_of_another_model_names_the_arrays_and_stays_usable(finished, tmp_path):
    workdir = copy_of(finished, tmp_path)
    os.remove(os.path.join(workdir, "config.json"))  # a workdir from before config.json was kept
    config = pruned_config()
    config.model.hidden = (8,)
    with pytest.raises(train.CheckpointError, match=r"trainable/params/Dense_0/kernel: stored \(784, 16\) vs this run "
                                                    r"\(784, 8\).*Use a new workdir") as error:
        train.train_and_evaluate(config, workdir, progress=False)
    assert "\n" not in str(error.value)
    assert train.train_and_evaluate(pruned_config(), workdir, progress=False)["metrics"] == finished[1]["metrics"]


# ---------------------------------------------------------------- settings, parameters, notes

@pytest.mark.parametrize("key, value, message", [
    ("optimizer.learning_rate", 0.0, "optimizer.learning_rate must be a finite number > 0"),
    ("optimizer.learning_rate", -1e-3, "optimizer.learning_rate must be a finite number > 0"),
    ("optimizer.learning_rate", float("inf"), "optimizer.learning_rate must be a finite number"),
    ("train.batch_size", 0, r"train.batch_size must be an integer >= 1 \(got 0\)"),
    ("train.batch_size", -8, r"train.batch_size must be an integer >= 1 \(got -8\)"),
    ("train.eval_batch_size", 0, "train.eval_batch_size must be an integer >= 1"),
    ("train.stop_after", -1, "train.stop_after must be an integer >= 0"),
    ("seed", -1, r"seed must be an integer in \[0, 4294967295\]"),
    ("train.log_every", 0, "train.log_every must be an integer >= 1"),
    ("train.checkpoint_every", 0, "train.checkpoint_every must be an integer >= 1"),
    ("compression.init_batches", -1, "compression.init_batches must be an integer >= 0"),
    ("optimizer.grad_clip", -1.0, "optimizer.grad_clip must be a finite number >= 0"),
    ("optimizer.momentum", 1.0, r"optimizer.momentum must be a finite number in \[0.0, 1.0\)"),
])
def test_driver_settings_out_of_range_are_refused_before_anything_is_read(key, value, message, monkeypatch):
    config = tiny_config()
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
        node = node[p]
    node[leaf] = value
    monkeypatch.setattr(train.data_lib, "load_dataset", lambda *a: pytest.fail("data read before the check"))
    with pytest.raises(ValueError, match=message):
        train.build_run(config)


def test_non_finite_parameters_in_an_init_from_export_are_refused_naming_the_path(finished, tmp_path):
    path = os.path.join(finished[0], "export", "params.safetensors")
    _, params, _ = train.read_export(path)
    params["Dense_1"]["kernel"] = np.array(params["Dense_1"]["kernel"])
    params["Dense_1"]["kernel"][3, 2] = np.inf
    bad = str(tmp_path / "bad.safetensors")
    codecs = {p: ("dense", {}) for p in ("Dense_0/kernel", "Dense_0/bias", "Dense_1/kernel", "Dense_1/bias")}
    export.export_params(bad, params, codecs, metadata=export.read_header(path)["metadata"])
    config = tiny_config()
    config.init_from = bad
    with pytest.raises(ValueError, match=r"init_from .*bad.safetensors.* non-finite .* in params/Dense_1/kernel"):
        train.build_run(config)
    config.init_from = ""
    config.teacher.export = bad
    with pytest.raises(ValueError, match=r"teacher.export .* non-finite .* in params/Dense_1/kernel"):
        train.build_run(config)


def test_zero_steps_says_nothing_is_trained(tmp_path, capsys):
    results = train.train_and_evaluate(tiny_config(num_steps=0), str(tmp_path), progress=False)
    assert "train.num_steps=0: nothing is trained" in capsys.readouterr().out
    assert results["timing"]["steps_this_invocation"] == 0


def test_a_mesh_that_leaves_devices_idle_warns_and_results_record_the_hardware(finished, caplog):
    mesh_config = {"data": 3, "model": 1}
    with caplog.at_level("WARNING"):
        mesh = train.create_mesh(mesh_config)
    assert f"uses 3 of the {jax.device_count()} devices" in caplog.text
    assert train.hardware(mesh)["devices_used"] == 3 and train.hardware(mesh)["mesh"] == {"data": 3, "model": 1}
    assert finished[1]["hardware"]["device_count"] == jax.device_count()
    assert finished[1]["hardware"]["mesh"] == {"data": 1, "model": 1}


# ---------------------------------------------------------------- the command line

def _main(*args):
    return subprocess.run([sys.executable, "-m", "experiments.main", *args, "--progress=false"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_command_line_refuses_a_changed_config_in_one_line(finished):
    done = _main("--config=configs/baseline_lenet300.py:quick", f"--workdir={finished[0]}")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"error: {finished[0]} holds a run of another config (" in done.stderr
    assert "Use a new workdir" in done.stderr


def test_command_line_names_a_bad_setting_in_one_line(tmp_path):
    done = _main("--config=configs/baseline_lenet300.py:quick", f"--workdir={tmp_path}",
                 "--config.train.batch_size=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: train.batch_size must be an integer >= 1 (got 0)" in done.stderr
    assert not os.path.exists(tmp_path / "config.json")


def test_removing_every_layer_says_so(tmp_path, capsys):
    from experiments import structures
    config = tiny_config(num_steps=0, batch_size=8, eval_batch_size=8, log_every=1)
    config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": 32,
                      "train_size": 512, "eval_size": 64, "seq_len": 8}
    config.model = {"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 2,
                    "num_heads": [2, 2], "ffn_dim": [16, 16], "head_dim": 8}
    config.compression.stages = [{"technique": "layer_drop", "layers": structures.transformer_layers(2),
                                  "drop": {"policy": "top", "count": 2}}]
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    assert "the export keeps none of the model's 2 layers" in capsys.readouterr().out
    assert json.loads(read(tmp_path / "results.json")) == json.loads(json.dumps(results, default=list))


def test_command_line_names_an_override_of_a_field_the_config_lacks(tmp_path):
    done = _main("--config=configs/baseline_lenet300.py:quick", f"--workdir={tmp_path}", "--config.train.bach_size=8")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "names a field the config does not have: 'bach_size'" in done.stderr and "batch_size" in done.stderr


def test_init_from_with_seed_loads_the_export_of_the_runs_seed(finished, tmp_path):
    seeded = tmp_path / "base" / "seed_3" / "export"
    shutil.copytree(os.path.join(finished[0], "export"), seeded)
    config = pruned_config(num_steps=0)
    config.init_from = str(tmp_path / "base" / "seed_{seed}" / "export" / "params.safetensors")
    config.seed = 3
    assert train.train_and_evaluate(config, str(tmp_path / "w"), progress=False)["metrics"] == finished[1]["metrics"]
    config.seed = 4
    with pytest.raises(FileNotFoundError, match="seed_4"):
        train.build_run(config)
