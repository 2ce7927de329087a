"""The report's One-shot section (experiments/report/one_shot.py) from hand-made results."""
from __future__ import annotations

import json

from tests.test_build_paper import build, cells, make_result, table_row, write

GPTQ = "frantar2023_gptq_char_transformer"
SPARSEGPT = "frantar2023_sparsegpt_char_transformer"
WANDA = "sun2024_wanda_char_transformer"


def section(report: str) -> str:
    return report.split("## One-shot compression\n\n", 1)[1].split("\n\n## ", 1)[0]


def lm_run(loss: float, calibration: dict | None = None) -> dict:
    data = make_result(metrics={"val_loss_nats": loss}, model="char_transformer", dataset="shakespeare")
    if calibration:
        data["calibration"] = calibration
    data["command"] = "python -m experiments.reproduce --configs=... --seeds=0,1,2"
    return data


def test_gptq_against_rtn_and_the_pruning_ordering_by_the_separation_rule(tmp_path):
    results = tmp_path / "results"
    write(results, "baseline_char_transformer", lm_run(1.477))
    for seed, (g, r, a) in enumerate([(1.550, 1.714, 1.540), (1.552, 1.712, 1.541), (1.548, 1.716, 1.539)]):
        write(results, f"{GPTQ}_gptq_3_pc/seed_{seed}",
              lm_run(g, {"batches": 8, "init_s": 40.0 + seed, "statistics_peak_bytes": 4 * 512 * 512 * 2}))
        write(results, f"{GPTQ}_rtn_3_pc/seed_{seed}", lm_run(r))
        write(results, f"{GPTQ}_gptq_3_pc_act/seed_{seed}", lm_run(a))
        # 50 %: SparseGPT best; Wanda and magnitude within each other's noise.
        write(results, f"{SPARSEGPT}_sparsegpt_50/seed_{seed}", lm_run(1.60 + 0.001 * seed))
        write(results, f"{WANDA}_wanda_50/seed_{seed}", lm_run(1.70 + 0.01 * seed))
        write(results, f"{SPARSEGPT}_magnitude_50/seed_{seed}", lm_run(1.71 - 0.01 * seed))
    text = section(build(results, tmp_path / "paper"))
    row = cells(table_row(text, "3 bits, per channel"))
    assert row[1:5] == ["1.550 ± 0.002", "1.540 ± 0.001", "1.714 ± 0.002", "better"]
    assert cells(table_row(text, "4 bits, per channel"))[1] == "—"
    transformer, lenet = text.split("LeNet-300-100 on Fashion-MNIST", 1)
    assert cells(table_row(transformer, "50 %"))[1:] == ["1.601 ± 0.001 (3)", "1.710 ± 0.010 (3)",
                                                         "1.700 ± 0.010 (3)", "SparseGPT > magnitude ≈ Wanda"]
    assert cells(table_row(transformer, "2:4"))[4] == "—" and cells(table_row(lenet, "50 %"))[1] == "—"
    assert ("each one-shot method better than magnitude pruning: SparseGPT better at 1, not separated at 0, worse at 0 "
            "of 1 levels (holds); Wanda better at 0, not separated at 1, worse at 0 of 1 levels (not separated).") in transformer
    assert "(dense: 1.477 nats)" in text and "Sun et al. 2024" in text
    cost = cells(table_row(text, "GPTQ, 4 bits, groups of 32"))
    assert cost[1] == "—"  # the cost table reads the 4-bit runs, which have not run here
    assert "Not run yet: `fan2020_layerdrop_char_transformer_layerdrop_all`" in text
    assert "seconds per layer at GPT-2 small's shapes have not been measured yet" in text
    (results / "benchmark_one_shot").mkdir()
    (results / "benchmark_one_shot" / "benchmark.json").write_text(json.dumps({"device": "cpu", "results": [
        {"solver": "gptq 4 bits, groups of 128", "layer": "ffn_out (3072 x 768)", "median_s": 2.0,
         "layers_in_gpt2_small": 12, "gpt2_small_s": 24.0}]}))
    text = section(build(results, tmp_path / "paper2"))
    assert cells(table_row(text, "gptq 4 bits, groups of 128"))[1:] == ["ffn_out (3072 x 768)", "2.00", "12", "24"]


def test_without_one_shot_results_the_section_is_one_line(tmp_path):
    results = tmp_path / "results"
    write(results, "baseline_lenet300", make_result(0.89))
    text = section(build(results, tmp_path / "paper"))
    assert text.startswith("No one-shot results (`frantar2023_sparsegpt_char_transformer_*`")


LAYERDROP = "fan2020_layerdrop_char_transformer"


def layerdrop_selection(dropped: list[int], losses: list[float]) -> dict:
    """paper/selection's record of the LayerDrop subset choice, as experiments.select writes it."""
    key = "compression.stages.0.drop"
    return {"config": f"{LAYERDROP}_layerdrop_even", "metric": "selection_loss_nats", "higher_is_better": False,
            "command": "python -m experiments.select --config=fan2020_layerdrop_char_transformer:layerdrop_even ...",
            "grid": {key: [[2, 3], dropped]}, "chosen": {key: dropped},
            "points": [{"point": {key: [2, 3]}, "mean": 2.2, "values": [2.2], "seeds": [0, 1, 2],
                        "reported": {"a": [{"val_loss_nats": 2.3}]}},
                       {"point": {key: dropped}, "mean": 2.0, "values": [2.0], "seeds": [0, 1, 2],
                        "reported": {f"seed_{s}": [{"val_loss_nats": v}] for s, v in enumerate(losses)}}]}


def test_layerdrop_rows_their_verdicts_and_the_subset_chosen_on_the_selection_works(tmp_path):
    results = tmp_path / "results"
    losses = {"layerdrop_all": 1.50, "layerdrop_even": 1.90, "layerdrop_bottom": 2.10, "baseline_all": 1.48,
              "baseline_even": 2.60, "baseline_bottom": 2.09, "shallow": 1.70}
    for seed in range(3):
        for variant, loss in losses.items():
            spread = 0.05 if variant == "baseline_bottom" else 0.001
            write(results, f"{LAYERDROP}_{variant}/seed_{seed}", lm_run(loss + spread * seed))
    text = section(build(results, tmp_path / "paper"))
    assert cells(table_row(text, "LayerDrop, layers 0 and 2 kept"))[1:] == ["1.901 ± 0.001", "3"]
    assert ("LayerDrop with layers 0 and 2 kept is worse than the 2-layer model trained from scratch (1.901 "
            "against 1.701 nats); LayerDrop with layers 0 and 2 kept is better than the baseline with the same "
            "layers removed (1.901 against 2.601 nats)") in text
    assert ("LayerDrop with layers 0 and 1 kept is not separated from the baseline with the same layers removed "
            "(2.101 against 2.140 nats)") in text
    assert "The subset chosen on the selection works: not chosen yet" in text
    assert "**fails** here: worse at 2 of the 2 kept subsets above" in text

    # Every pruned subset as good as the 2-layer model from scratch: the claim holds.
    for seed in range(3):
        write(results, f"{LAYERDROP}_shallow/seed_{seed}", lm_run(2.30 + 0.001 * seed))
    assert "**holds** here: worse at 0 of the 2 kept subsets" in section(build(results, tmp_path / "paper_holds"))
    for seed in range(3):
        write(results, f"{LAYERDROP}_shallow/seed_{seed}", lm_run(1.70 + 0.001 * seed))

    # Chosen: layers 1 and 2 kept (0 and 3 dropped), which no baseline row removes.
    (tmp_path / "selection").mkdir()
    (tmp_path / "selection" / f"{LAYERDROP}_layerdrop_even.json").write_text(
        json.dumps(layerdrop_selection([0, 3], [1.60, 1.62, 1.64])))
    text = section(build(results, tmp_path / "paper2"))
    row = cells(table_row(text, "LayerDrop, layers 1 and 2 kept: the subset chosen on the selection works"))
    assert row[1:] == ["1.620 ± 0.020", "3"]
    assert ("LayerDrop with the chosen layers (1 and 2) kept is better than the 2-layer model trained from "
            "scratch (1.620 against 1.701 nats).") in text
    assert "**compression.stages.0.drop = [0, 3]**" in text and "not chosen yet" not in text

    assert "**holds** here: worse at 2 of the 3 kept subsets" not in text
    assert "**fails** here: worse at 2 of the 3 kept subsets above" in text

    # Chosen: every other layer, a row of its own already compared: its row is shown, not counted twice.
    (tmp_path / "selection" / f"{LAYERDROP}_layerdrop_even.json").write_text(
        json.dumps(layerdrop_selection([1, 3], [1.90, 1.91, 1.92])))
    text = section(build(results, tmp_path / "paper3"))
    row = cells(table_row(text, "LayerDrop, layers 0 and 2 kept: the subset chosen on the selection works"))
    assert row[1:] == ["1.910 ± 0.010", "3"]
    assert "chosen layers" not in text and "**fails** here: worse at 2 of the 2 kept subsets above" in text
