"""The step benchmark runs end to end on synthetic data (a smoke test: no timing is asserted).

A time per step is a difference of two loop times (benchmark_step's
docstring); the few steps a smoke test can afford do not stand clear of the
jitter of once-per-loop costs, so timings are checked for existence only.
"""
import json
import math

import pytest

from experiments import benchmark_step


def _check(result, repeats):
    assert len(result["driver_ms_per_step"]) == len(result["hand_ms_per_step"]) == repeats
    # Times are differences of two loop times (see the module docstring): with the few steps a
    # smoke test can afford, jitter may make one negative on a loaded machine, so only check they exist.
    assert all(math.isfinite(ms) for ms in result["driver_ms_per_step"] + result["hand_ms_per_step"])
    assert math.isfinite(result["ratio"])
    assert result["driver_compiles"] == 1 and result["hand_compiles"] == 1
    assert len(result["checkpoint_ms_per_step"]) == repeats
    assert all(math.isfinite(ms) for ms in result["checkpoint_ms_per_step"])
    json.dumps(result)  # what --out writes


def test_the_time_cadence_checkpoints_hold_the_driver_is_measured():
    config, dataset = benchmark_step.benchmark_config("lenet300")
    config.train.checkpoint_every = 10  # the long call saves 10 times more than the short one
    result = benchmark_step.benchmark_model(config, dataset, name="lenet300", repeats=2, steps=100,
                                            progress=False)
    assert result["checkpoints_timed"] == 10
    # Each save holds the loop for at least the copy of the state to the host: never nothing.
    assert all(ms > 0 for ms in result["checkpoint_ms_per_step"])


def test_lenet300_driver_and_hand_loop_give_positive_times_and_a_ratio():
    config, dataset = benchmark_step.benchmark_config("lenet300")
    assert config.train.batch_size == 128 and dict(config.mesh)["data"] == 1
    result = benchmark_step.benchmark_model(config, dataset, name="lenet300", repeats=1, steps=100,
                                            progress=False)
    _check(result, 1)
    assert result["model"] == "lenet300" and result["steps"] == 100 and result["base_steps"] == 2


def test_char_transformer_language_model_path_runs():
    config, dataset = benchmark_step.benchmark_config("char_transformer")
    assert dataset.kind == "language_model"
    # The benchmark's own config, shrunk so the test takes seconds on a CPU.
    config.model.update({"width": 32, "num_layers": 1, "num_heads": 2, "head_dim": 16, "ffn_dim": 64,
                         "max_len": 16})
    config.dataset.seq_len = 16
    config.train.batch_size = 8
    result = benchmark_step.benchmark_model(config, dataset, repeats=1, steps=100, progress=False)
    _check(result, 1)


def test_lenet5_batch_norm_row_carries_batch_stats_in_both_loops():
    config, dataset = benchmark_step.benchmark_config("lenet5_bn")
    assert config.model.batch_norm
    config.model.update({"conv_features": (4, 8), "dense_features": 16})
    config.train.batch_size = 16
    result = benchmark_step.benchmark_model(config, dataset, name="lenet5_bn", repeats=1, steps=20, progress=False)
    _check(result, 1)
    assert result["model"] == "lenet5_bn"


def test_steps_are_rounded_to_whole_log_intervals_when_they_span_one():
    assert benchmark_step.timed_steps(2.5, 4.0, 200) == (200, 1600)  # 1600 ms / 2.5 ms = 1600
    assert benchmark_step.timed_steps(700.0, 6.0, 100) == (2, 9)
    assert benchmark_step.timed_steps(float("nan"), 6.0, 100, steps=250) == (100, 300)


def test_unknown_model_is_an_error():
    with pytest.raises(ValueError, match="unknown model"):
        benchmark_step.benchmark_config("resnet")


def test_bfloat16_row_runs_the_driver_and_the_hand_loop():
    config, dataset = benchmark_step.benchmark_config("char_transformer_bf16")
    assert config.precision.compute == "bfloat16"
    config.model.update({"width": 32, "num_layers": 1, "num_heads": 2, "head_dim": 16, "ffn_dim": 64,
                         "max_len": 16})
    config.dataset.seq_len = 16
    config.train.batch_size = 8
    result = benchmark_step.benchmark_model(config, dataset, name="char_transformer_bf16", repeats=1, steps=10,
                                            progress=False)
    _check(result, 1)


def test_gpt2_rows_use_the_gpt2_small_config_on_one_device():
    full, _ = benchmark_step.benchmark_config("gpt2_small")
    quick, dataset = benchmark_step.benchmark_config("gpt2_small_quick")
    assert (full.dataset.seq_len, full.train.batch_size) == (1024, 16)
    assert (quick.dataset.seq_len, quick.train.batch_size) == (128, 8)
    for config in (full, quick):
        assert config.model.width == 768 and config.precision.compute == "bfloat16"
        assert dict(config.mesh)["data"] == 1 and dict(config.mesh)["model"] == 1
    assert dataset.num_classes == 50257


def test_each_repetition_starts_with_the_next_loop_in_turn():
    calls = []

    def loop(name):
        def run(steps):
            calls.append(name)
            return 0.001 * steps
        return run

    per_step = benchmark_step.interleaved_ms_per_step({"a": loop("a"), "b": loop("b"), "c": loop("c")},
                                                      base=2, steps=4, repeats=3)
    # Each loop runs its short and its long timing back to back; the first loop rotates.
    assert calls == ["a", "a", "b", "b", "c", "c", "b", "b", "c", "c", "a", "a", "c", "c", "a", "a", "b", "b"]
    assert per_step == {name: [1.0, 1.0, 1.0] for name in "abc"}


def test_rows_are_written_into_a_results_folder_that_does_not_exist_yet(tmp_path):
    # A benchmark measures for minutes before it writes; a missing folder must not lose that.
    out = tmp_path / "results" / "benchmark_x" / "benchmark.json"
    benchmark_step.write_rows(str(out), [{"model": "m", "ratio": 1.5}])
    written = json.loads(out.read_text())
    assert written["results"] == [{"model": "m", "ratio": 1.5}] and written["device"] and written["jax"]
