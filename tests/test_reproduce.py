"""experiments.reproduce: only a committed tree writes paper/results/, missing exports a config
starts from are trained first, and the report marks numbers from dirty trees.

Everything runs through the Python API; training is replaced by a recorder.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from configs import ablation_bits_lenet300, default, li2017_lenet5, transformer_pruning_common
from experiments import reproduce, train
from experiments.reproduce import PlanError, Producer, UncommittedCodeError
from tests.test_build_paper import build, make_result, table_row, write


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com",
                           "-c", "commit.gpgsign=false", *args],
                          cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """A committed tree with code, configs, tests, paper and README files."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    root = tmp_path / "repo"
    for rel in ["compression/prune.py", "experiments/train.py", "configs/base.py",
                "tests/test_x.py", "paper/README.md", "paper/results/a/results.json",
                "README.md", "pyproject.toml", "Makefile", "constraints.txt"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# {rel}\n")
    (root / ".gitignore").write_text("runs/\n__pycache__/\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    return root


def test_only_code_and_config_changes_count(repo):
    assert reproduce.uncommitted_code_changes(repo) == []
    # Not code: the paper, its results, tests, the README, ignored run folders.
    (repo / "paper" / "README.md").write_text("edited\n")
    (repo / "paper" / "results" / "b").mkdir()
    (repo / "paper" / "results" / "b" / "results.json").write_text("{}")
    (repo / "tests" / "test_x.py").write_text("edited\n")
    (repo / "README.md").write_text("edited\n")
    (repo / "runs" / "x").mkdir(parents=True)
    (repo / "runs" / "x" / "results.json").write_text("{}")
    (repo / "compression" / "__pycache__").mkdir()
    (repo / "compression" / "__pycache__" / "prune.pyc").write_text("ignored")
    (repo / "compression_notes.md").write_text("a sibling name, not the folder")
    assert reproduce.uncommitted_code_changes(repo) == []
    # Code: modified, untracked, staged.
    (repo / "compression" / "prune.py").write_text("edited\n")
    (repo / "configs" / "new.py").write_text("untracked\n")
    (repo / "pyproject.toml").write_text("edited\n")
    git(repo, "add", "pyproject.toml")
    assert reproduce.uncommitted_code_changes(repo) == [
        "compression/prune.py", "configs/new.py", "pyproject.toml"]
    git(repo, "mv", "experiments/train.py", "experiments/loop.py")
    assert {"experiments/train.py", "experiments/loop.py"} <= set(
        reproduce.uncommitted_code_changes(repo))


def test_a_tree_git_cannot_read_counts_as_uncommitted(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(UncommittedCodeError, match="git status"):
        reproduce.uncommitted_code_changes(tmp_path)


def test_paper_folder_is_anything_under_paper(repo, tmp_path):
    assert reproduce.is_paper_folder(repo / "paper" / "results", repo)
    assert reproduce.is_paper_folder(repo / "paper" / "results" / "x" / ".." / "y", repo)
    assert reproduce.is_paper_folder(repo / "paper" / "other", repo)
    assert not reproduce.is_paper_folder(repo / "runs" / "results", repo)
    assert not reproduce.is_paper_folder(tmp_path / "elsewhere", repo)


def fail_if_trained(*args, **kwargs):
    raise AssertionError("trained before the tree was checked")


def test_dirty_tree_is_refused_before_anything_loads_or_trains(repo, monkeypatch):
    monkeypatch.setattr(train, "train_and_evaluate", fail_if_trained)
    monkeypatch.setattr(reproduce, "load_config", fail_if_trained)
    for i in range(12):
        (repo / "compression" / f"new_{i:02d}.py").write_text("x = 1\n")
    with pytest.raises(UncommittedCodeError) as raised:
        reproduce.reproduce(["baseline_lenet300"], results_dir=str(repo / "paper" / "results"),
                            repo_root=repo)
    message = str(raised.value)
    assert "compression/new_00.py" in message and "compression/new_09.py" in message
    assert "compression/new_10.py" not in message and "and 2 more" in message
    assert ("commit them (or stash) and run again; results under paper/results/ must come from "
            "a committed tree so their code can be recovered") in message.lower()
    assert not (repo / "paper" / "results" / "baseline_lenet300").exists()


def recorder(calls: list, *, stop: set[str] = frozenset()):
    """A train_and_evaluate that records (workdir, seed, num_steps) and writes the export."""
    def train_and_evaluate(config, workdir):
        calls.append((str(workdir), config.seed, config.train.num_steps))
        if str(workdir) in stop:
            return None
        export = Path(workdir) / "export" / "params.safetensors"
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_bytes(b"export")
        return {"metrics": {"test_accuracy": 0.5}, "config": config.to_dict()}
    return train_and_evaluate


def test_results_outside_paper_may_come_from_a_dirty_tree(repo, tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls))
    (repo / "compression" / "prune.py").write_text("edited\n")
    out = tmp_path / "try"
    reproduce.reproduce(["baseline_lenet300"], results_dir=str(out), runs_dir=str(tmp_path / "runs"),
                        command="python -m experiments.reproduce --results=try", repo_root=repo)
    assert calls == [(str(tmp_path / "runs" / "baseline_lenet300"), 0,
                      calls[0][2])]
    kept = json.loads((out / "baseline_lenet300" / "results.json").read_text())
    assert kept["command"] == "python -m experiments.reproduce --results=try"


@pytest.mark.parametrize("path, expected", [
    (ablation_bits_lenet300.PRETRAINED.replace("{seed}", "2"),
     Producer("baseline_lenet300", 2, "runs/baseline_lenet300/seed_2")),
    (li2017_lenet5.PRETRAINED, Producer("baseline_lenet5", 0, "runs/baseline_lenet5/seed_0")),
    (transformer_pruning_common.PRETRAINED,
     Producer("baseline_char_transformer", None, "runs/baseline_char_transformer")),
    ("runs/li2017_lenet5_filters_50/export/params.safetensors",
     Producer("li2017_lenet5:filters_50", None, "runs/li2017_lenet5_filters_50")),
    ("runs/li2016_twn_lenet5_twn/seed_2", Producer("li2016_twn_lenet5:twn", 2, "runs/li2016_twn_lenet5_twn/seed_2")),
    ("/data/old/baseline_lenet5/export/params.safetensors",
     Producer("baseline_lenet5", None, "/data/old/baseline_lenet5")),
])
def test_producer_of_follows_the_folder_convention(path, expected):
    assert reproduce.producer_of(path, reproduce.experiment_configs()) == expected


@pytest.mark.parametrize("path, says", [
    ("pretrained/model.safetensors", "does not follow"),
    ("runs/not_a_config/export/params.safetensors", "'not_a_config' is no config"),
])
def test_producer_of_names_a_path_off_the_convention(path, says):
    with pytest.raises(PlanError, match=says) as raised:
        reproduce.producer_of(path, reproduce.experiment_configs())
    assert repr(path) in str(raised.value) and "experiments.main" in str(raised.value)


def fake_configs(monkeypatch, chain: dict[str, dict]) -> None:
    """configs NAME[:variant] -> default config with the given fields (dotted keys)."""
    def load(name):
        config = default.get_config()
        for key, value in chain[name].items():
            node = config
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return config
    monkeypatch.setattr(reproduce, "load_config", load)


CHAIN = {
    # top starts from mid (seed 1 of its variant x) with base as teacher; mid starts from base.
    "top": {"init_from": "runs/mid_x/seed_1/export/params.safetensors", "teacher.export": "runs/base",
            "train.num_steps": 30},
    "mid:x": {"init_from": "runs/base/export/params.safetensors", "train.num_steps": 20},
    "base": {"seed": 7, "train.num_steps": 10},
}
NAMES = ["base", "mid", "top"]


def test_missing_exports_are_trained_first_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, CHAIN)
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls))
    reproduce.reproduce(["top"], [0, 1], ["train.num_steps=3"], results_dir="out",
                        config_names=NAMES)
    assert calls == [
        ("runs/base", 7, 10),  # the config's own seed (no seed_K), no --override
        ("runs/mid_x/seed_1", 1, 20),  # the path's seed
        ("runs/top/seed_0", 0, 3),
        ("runs/top/seed_1", 1, 3),  # its prerequisites exist by now
    ]
    printed = capsys.readouterr().out
    assert ("init_from runs/base/export/params.safetensors is missing: training base first "
            "in runs/base") in printed
    assert ("init_from runs/mid_x/seed_1/export/params.safetensors is missing: training mid:x "
            "(seed 1) first in runs/mid_x/seed_1") in printed
    kept = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("results.json"))
    assert kept == ["top/seed_0/results.json", "top/seed_1/results.json"]  # prerequisites stay in runs/


def test_existing_exports_are_not_retrained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, CHAIN)
    for folder in ["runs/base", "runs/mid_x/seed_1"]:
        (tmp_path / folder / "export").mkdir(parents=True)
        (tmp_path / folder / "export" / "params.safetensors").write_bytes(b"export")
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls))
    reproduce.reproduce(["top"], results_dir="out", config_names=NAMES)
    assert calls == [("runs/top", 0, 30)]


def test_a_stopped_prerequisite_holds_back_what_needs_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, CHAIN)
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls, stop={"runs/base"}))
    reproduce.reproduce(["top"], [0, 1], results_dir="out", config_names=NAMES)
    assert calls == [("runs/base", 7, 10)]
    assert "rerun this command to resume" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("chain, says", [
    ({"top": {"init_from": "pretrained/model.safetensors"}}, "init_from is missing: 'pretrained/model"),
    ({"top": {"teacher.export": "runs/nowhere"}}, "teacher.export is missing: 'runs/nowhere'"),
    ({"top": {"init_from": "runs/mid_x/export/params.safetensors"},
      "mid:x": {"init_from": "runs/top/export/params.safetensors"}}, "cycle"),
])
def test_unresolvable_exports_fail_before_anything_trains(tmp_path, monkeypatch, chain, says):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, chain)
    monkeypatch.setattr(train, "train_and_evaluate", fail_if_trained)
    with pytest.raises(PlanError, match=says):
        reproduce.reproduce(["top"], results_dir="out", config_names=NAMES)


def test_report_marks_only_numbers_from_a_dirty_tree(tmp_path):
    results = tmp_path / "results"
    dirty = make_result(0.8912)
    dirty["versions"]["git_commit"] = "0123456789abcdef-dirty"
    write(results, "baseline_lenet300", dirty)
    write(results, "baseline_lenet5", make_result(0.9034, model="lenet5", params=431_080))
    report = build(results, tmp_path / "paper")
    row = table_row(report, "baseline_lenet300")
    for text in ["89.12† % accuracy", "266,610†", "1,066,854†", "32.01†", "1.23†", "45.6† s"]:
        assert text in row, (text, row)
    assert "lenet300†" not in row and "fashion_mnist†" not in row  # config values are not measured
    assert "90.0 % accuracy" in row  # published numbers are not ours
    assert "†" not in table_row(report, "baseline_lenet5")
    notes = [p for p in report.split("\n\n") if p.startswith("† ")]
    assert len(notes) == 1 and "`0123456-dirty` (1 run)" in notes[0] and "1 of 2 runs" in notes[0]
    assert "cannot be recovered exactly; to be re-run" in notes[0]
    # Without a dirty run: no mark and no note.
    (results / "baseline_lenet300" / "results.json").write_text(json.dumps(make_result(0.8912)))
    assert "†" not in build(results, tmp_path / "paper2")


def test_an_export_path_with_seed_follows_each_runs_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, {"sweep": {"init_from": "runs/base/seed_{seed}/export/params.safetensors"},
                               "base": {"train.num_steps": 10}})
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls))
    reproduce.reproduce(["sweep"], [0, 1], results_dir="out", config_names=["base", "sweep"])
    # Each seed of the sweep starts from the baseline of its own seed, trained first.
    assert calls == [("runs/base/seed_0", 0, 10), ("runs/sweep/seed_0", 0, 1000),
                     ("runs/base/seed_1", 1, 10), ("runs/sweep/seed_1", 1, 1000)]


def test_an_explicit_seed_always_has_its_folder_and_a_repeated_seed_runs_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fake_configs(monkeypatch, {"base": {"seed": 7, "train.num_steps": 10}})
    calls: list = []
    monkeypatch.setattr(train, "train_and_evaluate", recorder(calls))
    reproduce.reproduce(["base"], [2, 2], results_dir="out", config_names=["base"])
    reproduce.reproduce(["base"], results_dir="out", config_names=["base"])
    # A seed added on its own sits beside the others (seed_2), never in the config's own-seed folder.
    assert calls == [("runs/base/seed_2", 2, 10), ("runs/base", 7, 10)]
    kept = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("results.json"))
    assert kept == ["base/results.json", "base/seed_2/results.json"]


def test_an_override_sets_a_dotted_field_or_a_list_entrys_field_and_names_a_wrong_key():
    config = default.get_config()
    config.loss = [{"term": "cross_entropy"}, {"term": "knowledge_distillation", "temperature": 1.0}]
    reproduce.apply_override(config, "optimizer.learning_rate=0.01")
    reproduce.apply_override(config, "loss.1.temperature=4")
    assert config.optimizer.learning_rate == 0.01 and config.loss[1]["temperature"] == 4
    for bad, why in (("optimizer.rate=1", "no field 'rate'"), ("loss.2.temperature=4", "not an index of a list of 2"),
                     ("loss.x.weight=1", "'x' is not an index"), ("nothing.at.all=1", "no field 'nothing'")):
        with pytest.raises(ValueError, match=why):
            reproduce.apply_override(config, bad)
