"""configs/common.py:parse_arg, the one parser of `--config=configs/NAME.py:ARG`, and the variants in use."""
import glob
import importlib
import inspect
import json
import os
import re

import pytest

from configs import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS, LEVELS = ("gradual", "oneshot"), (50, 90)


def _parse(arg):
    parsed = common.parse_arg(arg, "/x/configs/demo.py", kind=("gradual", KINDS), sparsity=(90, LEVELS),
                              ft=False, quick=False)
    return parsed.kind, parsed.sparsity, parsed.ft, parsed.quick


@pytest.mark.parametrize("arg, expected", [
    ("gradual_90", ("gradual", 90, False, False)),
    ("oneshot_50", ("oneshot", 50, False, False)),
    ("quick", ("gradual", 90, False, True)),
    ("gradual_90_quick", ("gradual", 90, False, True)),
    ("oneshot_50_ft_quick", ("oneshot", 50, True, True)),
    ("oneshot_50_quick_ft", ("oneshot", 50, True, True)),
    ("ft", ("gradual", 90, True, False)),
    ("quick,sparsity=50", ("gradual", 50, False, True)),
    ("sparsity=50,quick=true", ("gradual", 50, False, True)),
    ("kind=oneshot,sparsity=50,quick=False", ("oneshot", 50, False, False)),
    ("oneshot_50,quick", ("oneshot", 50, False, True)),
])
def test_parse_arg_fills_named_typed_fields(arg, expected):
    assert _parse(arg) == expected


def test_parse_arg_returns_a_config_dict_with_every_field():
    parsed = common.parse_arg("quick", "demo", level=(3, (1, 3)), quick=False, lr=0.5)
    assert (parsed.level, parsed.quick, parsed.lr) == (3, True, 0.5)
    assert parsed.to_dict() == {"level": 3, "quick": True, "lr": 0.5}
    assert common.parse_arg("quick,lr=0.25", "demo", quick=False, lr=0.5).lr == 0.25


def test_an_empty_arg_is_the_default_only_where_the_default_variant_has_no_name():
    assert common.parse_arg("", "demo", quick=False).to_dict() == {"quick": False}
    assert common.parse_arg("", "demo", kind=("", ("", "dense")), quick=False).to_dict() == {"kind": "", "quick": False}
    with pytest.raises(ValueError, match="name the variant"):
        _parse("")


@pytest.mark.parametrize("arg, why", [
    ("nonsense", "'nonsense' does not name the variant's parts KIND_SPARSITY"),
    ("gradual", "'gradual' does not name the variant's parts KIND_SPARSITY"),
    ("gradual_30", "sparsity 30 is not one of 50, 90"),
    ("pruned_90", "kind 'pruned' is not one of gradual, oneshot"),
    ("gradual_9_0", "sparsity takes a whole number, not '9_0'"),
    ("gradual_90_x", "sparsity takes a whole number, not '90_x'"),
    ("_quick", "'' does not name the variant's parts KIND_SPARSITY"),
    ("quick_quick", "quick given twice"),
    ("gradual_90,sparsity=50", "sparsity given twice"),
    ("quick=yes", "quick takes true or false, not 'yes'"),
    ("quick,lr=1", "'lr' is not a setting of this config"),
])
def test_a_bad_arg_names_the_config_the_arg_the_reason_and_the_accepted_forms(arg, why):
    with pytest.raises(ValueError) as error:
        _parse(arg)
    assert str(error.value) == (
        f"configs/demo.py: bad variant {arg!r} ({why}); accepted: KIND_SPARSITY[_ft][_quick] with KIND one of "
        "gradual, oneshot and SPARSITY one of 50, 90 (default gradual_90, so quick alone is gradual_90_quick); "
        "also as comma-separated key=value items over kind, sparsity, ft, quick (a flag alone is flag=true)")


def test_a_config_without_variant_parts_accepts_nothing_or_its_flags():
    with pytest.raises(ValueError) as error:
        common.parse_arg("full", "baseline", quick=False)
    assert str(error.value) == (
        "configs/baseline.py: bad variant 'full' ('full' is not a variant of this config); accepted: "
        "nothing (the default) or quick; also as comma-separated key=value items over quick (a flag alone is "
        "flag=true)")


def test_a_default_outside_its_choices_is_a_programming_error():
    with pytest.raises(TypeError, match="default 30"):
        common.parse_arg("quick", "demo", sparsity=(30, LEVELS), quick=False)


def _experiment_configs():
    names = (os.path.basename(f)[:-3] for f in glob.glob(os.path.join(ROOT, "configs", "*.py")))
    return sorted(n for n in names if n not in ("__init__", "default") and "common" not in n)


def _paper_variants():
    """Every NAME[:VARIANT] that a committed paper/results/**/results.json was produced with."""
    pairs = set()
    for path in glob.glob(os.path.join(ROOT, "paper", "results", "**", "results.json"), recursive=True):
        with open(path) as f:
            command = json.load(f)["command"]
        # experiments.reproduce's --configs=A,B; the analyses that read runs (omitted_class) take --config=A.
        found = re.search(r"--configs?=(\S+)", command)
        assert found, f"{path}: its command {command!r} names no config"
        for name in found.group(1).split(","):
            module, _, variant = name.partition(":")
            pairs.add((module, variant))
    return sorted(pairs)


def test_the_paper_results_cover_every_variant_form():
    pairs = _paper_variants()
    assert len(pairs) > 100 and {m for m, _ in pairs} <= set(_experiment_configs())
    assert {"", "fp_ft", "30_ft", "ptqmixed_6", "filters8_25", "smalldense_98"} <= {v for _, v in pairs}


@pytest.mark.parametrize("name, variant", _paper_variants())
def test_every_variant_in_paper_results_resolves(name, variant):
    module = importlib.import_module(f"configs.{name}")
    config = module.get_config(variant)
    assert config.dataset.name and config.model.name and config.train.num_steps >= 0
    quick = module.get_config(f"{variant}_quick" if variant else "quick")
    assert quick.train.num_steps <= config.train.num_steps


@pytest.mark.parametrize("name", _experiment_configs())
def test_bare_quick_is_the_default_variant_at_cpu_scale(name):
    module = importlib.import_module(f"configs.{name}")
    default = inspect.signature(module.get_config).parameters["arg"].default
    assert module.get_config().to_json() == module.get_config(default).to_json()
    spelled = module.get_config(f"{default}_quick" if default else "quick")
    assert module.get_config("quick").to_json() == spelled.to_json()
    assert module.get_config("quick=true").to_json() == spelled.to_json()
    with pytest.raises(ValueError, match=rf"configs/{name}\.py: bad variant 'nonsense' .*accepted: "):
        module.get_config("nonsense")


def test_key_value_settings_map_onto_the_named_variants():
    from configs import gordon2020_char_transformer, zhu2017_lenet300

    assert zhu2017_lenet300.get_config("quick,sparsity=75") == zhu2017_lenet300.get_config("gradual_75_quick")
    assert zhu2017_lenet300.get_config("kind=oneshot,sparsity=50") == zhu2017_lenet300.get_config("oneshot_50")
    assert gordon2020_char_transformer.get_config("ft,sparsity=50") == gordon2020_char_transformer.get_config("50_ft")


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_the_qat_recipe_is_chosen_from_a_baseline_that_never_saw_the_selection_split(model):
    from experiments import reproduce

    sweep = importlib.import_module(f"configs.ablation_bits_{model}")
    heldout = sweep.get_config("qat_32_heldout")
    assert heldout.init_from == sweep.PRETRAINED_HELDOUT
    assert heldout.dataset.selection_size == importlib.import_module(
        f"configs.baseline_{model}").get_config("heldout").dataset.selection_size > 0
    # the held-out baseline is a run reproduce knows how to make
    producer = reproduce.producer_of(sweep.PRETRAINED_HELDOUT.replace("{seed}", "1"),
                                     reproduce.experiment_configs())
    assert (producer.config, producer.seed) == (f"baseline_{model}:heldout", 1)
    reported = sweep.get_config("qat_3")  # reported runs: the full baseline, the recipe, no split held out
    assert (reported.init_from, reported.dataset.selection_size) == (sweep.PRETRAINED, 0)
    recipe = sweep.QAT_RECIPE
    assert (reported.optimizer.learning_rate, reported.optimizer.schedule) == (recipe["learning_rate"],
                                                                               recipe["schedule"])
    assert reported.train.num_steps == recipe["epochs"] * 468
    assert sweep.get_config("ptq_3").train.num_steps == 0


@pytest.mark.parametrize("model", ["lenet300", "lenet5"])
def test_deep_compression_prunes_at_a_chosen_scale_of_the_papers_rates_and_clusters_that_run(model):
    from configs.han2015_lenet300 import scaled_sparsity
    from experiments import reproduce, select

    han2015 = importlib.import_module(f"configs.han2015_{model}")
    dc = importlib.import_module(f"configs.han2016_deep_compression_{model}")
    finals = lambda c: {s["select"]: s["sparsity"]["sparsities"][-1] for s in c.compression.stages}
    # kept_scale 1 is the paper's rates, exactly han2015's `sgd` run.
    assert han2015.get_config("sgd,kept_scale=1").to_json() == han2015.get_config("sgd").to_json()
    assert finals(han2015.get_config("sgd")) == han2015.FINAL_SPARSITY
    # Each layer keeps K times the paper's kept fraction, at most all of it: 0.92 keeps 8 % -> 12 % at 1.5.
    assert scaled_sparsity({"a": 0.92, "b": 0.34}, 1.5) == {"a": 0.88, "b": 0.01}
    assert scaled_sparsity({"a": 0.34}, 2.0) == {"a": 0.0}
    pruned = reproduce.load_config(select.config_spec(f"han2016_deep_compression_{model}:pruned", ["kept_scale=1.5"]))
    assert finals(pruned) == scaled_sparsity(han2015.FINAL_SPARSITY, 1.5) != han2015.FINAL_SPARSITY
    assert dc.get_config("pruned").to_json() == han2015.get_config(f"sgd,kept_scale={dc.KEPT_SCALE}").to_json()
    # The clustered run starts from the pruned run of its own scale, a folder experiments.reproduce writes.
    names = reproduce.experiment_configs()
    for spec, scale in (("huffman", dc.KEPT_SCALE), ("clustered_quick,kept_scale=2", 2.0)):
        start = dc.get_config(spec).init_from.replace("{seed}", "1")
        producer = reproduce.producer_of(start, names)
        assert producer.seed == 1 and producer.config.startswith(f"han2016_deep_compression_{model}:pruned")
        assert finals(reproduce.load_config(producer.config)) == finals(
            dc.get_config(("pruned_quick" if "quick" in spec else "pruned") + f",kept_scale={scale}"))
    with pytest.raises(ValueError, match="kept_scale=0.0: each layer keeps kept_scale times"):
        dc.get_config("pruned,kept_scale=0")

