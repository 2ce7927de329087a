"""The report's Architecture search section (experiments/report/architecture_search.py) from hand-made results."""
from __future__ import annotations

import pytest

from experiments.report import architecture_search
from tests.test_build_paper import build, cells, make_result, table_row, write

HAT = "wang2020_hat_char_transformer"


def section(report: str) -> str:
    return report.split("## Architecture search\n\n", 1)[1].split("\n\n## ", 1)[0]


def search_run(seed: int) -> dict:
    data = make_result(metrics={"inherited_loss_25_evolution": 2.0}, model="char_transformer", dataset="shakespeare")
    entry = lambda loss, ms: {"arch": {"width": 64, "heads": [1], "ffn": [128]}, "inherited_loss": loss,
                              "predicted_latency_ms": ms, "params": 1000, "flops": 2000}
    data["searches"] = {b: {"evolution": {**entry(2.0 - 0.01 * seed, 10.0 * int(b)), "evaluations": 200},
                            "random": {**entry(2.2 + 0.01 * seed, 9.0 * int(b)), "evaluations": 200}}
                        for b in ("25", "50", "75")}
    data["exports"] = {**{f"{b}_{k}": entry(2.0, 10.0 * int(b)) for b in ("25", "50", "75")
                          for k in ("evolution", "layers", "narrow")},
                       **{f"sample_{i}": entry(3.0 - 0.1 * i, 5.0) for i in range(4)}}
    data["latency"] = {"device_kind": "cpu", "measurements": 202, "heldout_mape": 0.06}
    data["budget"] = {"by": "latency"}
    data["timing"].update(supernet_s=1500.0, latency_s=480.0, search_s=300.0, wall_s=2300.0)
    data["command"] = f"python -m experiments.reproduce --configs={HAT}:search --seeds=0,1,2"
    return data


def lm(loss: float) -> dict:
    return make_result(metrics={"val_loss_nats": loss}, model="char_transformer", dataset="shakespeare")


def test_kendall_tau_by_hand():
    assert architecture_search.kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert architecture_search.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert architecture_search.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_searched_against_baselines_evolution_against_random_and_the_rank_check(tmp_path):
    results = tmp_path / "results"
    for seed in range(3):
        write(results, f"{HAT}_search/seed_{seed}", search_run(seed))
        for b, (searched, layers, narrow) in {"25": (2.00, 2.10, 2.20), "50": (1.80, 1.79, 1.90),
                                              "75": (1.60, 1.70, 1.65)}.items():
            for kind, loss in (("evolution", searched), ("layers", layers), ("narrow", narrow)):
                write(results, f"{HAT}_retrain_{b}_{kind}/seed_{seed}", lm(loss + 0.001 * seed))
        for i in range(4):  # retrained losses in the inherited ranking but one swapped pair
            write(results, f"{HAT}_retrain_sample_{i}/seed_{seed}", lm([3.0, 2.8, 2.9, 2.6][i]))
    text = section(build(results, tmp_path / "paper"))
    budgets, search = text.split("one search per seed:")
    assert cells(table_row(budgets, "25 %")) == ["25 %", "2.001 ± 0.001 (250 ms)", "2.101 ± 0.001 (250 ms)",
                                                 "2.201 ± 0.001 (250 ms)", "better than fewer layers"]
    assert cells(table_row(budgets, "50 %"))[4] == "worse than fewer layers"  # 1.80 against 1.79, std 0.001
    assert "beats the best hand-scaled baseline at 2 of 3 budgets with results (the claim: at least 2 of 3): holds" in text
    evo = cells(table_row(search, "25 %"))
    assert evo[1:] == ["1.990 ± 0.010", "2.210 ± 0.010", "200", "better"]
    assert "Kendall's tau" in text and "0.67 over 4 architectures" in text
    assert "| cost model's held-out error (MAPE) | 6.0 % |" in text


def test_without_a_search_the_section_says_how_to_run_it(tmp_path):
    results = tmp_path / "results"
    write(results, "baseline_lenet300", make_result(0.89))
    assert section(build(results, tmp_path / "paper")).startswith("No architecture-search results")
