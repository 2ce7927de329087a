"""Michel et al. 2019's head importance in `structured_prune(criterion="taylor_mask")`.

The importance read from the out-kernel slices equals |d loss / d xi_h| of an
explicit mask variable on each head's output (a flax interceptor scaling the
heads before the output projection), per example and per batch; the per-layer
L2 normalisation and the per-example mean are checked by hand on a loss whose
derivatives are known; iterative rounds prune exactly the scheduled count,
round by round as successive one-shot prunes of the masked model, and never a
layer's last head; the driver prunes, trains and exports the smaller model;
no batches are refused with the one message. configs/michel2019_char_transformer.py
builds the recipe and, as `_l1`, the committed L1-norm stage unchanged.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import pruning_masks, registry
from compression.structured_pruning import layer_l2_normalize, round_sparsities, structured_prune
from compression.transform import InitBatches
from experiments import models, structures, train

LAYERS, HEADS, VOCAB, LENGTH = 2, 4, 32, 8
MODEL = {"name": "char_transformer", "max_len": LENGTH, "width": 16, "num_layers": LAYERS,
         "num_heads": [HEADS] * LAYERS, "ffn_dim": [16] * LAYERS, "head_dim": 4}
TAYLOR = {"criterion": "taylor_mask", "scope": "global", "normalize": "layer_l2"}


@pytest.fixture(scope="module")
def tiny():
    """(model, params, loss, batches): the tiny CharTransformer, its init, the driver's loss, 2 batches of 3."""
    model = models.build_model(MODEL, VOCAB)
    params, _ = models.init_variables(model, jax.random.PRNGKey(0), jnp.zeros((1, LENGTH), jnp.int32))
    tokens = np.asarray(jax.random.randint(jax.random.PRNGKey(1), (2, 3, LENGTH + 1), 0, VOCAB), np.int32)
    batches = [{"inputs": t[:, :-1], "targets": t[:, 1:]} for t in tokens]
    return model, params, train.make_loss(model), batches


def masked_head_loss(model):
    """loss(xi, params, batch): the mean cross-entropy with head h of layer i's output multiplied by
    xi[i][h], by an interceptor on each attention's output projection (the model is not edited)."""

    def loss(xi, params, batch):
        def scale_heads(next_fun, args, kwargs, context):
            path = tuple(context.module.path)
            if context.method_name == "__call__" and len(path) == 3 and path[1:] == ("attn", "out"):
                heads = args[0]  # (batch, length, heads, head_dim): the heads' outputs, before projection
                args = (heads * xi[int(path[0].split("_")[1])][None, None, :, None],) + tuple(args[1:])
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(scale_heads):
            logits = model.apply({"params": params}, batch["inputs"])
        loss_sum, _, count = train.cross_entropy(logits, batch["targets"])
        return loss_sum / count

    return loss


@pytest.fixture(scope="module")
def grad_xi(tiny):
    """d loss / d xi of `masked_head_loss`, jitted once."""
    return jax.jit(jax.grad(masked_head_loss(tiny[0])))


@pytest.fixture(scope="module")
def pruned_2_of_8(tiny):
    """(trainable, state) of a one-round, per-example, normalised global prune of 2 of the 8 heads of `tiny`."""
    _, params, loss, batches = tiny
    t = structured_prune(structures.transformer_head_groups(LAYERS), 2 / 8, **TAYLOR)
    return t.init(params, None, InitBatches(batches, loss))


def _by_layer(scores):
    return np.stack([np.asarray(scores[f"block_{i}_heads"]) for i in range(LAYERS)])


def test_importance_is_the_mask_derivative_per_example(tiny, grad_xi, pruned_2_of_8):
    _, params, _, batches = tiny
    ones = jnp.ones((LAYERS, HEADS))
    # E_x |dL(x)/dxi_h|: every example of every batch alone, |.| per example, the mean over all 6.
    per_example = [np.abs(np.asarray(grad_xi(ones, params, {k: v[j:j + 1] for k, v in b.items()})))
                   for b in batches for j in range(len(b["inputs"]))]
    expected = np.mean(per_example, axis=0)
    got = _by_layer(pruned_2_of_8[1]["scores"])  # one round: the importances of the dense model
    assert expected.shape == (LAYERS, HEADS) and np.all(expected > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_importance_per_batch_is_the_mean_over_batches_of_the_mask_derivative(tiny, grad_xi):
    _, params, loss, batches = tiny
    expected = np.mean([np.abs(np.asarray(grad_xi(jnp.ones((LAYERS, HEADS)), params, b))) for b in batches], axis=0)
    t = structured_prune(structures.transformer_head_groups(LAYERS), 0.25, per_example=False, **TAYLOR)
    got = _by_layer(t.init(params, None, InitBatches(batches, loss))[1]["scores"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-7)
    # The mask derivative is the out-kernel slice's sum of w * dL/dw, kernel (heads, head_dim, width).
    g = jax.jit(jax.grad(loss))(params, batches[0])
    by_slice = [np.sum(np.asarray(params[f"block_{i}"]["attn"]["out"]["kernel"]
                                  * g[f"block_{i}"]["attn"]["out"]["kernel"]), axis=(1, 2)) for i in range(LAYERS)]
    np.testing.assert_allclose(by_slice, np.asarray(grad_xi(jnp.ones((LAYERS, HEADS)), params, batches[0])),
                               rtol=1e-4, atol=1e-7)


# A loss whose mask derivatives are known: group a has 2 units, b has 3; unit u of a group scales
# weight w_u, and dL(x)/dxi_u = w_u * c[x, u] for the batch's coefficients c (one row per example).
TOY_GROUPS = [{"name": "a", "members": [["a/kernel", 0]], "importance": [["a/kernel", 0]]},
              {"name": "b", "members": [["b/kernel", 0]], "importance": [["b/kernel", 0]]}]
TOY_PARAMS = {"a": {"kernel": jnp.array([1.0, 2.0])}, "b": {"kernel": jnp.array([10.0, 20.0, 30.0])}}


def _toy_loss(params, batch):
    return jnp.mean(batch["ca"] @ params["a"]["kernel"] + batch["cb"] @ params["b"]["kernel"])


def _toy_batches():
    # Example signs differ for a's unit 1: per example |.| = 1 each, per batch the mean is 0.
    return [{"ca": jnp.array([[1.0, 1.0], [1.0, -1.0]]), "cb": jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]])}]


def test_per_example_and_per_batch_importance_by_hand():
    batches = InitBatches(_toy_batches(), _toy_loss)
    _, state = structured_prune(TOY_GROUPS, 0.2, scope="global", criterion="taylor_mask").init(TOY_PARAMS, None,
                                                                                               batches)
    # per example: mean_x |w_u c[x, u]|: a = (1, 2) (|2|, |-2| -> 2), b = (10, 20, 30)
    np.testing.assert_allclose(state["scores"]["a"], [1.0, 2.0])
    np.testing.assert_allclose(state["scores"]["b"], [10.0, 20.0, 30.0])
    _, state = structured_prune(TOY_GROUPS, 0.2, scope="global", criterion="taylor_mask",
                                per_example=False).init(TOY_PARAMS, None, batches)
    # per batch: |mean_x w_u c[x, u]|: a's unit 1 cancels
    np.testing.assert_allclose(state["scores"]["a"], [1.0, 0.0])


def test_layer_l2_normalisation_by_hand_decides_the_global_ranking():
    # By hand: a / |a|_2 = (1, 2) / sqrt(5) = (0.447, 0.894); b / |b|_2 = (10, 20, 30) / sqrt(1400)
    # = (0.267, 0.535, 0.802): normalised, b's unit 0 ranks lowest; raw, a's unit 0 (1.0) does.
    np.testing.assert_allclose(layer_l2_normalize(jnp.array([1.0, 2.0]), jnp.array([True, True])),
                               np.array([1.0, 2.0]) / np.sqrt(5.0), rtol=1e-6)
    np.testing.assert_allclose(layer_l2_normalize(jnp.array([10.0, 20.0, 30.0]), jnp.ones(3, bool)),
                               np.array([10.0, 20.0, 30.0]) / np.sqrt(1400.0), rtol=1e-6)
    # Pruned units leave the norm: (3, 4, [5 pruned]) / 5; all-zero scores stay zero.
    np.testing.assert_allclose(layer_l2_normalize(jnp.array([3.0, 4.0, 5.0]), jnp.array([True, True, False])),
                               [0.6, 0.8, 1.0], rtol=1e-6)
    np.testing.assert_array_equal(layer_l2_normalize(jnp.zeros(2), jnp.ones(2, bool)), [0.0, 0.0])
    batches = InitBatches(_toy_batches(), _toy_loss)
    kept = {}
    for normalize in (None, "layer_l2"):
        _, state = structured_prune(TOY_GROUPS, 0.2, scope="global", criterion="taylor_mask",
                                    normalize=normalize).init(TOY_PARAMS, None, batches)
        kept[normalize] = {k: np.asarray(v).tolist() for k, v in state["masks"].items()}
    assert kept[None] == {"a": [False, True], "b": [True, True, True]}
    assert kept["layer_l2"] == {"a": [True, True], "b": [False, True, True]}


def test_normalised_global_masks_of_the_transformer_by_hand(pruned_2_of_8):
    state = pruned_2_of_8[1]
    raw = _by_layer(state["scores"])
    normalised = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    lowest = set(np.argsort(normalised.reshape(-1), kind="stable")[:2].tolist())
    expected = np.array([i not in lowest for i in range(LAYERS * HEADS)]).reshape(LAYERS, HEADS)
    np.testing.assert_array_equal(_by_layer(state["masks"]), expected)


def test_round_sparsities_reach_the_one_shot_count_in_equal_rounds():
    counts = [int(pruning_masks.pruned_count(s, 16)) for s in round_sparsities(12 / 16, 4)]
    assert counts == [3, 6, 9, 12]
    assert [int(pruning_masks.pruned_count(s, 16)) for s in round_sparsities(4 / 16, 4)] == [1, 2, 3, 4]
    assert [int(pruning_masks.pruned_count(s, 8)) for s in round_sparsities(6 / 8, 3)] == [2, 4, 6]


def test_iterative_rounds_are_successive_prunes_of_the_masked_model(tiny, pruned_2_of_8):
    _, params, loss, batches = tiny
    groups = structures.transformer_head_groups(LAYERS)
    data = InitBatches(batches, loss)
    trainable, first = pruned_2_of_8
    # Round 2 re-estimates on the masked model: its pruned heads score exactly 0, so a one-shot prune
    # of 4 heads of it keeps them pruned and adds the 2 lowest of the rest.
    _, second = structured_prune(groups, 4 / 8, **TAYLOR).init(trainable["params"], None, data)
    _, iterative = structured_prune(groups, 4 / 8, iterative_rounds=2, **TAYLOR).init(params, None, data)
    for name, mask in iterative["masks"].items():
        np.testing.assert_array_equal(mask, second["masks"][name])
        assert not np.any(np.asarray(mask) & ~np.asarray(first["masks"][name]))  # masks only shrink
    assert sum(int(np.sum(m)) for m in first["masks"].values()) == 6
    assert sum(int(np.sum(m)) for m in iterative["masks"].values()) == 4
    np.testing.assert_allclose(iterative["scores"]["block_0_heads"], second["scores"]["block_0_heads"], rtol=1e-5)


def test_iterative_rounds_prune_the_scheduled_count_and_never_a_layers_last_head(tiny):
    _, params, loss, batches = tiny
    # 7 of 8 heads in 7 rounds: the count is clipped to 8 - 2 layers, each layer keeps its best head.
    t = structured_prune(structures.transformer_head_groups(LAYERS), 7 / 8, iterative_rounds=7, **TAYLOR)
    trainable, state = t.init(params, None, InitBatches(batches, loss))
    kept = [int(np.sum(state["masks"][f"block_{i}_heads"])) for i in range(LAYERS)]
    assert kept == [1] * LAYERS
    out = np.asarray(trainable["params"]["block_0"]["attn"]["out"]["kernel"])
    np.testing.assert_array_equal(np.any(out != 0, axis=(1, 2)), np.asarray(state["masks"]["block_0_heads"]))


def test_driver_prunes_heads_by_importance_and_exports_a_smaller_model(tmp_path):
    from compression import export
    from tests.helpers import tiny_config

    # No training step: the importance is read at init, and the train step's compile is the costliest part.
    config = tiny_config(num_steps=0, batch_size=8, eval_batch_size=8, log_every=2, checkpoint_every=100)
    config.dataset = {"name": "synthetic", "kind": "language_model", "input_shape": (), "num_classes": VOCAB,
                      "train_size": 512, "eval_size": 16, "seq_len": LENGTH}
    config.model = dict(MODEL)
    config.compression.stages = [{"technique": "structured_prune", "sparsity": 0.5, "iterative_rounds": 2,
                                  "groups": structures.transformer_head_groups(LAYERS), **TAYLOR}]
    config.compression.init_batches = 2
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    model = export.read_header(str(tmp_path / "export" / "params.safetensors"))["metadata"]["model"]
    assert sum(model["num_heads"]) == 4 and min(model["num_heads"]) >= 1
    assert results["compression"]["params_exported"] < results["compression"]["params_total"]
    assert results["compression"]["export_max_abs_logit_diff"] < 1e-4


def _no_batches(empty):
    return InitBatches([], _toy_loss) if empty else None


def test_no_batches_and_an_empty_list_get_the_one_message():
    t = registry.build("structured_prune", groups=TOY_GROUPS, sparsity=0.2, criterion="taylor_mask")
    messages = []
    for empty in (False, True):
        with pytest.raises(ValueError, match="needs at least one batch") as error:
            t.init(TOY_PARAMS, None, _no_batches(empty))
        messages.append(str(error.value))
    assert messages[0] == messages[1]
    assert messages[0].startswith("structured_prune with criterion='taylor_mask'")
    assert "config.compression.init_batches > 0" in messages[0]


@pytest.mark.parametrize("settings, message", [
    ({"criterion": "fisher"}, r"structured_prune\.criterion 'fisher' is not one of \['norm', 'taylor_mask'\]"),
    ({"criterion": "taylor_mask", "norm": 2}, r"structured_prune\.norm is read only with criterion='norm'"),
    ({"per_example": False}, r"structured_prune\.per_example is read only with criterion='taylor_mask'"),
    ({"criterion": "taylor_mask", "per_example": 1}, r"structured_prune\.per_example must be True or False"),
    ({"criterion": "taylor_mask", "groups": [{"name": "a", "members": [["a/kernel", 0]]}]},
     r"criterion='taylor_mask' needs each group's 'importance' slices.*\['a'\]"),
    ({"normalize": "layer_l2"}, r"structured_prune\.normalize .*use scope='global'"),
    ({"scope": "global", "normalize": "l1"}, r"structured_prune\.normalize 'l1' is not one of \[None, 'layer_l2'\]"),
    ({"iterative_rounds": 0}, r"structured_prune\.iterative_rounds must be an integer >= 1 \(got 0\)"),
    ({"iterative_rounds": 2, "sparsity": 0.0}, r"structured_prune\.iterative_rounds splits the pruning done at init"),
])
def test_bad_importance_settings_are_refused_when_built(settings, message):
    with pytest.raises(ValueError, match=message):
        registry.build("structured_prune", **{"groups": TOY_GROUPS, "sparsity": 0.2, **settings})


def test_importance_slices_are_checked_against_the_params():
    groups = [dict(TOY_GROUPS[0], importance=[["b/kernel", 0]])]
    with pytest.raises(ValueError, match=r"group 'a': b/kernel \(axis 0\) has 3 units but a/kernel"):
        structured_prune(groups, 0.2, criterion="taylor_mask").init(TOY_PARAMS, None,
                                                                    InitBatches(_toy_batches(), _toy_loss))


def test_michel_configs_build_the_importance_recipe_and_the_l1_ablation():
    import importlib

    m = importlib.import_module("configs.michel2019_char_transformer")
    for variant in ("4", "4_ft", "4_quick", "2", "8", "12", "12_ft", "quick", "4_l1", "4_ft_l1", "12_l1",
                    "2_l1_quick", "l1_quick"):
        m.get_config(variant)
    config = m.get_config("8")
    (stage,) = config.compression.stages
    assert (stage["criterion"], stage["normalize"], stage["scope"], stage["iterative_rounds"]) == \
        ("taylor_mask", "layer_l2", "global", 8)
    assert stage["sparsity"] == 0.5 and config.compression.init_batches == m.CALIBRATION_BATCHES
    assert all(g["importance"] == [[f"block_{i}/attn/out/kernel", 0]] for i, g in enumerate(stage["groups"]))
    # The ablation is the stage the committed L1-norm runs stored: no criterion, no importance, no data.
    config = m.get_config("8_ft_l1")
    assert config.compression.stages == [{"technique": "structured_prune", "scope": "global", "sparsity": 0.5,
                                          "groups": structures.transformer_head_groups(4, importance=False)}]
    assert config.compression.init_batches == 0 and config.train.num_steps > 0
    assert "importance" not in config.compression.stages[0]["groups"][0]
