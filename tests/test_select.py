"""Choices on the selection split (experiments/select.py): every grid point trained, the best kept."""
import json

import pytest

from experiments import select
from tests.helpers import tiny_config


def test_grid_points_names_and_the_choice_by_hand():
    grid = select.parse_grid(["optimizer.learning_rate=0.1,0.01", "optimizer.weight_decay=0,1e-4"])
    assert grid == {"optimizer.learning_rate": [0.1, 0.01], "optimizer.weight_decay": [0, 1e-4]}
    assert select.points(grid)[1] == {"optimizer.learning_rate": 0.1, "optimizer.weight_decay": 1e-4}
    assert select.point_name(select.points(grid)[0]) == "optimizer.learning_rate=0.1,optimizer.weight_decay=0"
    scored = [{"mean": 0.5}, {"mean": 0.7}, {"mean": 0.7}, {"mean": 0.2}]
    assert select.choose(scored, higher_is_better=True) == 1  # the first of equal bests
    assert select.choose(scored, higher_is_better=False) == 3
    with pytest.raises(ValueError, match="key=v1,v2"):
        select.parse_grid(["optimizer.learning_rate"])
    # JSON lists keep their commas (which layers a layer_drop stage drops, say).
    grid = select.parse_grid(["compression.stages.0.drop=[0,1],[1,3],[]"])
    assert grid == {"compression.stages.0.drop": [[0, 1], [1, 3], []]}
    assert select.point_name(select.points(grid)[1]) == "compression.stages.0.drop=[1,3]"
    with pytest.raises(ValueError, match="unbalanced brackets"):
        select.parse_grid(["compression.stages.0.drop=[0,1"])


def test_a_config_without_a_selection_split_cannot_choose(tmp_path):
    with pytest.raises(ValueError, match="has no selection split, and choices need one"):
        select.select({"tiny": lambda: tiny_config(num_steps=1)}, "tiny", {"optimizer.learning_rate": [1e-3]},
                      [0], "selection_accuracy", str(tmp_path))


def test_select_trains_every_point_under_every_config_on_the_selection_split_and_keeps_the_best_mean(tmp_path):
    def make(num_steps):
        def config():
            c = tiny_config(num_steps=num_steps)
            c.dataset.selection_size = 64
            return c
        return config

    out = tmp_path / "choice.json"
    report = select.select({"short": make(2), "long": make(6)}, "both", {"optimizer.learning_rate": [1e-3, 3e-2]},
                           [3], "selection_loss", str(tmp_path / "runs"), str(out))
    assert report["configs"] == ["short", "long"]
    losses = [p["mean"] for p in report["points"]]
    assert report["chosen"] == report["points"][losses.index(min(losses))]["point"]
    assert json.loads(out.read_text())["chosen"] == report["chosen"]
    for point in report["points"]:  # each point a real run per config, on the selection split
        short, long = (json.loads((tmp_path / "runs" / folder / select.point_name(point["point"]) / "seed_3"
                                   / "results.json").read_text())["metrics"]["selection_loss"]
                       for folder in ("short", "long"))
        assert point["per_config"] == {"short": [short], "long": [long]}
        assert set(point["reported"]["short"][0]) == {"test_accuracy", "test_loss"}  # never the selection split
        assert point["values"] == pytest.approx([(short + long) / 2])
        assert point["mean"] == pytest.approx((short + long) / 2)
    assert select.choice_name(["han2015_lenet5:sgd_dense"]) == "han2015_lenet5_sgd_dense"
    with pytest.raises(ValueError, match="give --name"):
        select.choice_name(["a:x", "a:y"])


def test_a_point_whose_training_diverges_is_kept_as_diverged_and_never_chosen(tmp_path):
    def config():
        c = tiny_config(num_steps=4)
        c.dataset.selection_size = 64
        c.optimizer.name = "sgd"
        return c

    report = select.select({"tiny": config}, "tiny", {"optimizer.learning_rate": [1e-3, 1e12]}, [0],
                           "selection_accuracy", str(tmp_path / "runs"))
    good, bad = report["points"]
    assert bad["mean"] is None and "non-finite" in bad["diverged"] and good["mean"] is not None
    assert report["chosen"] == {"optimizer.learning_rate": 1e-3}
    with pytest.raises(FloatingPointError, match="every point of the grid diverged"):
        select.select({"tiny": config}, "tiny", {"optimizer.learning_rate": [1e12]}, [1], "selection_accuracy",
                      str(tmp_path / "runs"))


def test_the_smallest_point_within_a_distance_of_the_best_is_chosen_when_asked():
    scored = [{"mean": 0.90, "size": 400}, {"mean": 0.895, "size": 300}, {"mean": 0.88, "size": 200},
              {"mean": None, "size": None}, {"mean": 0.895, "size": 300}]
    assert select.choose(scored, True) == 0
    # 0.9 - 0.895 is within half a point; 0.88 is not; equal sizes: the first in grid order.
    assert select.choose(scored, True, select.SmallestWithin("compression.bytes_exported", 0.005)) == 1
    assert select.choose(scored, True, select.SmallestWithin("compression.bytes_exported", 0.02)) == 2
    assert select.choose(scored, True, select.SmallestWithin("compression.bytes_exported", 0.0)) == 0
    with pytest.raises(ValueError, match="--within must be a distance"):
        select.SmallestWithin("compression.bytes_exported", -0.1)
    with pytest.raises(ValueError, match="--within must be a distance"):
        select.SmallestWithin("compression.bytes_exported", None)
    with pytest.raises(ValueError, match="--smallest needs a results.json field"):
        select.SmallestWithin("", 0.01)


def test_select_records_each_points_size_and_chooses_by_the_rule(tmp_path):
    def config():
        c = tiny_config(num_steps=2)
        c.dataset.selection_size = 64
        return c

    grid = {"train.num_steps": [4, 2]}
    loose = select.select({"tiny": config}, "tiny", grid, [0], "selection_loss", str(tmp_path / "runs"),
                          rule=select.SmallestWithin("timing.steps_trained", 100.0))
    assert [p["size"] for p in loose["points"]] == [4.0, 2.0]
    assert loose["chosen"] == {"train.num_steps": 2} and loose["rule"] == {"smallest": "timing.steps_trained",
                                                                           "within": 100.0}
    assert "size" not in loose["points"][0]["reported"]["tiny"][0]
    # The same finished runs, read back: within 0 of the best is the best.
    strict = select.select({"tiny": config}, "tiny", grid, [0], "selection_loss", str(tmp_path / "runs"),
                           rule=select.SmallestWithin("timing.steps_trained", 0.0))
    losses = [p["mean"] for p in strict["points"]]
    assert strict["chosen"] == strict["points"][losses.index(min(losses))]["point"]
    with pytest.raises(ValueError, match="has no number at 'compression.no_such_field'"):
        select.select({"tiny": config}, "tiny", grid, [0], "selection_loss", str(tmp_path / "runs"),
                      rule=select.SmallestWithin("compression.no_such_field", 0.0))


def test_a_grid_key_arg_dot_name_sets_the_configs_own_argument(tmp_path):
    assert select.config_spec("han2016_x:pruned", ["kept_scale=0.5"]) == "han2016_x:pruned,kept_scale=0.5"
    assert select.config_spec("baseline_x", ["quick=true"]) == "baseline_x:quick=true"
    assert select.config_spec("baseline_x:quick", []) == "baseline_x:quick"
    given = []

    def config(args=()):
        given.append(list(args))
        c = tiny_config(num_steps=int(dict(a.split("=") for a in args).get("steps", 2)))
        c.dataset.selection_size = 64
        return c

    report = select.select({"tiny": config}, "tiny", {"arg.steps": [2, 3], "optimizer.learning_rate": [1e-3]}, [0],
                           "selection_loss", str(tmp_path / "runs"))
    assert given == [["steps=2"], ["steps=3"]]
    assert [p["point"] for p in report["points"]] == [{"arg.steps": 2, "optimizer.learning_rate": 1e-3},
                                                      {"arg.steps": 3, "optimizer.learning_rate": 1e-3}]
    finished = json.loads((tmp_path / "runs" / "tiny" / "arg.steps=3,optimizer.learning_rate=0.001" / "seed_0"
                           / "results.json").read_text())
    assert finished["timing"]["steps_trained"] == 3
