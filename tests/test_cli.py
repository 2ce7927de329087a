"""The command-line contract: python -m experiments.main --config=configs/NAME.py[:quick] --workdir=DIR."""
import importlib
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["main", "quickstart", "reproduce", "select", "benchmark_step", "build_paper", "prepare_data"]


def test_every_command_module_imports_beside_the_others():
    # absl flags are process-global: commands define theirs only when run.
    for name in COMMANDS:
        importlib.import_module(f"experiments.{name}")


@pytest.mark.parametrize("name", ["baseline_lenet300", "baseline_lenet5", "baseline_char_transformer",
                                  "quickstart"])
def test_configs_resolve_and_quick_variants_are_smaller(name):
    module = importlib.import_module(f"configs.{name}")
    full = module.get_config()
    if name != "quickstart":
        assert module.get_config("quick").train.num_steps < full.train.num_steps
    with pytest.raises(ValueError, match="variant"):
        module.get_config("nonsense")


def _experiment_configs():
    from experiments import reproduce

    return reproduce.experiment_configs()


@pytest.mark.parametrize("arg", [None, "quick"])
@pytest.mark.parametrize("name", _experiment_configs())
def test_every_experiment_config_resolves_to_a_buildable_technique_chain(name, arg):
    # None: get_config() with no argument; "quick": configs/NAME.py:quick, the default variant at CPU scale.
    from compression import registry

    module = importlib.import_module(f"configs.{name}")
    config = module.get_config() if arg is None else module.get_config(arg)
    for stage in config.compression.stages:
        assert stage["technique"] in registry.names(), (name, stage["technique"])
    assert config.train.num_steps >= 0 and config.dataset.name and config.model.name
    if arg == "quick":
        assert config.train.num_steps <= module.get_config().train.num_steps


def test_main_runs_a_config_with_overrides_on_real_data_and_writes_results(tmp_path):
    env = dict(os.environ, XLA_FLAGS="")  # one device, as a plain run on this machine
    cmd = [sys.executable, "-m", "experiments.main", "--config=configs/baseline_lenet300.py:quick",
           f"--workdir={tmp_path}", "--config.train.num_steps=30", "--config.train.log_every=10",
           "--config.train.eval_batch_size=2000", "--noprogress"]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.load(open(tmp_path / "results.json"))
    assert results["config"]["train"]["num_steps"] == 30
    assert results["dataset"]["name"] == "fashion_mnist"
    assert results["metrics"]["test_accuracy"] > 0.5  # 30 steps of Adam already beat chance (0.1) by far
    assert results["compression"]["params_total"] == 266_610


def test_main_rejects_an_unknown_config_field():
    cmd = [sys.executable, "-m", "experiments.main", "--config=configs/baseline_lenet300.py:quick",
           "--config.train.num_stepz=30", "--workdir=/tmp/never"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "num_stepz" in out.stderr


def test_quickstart_table_has_one_row_per_run_with_measured_sizes():
    from experiments import quickstart

    def results(stages, accuracy, nonzero, exported):
        return {"config": {"compression": {"stages": stages}}, "metrics": {"test_accuracy": accuracy},
                "compression": {"params_total": 266610, "params_nonzero": nonzero, "bytes_exported": exported,
                                "ratio": 1066440 / exported}}

    table = quickstart.format_table([results([], 0.8715, 266610, 1067696),
                                     results([{"technique": "prune"}], 0.8515, 27030, 132279)])
    lines = table.splitlines()
    assert len(lines) == 4
    assert "| none (dense) | 87.15%" in lines[2] and "1,067,696" in lines[2] and "1.00x" in lines[2]
    assert "| prune" in lines[3] and "27,030" in lines[3] and "8.06x" in lines[3]
