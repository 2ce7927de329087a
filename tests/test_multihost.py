"""Two processes, one run: the multi-host path (jax.distributed, gloo on CPU) against a single process.

Each process of the pair runs the README's command, `python -m
experiments.main ... --coordinator=127.0.0.1:PORT --num_processes=2
--process_id=I`, with 4 host devices, so together they form the config's
data 4 x model 2 mesh of 8 devices; the single-process runs here use the 8
host devices of the test session (tests/conftest.py) and the same mesh.
"""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from compression import export
from experiments import data as data_lib
from experiments import train
from tests.helpers import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6
# The config file both processes read: the same config as the single-process runs here.
CONFIG_FILE = "from tests.test_multihost import multihost_config as get_config\n"
# The parameters after 6 Adam steps agree to float32 summation order: the two processes' mesh
# reduces the gradient over the same 8 devices as the single process, through gloo.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def multihost_config():
    config = tiny_config(num_steps=STEPS, checkpoint_every=3, log_every=2)
    config.model.hidden = (32, 16)
    config.mesh.data, config.mesh.model = 4, 2
    config.mesh.partition_rules = ((".*/kernel", (None, "model")), (".*/bias", ("model",)))
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, workdir, *overrides):
    config_file = tmp_path / "multihost_config.py"
    config_file.write_text(CONFIG_FILE)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": ROOT}
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "experiments.main", f"--config={config_file}", f"--workdir={workdir}",
         f"--coordinator=127.0.0.1:{port}", "--num_processes=2", f"--process_id={i}", "--noprogress",
         "--traceback", *overrides],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = []
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"
    return outputs


def _exported(workdir) -> list[np.ndarray]:
    return jax.tree_util.tree_leaves(export.load_params(os.path.join(workdir, "export", "params.safetensors")))


def _assert_same_params(a, b):
    for x, y in zip(_exported(a), _exported(b), strict=True):
        np.testing.assert_allclose(x, y, **TOLERANCE)


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("single")
    train.train_and_evaluate(multihost_config(), str(workdir), progress=False)
    return workdir


def test_two_processes_form_one_mesh_write_once_and_end_where_one_process_ends(tmp_path, single_process_run):
    workdir = tmp_path / "pair"
    _two_processes(tmp_path, workdir)
    _assert_same_params(workdir, single_process_run)
    results = json.load(open(workdir / "results.json"))
    assert results["hardware"]["process_count"] == 2
    assert results["hardware"]["devices_used"] == 8 and results["hardware"]["mesh"] == {"data": 4, "model": 2}
    single = json.load(open(single_process_run / "results.json"))
    assert results["metrics"]["test_loss"] == pytest.approx(single["metrics"]["test_loss"], rel=1e-5)
    # Written once, by process 0: each logged step appears once, one timing line, one export.
    steps = [json.loads(line)["step"] for line in open(workdir / "metrics.jsonl")]
    assert steps == [2, 4, 6, 6], steps  # train metrics every 2 steps, then the final metrics
    assert len(open(workdir / "timing.jsonl").read().splitlines()) == 1
    assert os.listdir(workdir / "export") == ["params.safetensors"]


def test_a_two_process_checkpoint_resumes_in_one_process_and_a_one_process_checkpoint_in_two(
        tmp_path, single_process_run):
    # Two processes train the first half; one process finishes it.
    pair_first = tmp_path / "pair_first"
    _two_processes(tmp_path, pair_first, "--config.train.stop_after=3")
    assert not (pair_first / "results.json").exists()
    train.train_and_evaluate(multihost_config(), str(pair_first), progress=False)
    _assert_same_params(pair_first, single_process_run)
    # One process trains the first half; two processes finish it.
    single_first = tmp_path / "single_first"
    staged = multihost_config()
    staged.train.stop_after = 3
    assert train.train_and_evaluate(staged, str(single_first), progress=False) is None
    _two_processes(tmp_path, single_first)
    _assert_same_params(single_first, single_process_run)


def test_each_process_reads_only_its_own_part_of_every_batch():
    dataset = data_lib.load_dataset(multihost_config().dataset, ".data")
    whole = data_lib.train_batch(dataset, 0, 5, 32, 0)
    parts = [data_lib.train_batch(dataset, 0, 5, 32, 0, process_index=i, process_count=2) for i in range(2)]
    for key in ("inputs", "targets"):
        assert all(len(p[key]) == 16 for p in parts)
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_a_partial_multi_process_command_line_is_refused_naming_the_missing_flags():
    out = subprocess.run([sys.executable, "-m", "experiments.main", "--config=configs/baseline_lenet300.py:quick",
                          "--workdir=/tmp/never", "--coordinator=127.0.0.1:1234"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0
    assert "--coordinator=HOST:PORT, --num_processes=N and --process_id=I together" in out.stderr
