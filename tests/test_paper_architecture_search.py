"""The report's Architecture search section (experiments/report/architecture_search.py) from hand-made results."""
from __future__ import annotations

import pytest

from experiments.report import architecture_search
from tests.test_build_paper import build, cells, latency_row, make_latency, make_result, table_row, write, write_latency

HAT = "wang2020_hat_char_transformer"
SEARCH_TABLE_INTRO = "evolution against random search with as many"  # where the budgets part ends


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
    data["latency"] = {"device_kind": "cpu", "measurements": 202, "heldout_mape": 0.06,
                       "repeat_spread": {"architectures": 21, "median": 0.15, "max": 0.4}}
    data["budget"] = {"by": "latency", "reference": 1000.0}  # the largest model's measured ms
    data["timing"].update(supernet_s=1500.0, latency_s=480.0, search_s=300.0, wall_s=2300.0)
    data["command"] = f"python -m experiments.reproduce --configs={HAT}:search --seeds=0,1,2"
    data["config"]["nas"] = {"population": 10, "generations": 20, "parents": 5, "mutations": 3, "score_batches": 4}
    return data


def lm(loss: float, steps: int = 2000) -> dict:
    data = make_result(metrics={"val_loss_nats": loss}, model="char_transformer", dataset="shakespeare")
    data["config"]["train"] = {"num_steps": steps, "batch_size": 32}
    return data


def test_kendall_tau_by_hand():
    assert architecture_search.kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert architecture_search.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert architecture_search.kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)


def test_searched_against_baselines_evolution_against_random_and_the_rank_check(tmp_path):
    results = tmp_path / "results"
    for seed in range(3):
        search = search_run(seed)
        if seed == 0:  # a search from before the latency table's spread was recorded
            del search["latency"]["repeat_spread"]
        else:  # the later searches export another narrow model at 25 %, not retrained
            search["exports"]["25_narrow"]["predicted_latency_ms"] = 150.0
        write(results, f"{HAT}_search/seed_{seed}", search)
        for b, (searched, layers, narrow) in {"25": (2.00, 2.10, 2.20), "50": (1.80, 1.79, 1.90),
                                              "75": (1.60, 1.70, 1.65)}.items():
            for kind, loss in (("evolution", searched), ("layers", layers), ("narrow", narrow)):
                if not (b == "25" and kind == "narrow" and seed > 0):
                    write(results, f"{HAT}_retrain_{b}_{kind}/seed_{seed}", lm(loss + 0.001 * seed))
        for i in range(4):  # retrained losses in the inherited ranking but one swapped pair
            write(results, f"{HAT}_retrain_sample_{i}/seed_{seed}", lm([3.0, 2.8, 2.9, 2.6][i], steps=1000))
    text = section(build(results, tmp_path / "paper"))
    budgets, search = text.split(SEARCH_TABLE_INTRO)
    # In brackets: each model's predicted latency as a share of the largest's, 250 of 1000 ms.
    # The narrow bracket is seed 0's share alone: the one search whose export was retrained.
    assert cells(table_row(budgets, "25 %")) == ["25 %", "2.001 ± 0.001 (25 %)", "2.101 ± 0.001 (25 %)",
                                                 "2.200 (25 %)", "against fewer layers: better"]
    assert cells(table_row(budgets, "50 %"))[4] == "against fewer layers: worse"  # 1.80 against 1.79, std 0.001
    assert ("beats the best hand-scaled baseline at 2 of 3 budgets with results (the claim: at least 2 of 3): "
            "holds") in text
    assert ("Evolution: a population of 10, 20 generations, each keeping the 5 best and adding 3 mutants, the rest "
            "crossovers; each candidate scored on 4 batches of the selection works.") in search
    evo = cells(table_row(search, "25 %"))
    assert evo[1:] == ["1.990 ± 0.010", "2.210 ± 0.010", "200", "3 of 3", "better"]
    assert "retraining from scratch (2000 steps of batch 32; mean ± std over seeds, each seed its own search)" in text
    assert ("retrained from scratch (1000 steps of batch 32; 1: the same ranking): 0.67 over 4 architectures "
            "(seed 0's search); 0.67 over 4 architectures (seed 1's search)") in text
    assert "| cost model's held-out error (MAPE) | 6.0 % |" in text
    assert ("| the same architecture measured again: spread (max - min) / median | 15 % median, 40 % at most "
            "(2 of 3 searches recorded it) |") in text


def test_a_timed_export_pairs_with_the_retrained_loss_of_its_own_seed():
    members = [(f"{HAT}_retrain_75_evolution/seed_{s}", lm(loss)) for s, loss in enumerate((1.58, 1.56, 1.59))]
    assert architecture_search.loss_of_timed(members, {"run": f"{HAT}_found_75_evolution/seed_1"}) == 1.56
    assert architecture_search.loss_of_timed(members[:1], {"run": f"{HAT}_found_75_evolution/seed_1"}) is None


def test_found_models_are_timed_beside_the_supernet_at_full_size(tmp_path):
    results = tmp_path / "results"
    search = search_run(0)
    search["budget"] = {"by": "flops", "reference": 4000.0}  # the cost model missed 10 %: exact FLOPs
    del search["exports"]["25_layers"]  # one full-size layer is over a quarter of the FLOPs: none fits
    write(results, f"{HAT}_search/seed_0", search)
    write(results, f"{HAT}_found_largest/seed_0", lm(2.5))
    write(results, f"{HAT}_found_25_evolution/seed_0", lm(2.5))
    write(results, f"{HAT}_retrain_50_narrow/seed_0", lm(1.9))
    # Before the latency run: the command, the largest model first, then each found model's run folder.
    before = section(build(results, tmp_path / "paper"))
    assert (f"--runs=runs/{HAT}_found_largest/seed_0,runs/{HAT}_found_25_evolution/seed_0,"
            f"runs/{HAT}_found_25_narrow/seed_0,") in before
    sizes = dict(params_total=875_520, weights_nonzero=0, bytes_exported=0)
    write_latency(results, "hat_latency", make_latency([
        latency_row(f"{HAT}_found_largest/seed_0", **sizes, flops=1000, ms1=2.0, ms128=80.0),
        latency_row(f"{HAT}_found_25_evolution/seed_0", **sizes, flops=250, ms1=1.0, ms128=20.0),
        latency_row(f"{HAT}_retrain_50_narrow/seed_0", **sizes, flops=500, ms1=1.6, ms128=40.0)]))
    text = section(build(results, tmp_path / "paper"))
    assert cells(table_row(text, "largest: the supernet at full size"))[4:] == [
        "2.000", "80.000", "1.00× (no difference)", "1.00× (no difference)"]
    assert cells(table_row(text, "25 %, searched"))[1:] == [f"`{HAT}_found_25_evolution`", "875,520", "250", "1.000",
                                                          "20.000", "2.00× (faster)", "4.00× (faster)"]
    # A retrained model stands for its found export: the same architecture, so the same shapes to time.
    assert cells(table_row(text, "50 %, narrower"))[1] == f"`{HAT}_retrain_50_narrow`"
    assert "Not in the latency run: 25 %, narrower, 50 %, searched" in text
    assert cells(table_row(text.split(SEARCH_TABLE_INTRO)[0], "25 %"))[2] == "none fits"
    budgets = text.split(SEARCH_TABLE_INTRO)[0]
    assert cells(table_row(budgets, "50 %"))[3] == "1.900 (50 %)"  # 2,000 of the largest's 4,000 FLOPs
    assert "on the measure the budgets were set on, here flops (" in text
    assert "![Loss against cost, with the Pareto front]" in text
    assert "hat_latency/latency.json" in text


def test_without_a_search_the_section_says_how_to_run_it(tmp_path):
    results = tmp_path / "results"
    write(results, "baseline_lenet300", make_result(0.89))
    assert section(build(results, tmp_path / "paper")).startswith("No architecture-search results")
