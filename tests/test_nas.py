"""Architecture search (experiments/nas.py): the SuperTransformer's training and the inherited-weight score."""
import json
import os
import signal

import jax
import numpy as np
import pytest

from compression import supernet as sn
from experiments import models, nas, train
from tests.helpers import tiny_lm_config

SUPERNET = {"name": "char_transformer", "max_len": 8, "width": 32, "num_layers": 3, "num_heads": 4,
            "head_dim": 8, "ffn_dim": 32, "embed_dim": None, "dropout_rate": 0.0}
SPACE = {"depths": [1, 2, 3], "heads": [2, 4], "ffn": [16, 32], "widths": [16, 32]}


def config(num_steps=6, sampling="sandwich"):
    c = tiny_lm_config(dict(SUPERNET), train_size=4096, eval_size=256, num_steps=num_steps, log_every=3,
                       checkpoint_every=3)
    c.dataset.selection_size = 512
    c.nas = {"space": SPACE, "sampling": sampling}
    return c


def test_architectures_follow_seed_and_step_and_sandwich_cycles_largest_smallest_random():
    space = sn.SearchSpace(**{k: tuple(v) for k, v in SPACE.items()})
    assert nas.architecture_at(space, 0, 0, "sandwich") == space.largest()
    assert nas.architecture_at(space, 0, 4, "sandwich") == space.smallest()
    assert nas.architecture_at(space, 0, 5, "uniform") == nas.architecture_at(space, 0, 5, "uniform")
    assert len({nas.architecture_at(space, 0, s, "uniform") for s in range(30)}) > 10
    with pytest.raises(ValueError, match="sampling 'random' is not one of"):
        nas.architecture_at(space, 0, 0, "random")
    bad = config()
    bad.nas.budget_by = "energy"
    with pytest.raises(ValueError, match="nas.budget_by 'energy' is not one of"):
        nas.build_supernet(bad)


def test_the_supernet_trains_one_compile_per_width_and_resumes_to_the_same_weights(tmp_path):
    net = nas.build_supernet(config())
    out = nas.train_supernet(net, str(tmp_path / "a"), progress=False)
    assert set(out["widths"]) == {16, 32}
    assert out["compiles"] == 2  # one train step per width bucket, whatever heads, FFN widths and depth
    # Three steps, then three more from the checkpoint: the same weights as six in a row.
    first = nas.train_supernet(nas.build_supernet(config(3)), str(tmp_path / "b"), progress=False)
    del first
    resumed = nas.train_supernet(nas.build_supernet(config(6)), str(tmp_path / "b"), progress=False)
    for a, b in zip(jax.tree_util.tree_leaves(out["state"]["params"]),
                    jax.tree_util.tree_leaves(resumed["state"]["params"])):
        np.testing.assert_array_equal(a, b)


def test_sigterm_checkpoints_the_supernet_step_reached_and_the_rerun_ends_as_an_uninterrupted_run(
        tmp_path, monkeypatch, capsys):
    c = config(num_steps=4)
    c.train.checkpoint_every = 100  # no cadence save before the signal
    straight = nas.train_supernet(nas.build_supernet(c), str(tmp_path / "straight"), progress=False)
    batch_of = nas.data_lib.train_batch

    def batches(dataset, seed, step, *args):
        if step == 2:  # asked for once steps 0 and 1 have been applied
            os.kill(os.getpid(), signal.SIGTERM)
        return batch_of(dataset, seed, step, *args)

    monkeypatch.setattr(nas.data_lib, "train_batch", batches)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(train.Terminated, match="SIGTERM"):
        nas.train_supernet(nas.build_supernet(c), str(tmp_path / "stopped"), progress=False)
    assert signal.getsignal(signal.SIGTERM) is before
    assert "the supernet stopped at step 2 of 4" in capsys.readouterr().out
    first_s = json.loads((tmp_path / "stopped" / "timing.json").read_text())["wall_s"]
    monkeypatch.setattr(nas.data_lib, "train_batch", batch_of)
    resumed = nas.train_supernet(nas.build_supernet(c), str(tmp_path / "stopped"), progress=False)
    assert len(resumed["widths"]) == 2  # steps 2 and 3 only
    assert resumed["wall_s"] > first_s  # the whole cost, both invocations
    for a, b in zip(jax.tree_util.tree_leaves(straight["state"]), jax.tree_util.tree_leaves(resumed["state"])):
        np.testing.assert_array_equal(a, b)


def test_the_inherited_loss_is_the_sliced_standalone_models_loss():
    net = nas.build_supernet(config())
    params = nas.init_state(net)["params"]
    batches = nas.fixed_batches(net, 2)
    rng = np.random.default_rng(0)
    for arch in [net.space.largest(), net.space.smallest(), *(net.space.sample(rng) for _ in range(3))]:
        model = models.build_model(arch.model_config(SUPERNET), net.dataset.num_classes)
        sliced = sn.slice_params(params, arch)
        sums = sum(np.asarray(train.cross_entropy(model.apply({"params": sliced}, b["inputs"]), b["targets"],
                                                  b["mask"]))[[0, 2]] for b in batches)
        assert nas.inherited_loss(net, params, arch, batches) == pytest.approx(sums[0] / sums[1], abs=1e-5)
    assert net.compiles() == 2  # the evaluation step of each width, once


def test_exact_costs_count_the_standalone_models_parameters_and_matmul_flops_by_hand():
    arch = sn.Architecture(16, (2, 4), (16, 32))
    costs = nas.exact_costs(arch, SUPERNET, 20, 8)
    t, w, hd, v, ln = 8, 16, 8, 20, 8  # tokens, width, head_dim, vocabulary, max_len
    layer_params = lambda h, f: 2 * 2 * w + 3 * (w * h * hd + h * hd) + h * hd * w + w + w * f + f + f * w + w
    assert costs["params"] == v * w + ln * w + 2 * w + w * v + v + layer_params(2, 16) + layer_params(4, 32)
    layer_flops = lambda h, f: 2 * t * (4 * w * h * hd + 2 * w * f) + 2 * 2 * t * t * h * hd
    assert costs["flops"] == layer_flops(2, 16) + layer_flops(4, 32) + 2 * t * w * v


def test_the_latency_model_fits_a_linear_cost_and_refuses_a_table_from_another_device():
    rng = np.random.default_rng(0)
    space = sn.SearchSpace(**{k: tuple(v) for k, v in SPACE.items()})
    truth = np.array([0.5, 0.2, 0.01, 0.001, 0.002, 0.0001, 0.003, 0.01])
    table = [{"arch": a.as_dict(), "latency_ms": float(nas.latency_features(a) @ truth)}
             for a in (space.sample(rng) for _ in range(40))]
    model = nas.fit_latency_model(table, "cpu", 8, 8)
    assert model.heldout_mape < 1e-9
    arch = space.largest()
    assert model.predict(arch) == pytest.approx(float(nas.latency_features(arch) @ truth))
    model.check_device("cpu")
    with pytest.raises(ValueError, match="measured on 'cpu' but the search targets 'NVIDIA H100'"):
        model.check_device("NVIDIA H100")
    with pytest.raises(ValueError, match="at least 10 measured architectures"):
        nas.fit_latency_model(table[:5], "cpu", 8, 8)
    net = nas.build_supernet(config())
    params = nas.init_state(net)["params"]
    assert nas.measure_latency_ms(space.smallest(), SUPERNET, params, net.dataset.num_classes, 2, 8, repeats=3) > 0


def hat_config():
    c = config(num_steps=4)
    c.nas.update(latency_samples=10, latency_repeats=2, budget_fractions=[0.5, 0.9], score_batches=1,
                 population=4, generations=2, parents=2, mutations=1, mutation_probability=0.5, rank_samples=3)
    return c


def test_hat_end_to_end_finds_architectures_within_budget_exports_them_and_reads_a_finished_search_back(
        tmp_path, monkeypatch):
    from compression import export
    c = hat_config()
    c.runner = "nas"
    c.nas.update(export="", search=str(tmp_path))
    results = nas.run(c, str(tmp_path), progress=False)
    assert results["latency"]["measurements"] == 12 and results["latency"]["device_kind"]
    # The search's cost counts every measurement the table holds (it may span invocations) and the supernet.
    table = json.loads((tmp_path / "latency_table.json").read_text())
    assert results["latency"]["repeat_spread"] == nas.repeat_spread(table)
    timing = results["timing"]
    assert timing["latency_s"] >= sum(r["measure_s"] for r in table) > 0
    assert timing["wall_s"] >= timing["supernet_s"] + timing["latency_s"]
    space = sn.SearchSpace(**{k: tuple(v) for k, v in SPACE.items()})
    supernet_params = nas.train_supernet(nas.build_supernet(c), str(tmp_path / "supernet"), False)["state"]["params"]
    for name, fraction in (("50", 0.5), ("90", 0.9)):
        found = results["searches"][name]
        assert set(found) == {"evolution", "random", "layers", "narrow"}
        for kind in ("evolution", "random", "layers", "narrow"):
            if found[kind]["arch"] is None:
                continue
            arch = sn.Architecture.from_dict(found[kind]["arch"])
            assert space.contains(arch)
            measure = found[kind]["predicted_latency_ms"] if results["budget"]["by"] == "latency" else found[kind]["flops"]
            assert measure <= fraction * results["budget"]["reference"] + 1e-9
        assert found["random"]["evaluations"] == found["evolution"]["evaluations"]
        # The export is the standalone model: its config, and the supernet's weights sliced to it.
        path = nas.found_export(str(tmp_path), f"{name}_evolution")
        header = export.read_header(path)
        arch = sn.Architecture.from_dict(found["evolution"]["arch"])
        assert header["metadata"]["architecture"] == arch.as_dict()
        assert header["metadata"]["model"] == arch.model_config(SUPERNET)
        loaded = export.load_params(path)
        for a, b in zip(jax.tree_util.tree_leaves(loaded),
                        jax.tree_util.tree_leaves(sn.slice_params(supernet_params, arch))):
            np.testing.assert_array_equal(a, b)
    assert len({str(results["exports"][f"sample_{i}"]["arch"]) for i in range(3)}) == 3
    # A finished search is read back, never redone, by the models that need it.
    monkeypatch.setattr(nas, "run_hat", lambda *a, **k: (_ for _ in ()).throw(AssertionError("searched again")))
    assert nas.run(c, str(tmp_path), progress=False)["searches"] == json.loads(json.dumps(results["searches"]))
    c.nas.export = "90_evolution"
    exported = nas.run(c, str(tmp_path / "found"), progress=False)
    assert exported["architecture"] == results["exports"]["90_evolution"]["arch"]
    assert (tmp_path / "found" / "export" / "params.safetensors").exists()
    c.nas.export = "90_bigger"
    with pytest.raises(ValueError, match="nas.export '90_bigger' is not one of the search's models"):
        nas.run(c, str(tmp_path / "found2"), progress=False)
    # The reference the found models are timed against: the supernet itself, as a standalone export.
    c.nas.export = nas.LARGEST
    largest = nas.run(c, str(tmp_path / "largest"), progress=False)
    assert largest["architecture"] == space.largest().as_dict()
    assert largest["config"]["nas"]["export"] == nas.LARGEST  # its own config, not the search's
    assert largest["metrics"]["measured_latency_ms"] == results["latency"]["largest_ms"]
    loaded = export.load_params(str(tmp_path / "largest" / "export" / "params.safetensors"))
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(supernet_params)):
        np.testing.assert_array_equal(a, b)
    c.train.num_steps += 1
    with pytest.raises(ValueError, match=r"supernet at step \d+ of \d+: finish the search"):
        nas.export_largest(c, str(tmp_path), results, str(tmp_path / "largest2"))


def test_repeat_spread_is_the_latency_tables_own_noise_over_repeated_architectures():
    a, b, c = ({"width": w, "heads": [1], "ffn": [16]} for w in (16, 32, 64))
    table = [{"arch": a, "latency_ms": 10.0}, {"arch": b, "latency_ms": 20.0}, {"arch": a, "latency_ms": 12.0},
             {"arch": c, "latency_ms": 5.0}, {"arch": b, "latency_ms": 30.0}, {"arch": a, "latency_ms": 11.0}]
    # a: (12 - 10) / 11; b: (30 - 20) / 25; c is measured once and tells nothing.
    spread = nas.repeat_spread(table)
    assert spread["architectures"] == 2
    assert spread["median"] == pytest.approx((2 / 11 + 10 / 25) / 2) and spread["max"] == pytest.approx(0.4)
    assert nas.repeat_spread(table[:2]) is None


def test_hand_scaled_baselines_are_the_deepest_full_layers_and_the_widest_uniform_model_within_budget():
    space = sn.SearchSpace(**{k: tuple(v) for k, v in SPACE.items()})
    size = lambda a: sum(a.width * (h + f) for h, f in zip(a.heads, a.ffn))
    budget = size(sn.Architecture(32, (4, 4), (32, 32)))
    scaled = nas.hand_scaled(space, size, budget)
    assert scaled["layers"] == sn.Architecture(32, (4, 4), (32, 32))
    assert scaled["narrow"] == sn.Architecture(16, (2, 2, 2), (16, 16, 16))
    assert nas.hand_scaled(space, size, 0) == {"layers": None, "narrow": None}


def test_model_from_reads_the_model_an_export_records_and_a_bad_runner_is_refused(tmp_path):
    net = nas.build_supernet(config())
    arch = sn.Architecture(16, (2,), (16,))
    path = nas.export_architecture(str(tmp_path / "found" / "export" / "params.safetensors"),
                                   nas.init_state(net)["params"], arch, SUPERNET)
    c = tiny_lm_config(dict(SUPERNET), num_steps=0)
    c.model_from = path
    run = train.build_run(c)
    assert c.model.width == 16 and list(c.model.num_heads) == [2]
    assert run.state["trainable"]["params"]["block_0"]["ffn_in"]["kernel"].shape == (16, 16)
    c.model_from = str(tmp_path / "missing" / "export" / "params.safetensors")
    with pytest.raises(FileNotFoundError, match="model_from .* does not exist"):
        train.build_run(c)
    c.runner = "search"
    with pytest.raises(ValueError, match="config.runner 'search' is not one of"):
        train.train_and_evaluate(c, str(tmp_path / "run"))
