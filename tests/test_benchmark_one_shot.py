"""The one-shot solvers' timing (experiments/benchmark_one_shot.py): what it times, on small shapes."""
from experiments import benchmark_one_shot


def test_each_solver_is_timed_per_shape_and_scaled_to_gpt2_smalls_layer_count(monkeypatch):
    monkeypatch.setattr(benchmark_one_shot, "SHAPES", (("small", 128, 16, 48), ("wide", 128, 64, 12)))
    rows = benchmark_one_shot.benchmark(repeats=2, rows=256)
    assert [(r["solver"], r["layer"]) for r in rows] == [(s, n) for s in benchmark_one_shot.SOLVERS
                                                          for n in ("small", "wide")]
    for r in rows:
        assert len(r["seconds"]) == 2 and all(t > 0 for t in r["seconds"])
        assert r["gpt2_small_s"] == r["median_s"] * r["layers_in_gpt2_small"]
