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


def test_select_trains_every_point_on_the_selection_split_and_writes_the_choice(tmp_path):
    def make():
        config = tiny_config(num_steps=4)
        config.dataset.selection_size = 64
        return config

    out = tmp_path / "choice.json"
    report = select.select(make, "tiny", {"optimizer.learning_rate": [1e-3, 3e-2]}, [0], "selection_loss",
                           str(tmp_path / "runs"), str(out))
    losses = [p["mean"] for p in report["points"]]
    assert report["chosen"] == report["points"][losses.index(min(losses))]["point"]
    assert json.loads(out.read_text())["chosen"] == report["chosen"]
    for point in report["points"]:  # each point a real run, on the selection split
        results = json.loads((tmp_path / "runs" / "tiny" / select.point_name(point["point"]) / "seed_0"
                              / "results.json").read_text())
        assert results["metrics"]["selection_loss"] == point["values"][0]


def test_a_config_without_a_selection_split_cannot_choose(tmp_path):
    with pytest.raises(ValueError, match="has no selection split, and choices need one"):
        select.select(lambda: tiny_config(num_steps=1), "tiny", {"optimizer.learning_rate": [1e-3]}, [0],
                      "selection_accuracy", str(tmp_path))
