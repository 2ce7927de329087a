"""Architecture search (experiments/nas.py): the SuperTransformer's training and the inherited-weight score."""
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
