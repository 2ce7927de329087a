"""experiments.compare_commits's pure helpers, on hand-made inputs (no training, no git)."""
import pytest

from experiments import compare_commits as cc


def test_variant_is_the_get_config_default_plus_quick():
    src = 'import x\n\ndef get_config(variant: str = "gradual_90"):\n    return x\n'
    assert cc.get_config_default(src) == "gradual_90"
    assert cc.quick_variant(cc.get_config_default(src)) == "gradual_90_quick"
    assert cc.quick_variant(cc.get_config_default('def get_config(arg="twn"):\n    pass\n')) == "twn_quick"


def test_an_empty_default_takes_bare_quick():
    assert cc.quick_variant(cc.get_config_default('def get_config(variant: str = ""):\n    pass\n')) == "quick"
    assert cc.get_config_default("def get_config():\n    pass\n") == ""
    assert cc.quick_variant("quick") == "quick" and cc.quick_variant("4_quick") == "4_quick"


def test_only_module_level_get_config_counts():
    doc = '"""Each config starts with\n\n    def get_config(arg: str = "gradual_90"):\n"""\n'
    assert cc.get_config_default(doc + "def helper():\n    pass\n") is None
    assert not cc.is_experiment_config("pruning_common.py", "def get_config(v='a'):\n    pass\n")
    assert not cc.is_experiment_config("default.py", "def get_config():\n    pass\n")
    assert not cc.is_experiment_config("common.py", "def get_config():\n    pass\n")
    assert cc.is_experiment_config("baseline_lenet5.py", "def get_config(variant=''):\n    pass\n")
    with pytest.raises(ValueError, match="string literal"):
        cc.get_config_default("D = 'a'\ndef get_config(v=D):\n    pass\n")


def test_baseline_name_and_workdir_from_init_from():
    assert cc.baseline_of("runs/baseline_lenet5/seed_0/export/params.safetensors") == (
        "baseline_lenet5", "runs/baseline_lenet5/seed_0")
    assert cc.baseline_of("runs/baseline_char_transformer/export/params.safetensors") == (
        "baseline_char_transformer", "runs/baseline_char_transformer")
    for bad in ("/abs/runs/x/export/params.safetensors", "elsewhere/x/export/params.safetensors",
                "runs/x/params.safetensors", "runs/export/params.safetensors"):
        with pytest.raises(ValueError, match="init_from"):
            cc.baseline_of(bad)


def _results(accuracy=0.85, loss=0.41, nbytes=1000):
    return {"metrics": {"test_accuracy": accuracy, "test_loss": loss},
            "compression": {"bytes_exported": nbytes, "ratio": 1066440 / nbytes}}


def test_identical_results_have_no_differences():
    assert cc.compare_results(_results(), _results()) == []
    nan = _results(loss=float("nan"))
    assert cc.compare_results(nan, _results(loss=float("nan"))) == []
    row = cc.row_for("baseline_lenet300", "quick", _results(), _results())
    assert row["verdict"] == "identical" and row["metric"] == "test_accuracy" and row["bytes_new"] == 1000


def test_a_differing_metric_is_named():
    assert cc.compare_results(_results(), _results(loss=0.41 + 1e-12)) == ["metrics.test_loss"]
    extra = _results()
    extra["metrics"]["val_loss_nats"] = 1.5
    assert cc.compare_results(_results(), extra) == ["metrics.val_loss_nats"]


def test_differing_bytes_are_named_and_shown_in_the_table():
    old, new = _results(), _results(nbytes=1001)
    assert cc.compare_results(old, new) == ["compression.bytes_exported"]
    row = cc.row_for("han2015_lenet5", "quick", old, new)
    assert row["verdict"] == "differs: compression.bytes_exported"
    table = cc.format_table([row, cc.row_for("x", "quick", None, new, "old run failed")])
    assert "han2015_lenet5" in table and "1001" in table and "old run failed" in table


def test_main_metric_prefers_accuracy_then_nats():
    assert cc.main_metric({"test_loss": 1.0, "test_accuracy": 0.5}) == "test_accuracy"
    assert cc.main_metric({"val_loss_nats": 1.2, "val_loss": 0.8}) == "val_loss_nats"
    assert cc.main_metric({}) is None


def test_run_folder_names_the_variant():
    assert cc.run_name("zhu2017_lenet300", "gradual_90_quick") == "zhu2017_lenet300_gradual_90_quick"
    assert cc.run_name("quickstart", "") == "quickstart"
