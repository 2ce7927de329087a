"""Pairs of registered techniques, in both orders, through the driver: build, export, reload.

The driver's export loads the written file back as the model its header
names and asserts it predicts what the effective params predict, so a pair
that exports here is a pair that composes. A technique registered without an
entry in STAGES fails the coverage test: a new technique must say how it
runs on the tiny Transformer.

Every pair costs seconds, so the pairs are those with one of PARTNERS (the
techniques that mask, encode, shrink or renumber), both orders, and the
pairs of one cycle through every technique (TRAINED: each technique once as
the first stage and once as the second), which alone take two jitted train
steps before their export; the chain's update algebra itself is tested on
toy stages in test_transform.py, and each technique's training in its own
tests.
"""
import itertools

import jax
import numpy as np
import pytest

from compression import chain, registry
from experiments import structures, train
from tests.helpers import tiny_config, tiny_lm_config, transformer_ffn_groups

NUM_LAYERS = 2
MODEL = {"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": NUM_LAYERS,
         "num_heads": [2] * NUM_LAYERS, "ffn_dim": [16] * NUM_LAYERS, "head_dim": 8}

# The settings each registered technique runs with on MODEL.
STAGES = {
    "identity": {},
    "prune": {"select": ".*kernel", "sparsity": 0.5},
    "structured_prune": {"groups": transformer_ffn_groups(NUM_LAYERS) +
                         structures.transformer_head_groups(NUM_LAYERS), "sparsity": 0.5},
    "layer_drop": {"layers": structures.transformer_layers(NUM_LAYERS), "drop": [1]},
    "quantize": {"select": ".*kernel", "bits": 4},
    "quantize_activations": {"select": ".*(ffn_in|ffn_out|head)", "bits": 8},
    "low_rank": {"select": "head/kernel", "rank": 4},
    "cluster": {"select": ".*ffn_in/kernel", "bits": 2},
    "share": {"layers": structures.transformer_layers(NUM_LAYERS), "select": "attn/.*"},
    "sparsegpt": {"select": ".*ffn_(in|out)/kernel", "sparsity": 0.5, "block_size": 8},
    "gptq": {"select": ".*(attn/out|ffn_out)/kernel", "bits": 3, "group_size": 8, "block_size": 8},
}


# Pairs that cannot work, refused when the run is built, and what the refusal says. Layer dropping
# renumbers the blocks in its export, so a structured_prune after it cannot find the groups of the
# blocks it selected; low_rank stores head/kernel as factors, which a later prune cannot mask, and
# a later quantize would encode W = u v into codes that are no longer factors. In the other order
# each pair runs.
REFUSED = {("layer_drop", "structured_prune"): "stage 'structured_prune' cannot export after .*'layer_drop'",
           ("low_rank", "prune"): "stage 'prune' cannot project the stored parameters after .*'low_rank'",
           ("low_rank", "quantize"): "head/kernel is encoded by an earlier stage .*put the quantize stage before",
           # cluster replaces ffn_in's kernels by centroids and assignments: a later stage cannot reach
           # the kernel, and an earlier structured_prune's groups no longer find it.
           ("cluster", "prune"): "stage 'prune' cannot project the stored parameters after .*'cluster'",
           ("cluster", "structured_prune"): "stage 'structured_prune' cannot project the stored parameters",
           ("cluster", "quantize"): "ffn_in/kernel is already encoded by an earlier stage .*put the quantize stage",
           ("structured_prune", "cluster"): r"group 'block_0_ffn': no parameter at path\(s\) \['block_0/ffn_in/kernel'\]",
           # share keeps block_1's attention only as block_0's: later stages cannot reach block_1's copy, and
           # an earlier layer_drop cannot zero it.
           ("share", "prune"): "stage 'prune' cannot project the stored parameters after .*'share'",
           ("share", "structured_prune"): "stage 'structured_prune' cannot project the stored parameters",
           ("structured_prune", "share"): r"group 'block_1_heads': no parameter at path\(s\)",
           ("layer_drop", "share"): "layer 'block_1' has no 'attn/out/bias', which layer 'block_0' has",
           # gptq's codes are the export of the kernels it solved: a later quantizer cannot re-encode them.
           ("gptq", "quantize"): "attn/out/kernel is already encoded by an earlier stage .*put the quantize stage",
           ("quantize", "gptq"): "attn/out/kernel is already encoded by an earlier stage .*put the gptq stage"}


def _trained_cycle(techniques, refused):
    # The first ordering (as a cycle) whose consecutive pairs all compose.
    first, *rest = sorted(techniques)
    for order in itertools.permutations(rest):
        cycle = (first, *order)
        pairs = list(zip(cycle, cycle[1:] + cycle[:1]))
        if not any(p in refused for p in pairs):
            return set(pairs)
    raise AssertionError(f"no cycle through {techniques} avoids the refused pairs")


TRAINED = _trained_cycle([t for t in STAGES if t != "identity"], REFUSED)


def pair_config(first: str, second: str):
    config = tiny_lm_config(dict(MODEL), train_size=2048, eval_size=256, num_steps=2, log_every=2)
    config.compression.stages = [{"technique": first, **STAGES[first]}, {"technique": second, **STAGES[second]}]
    config.compression.init_batches = 1
    return config


# Techniques with nothing to act on in the tiny Transformer, and where their chains are tested instead.
NOT_ON_TRANSFORMER = {"separable": "splits K x K convolutions; tests/test_separable.py chains it on a CNN"}


def test_every_registered_technique_has_pair_settings():
    # Techniques the library registers (tests register toys of their own in the same registry).
    library = [n for n in registry.names() if registry.factory(n).__module__.startswith("compression.")]
    assert sorted([*STAGES, *NOT_ON_TRANSFORMER]) == library
    assert set(REFUSED) <= set(PAIRS) and set(TRAINED) <= set(PAIRS)


# Every technique meets each of these in both orders (they mask, encode, shrink and renumber: the ways a
# stage changes what the next one sees), so the pairs grow linearly with the techniques, not as their
# square; two techniques outside this set meet in TRAINED's cycle.
PARTNERS = ("prune", "quantize", "structured_prune", "layer_drop")
PAIRS = sorted({p for p in itertools.permutations(sorted(STAGES), 2)
                if "identity" not in p and (set(p) & set(PARTNERS) or p in TRAINED)})


@pytest.mark.parametrize("first,second", PAIRS)
def test_pair_exports_and_reloads_in_this_order(first, second, tmp_path):
    if (first, second) in REFUSED:
        with pytest.raises(ValueError, match=REFUSED[first, second]):
            train.build_run(pair_config(first, second))
        return
    config = pair_config(first, second)
    if (first, second) not in TRAINED:
        config.train.num_steps = 0
    report = train_and_export(config, tmp_path)
    # export_run asserted that the reloaded export predicts as the trained model.
    assert report["export_max_abs_logit_diff"] <= 1e-4
    assert report["params_exported"] <= report["params_total"]


def train_and_export(config, workdir):
    """Two jitted train steps (one compile), then the driver's export, reload and prediction check."""
    run = train.build_run(config)
    state = run.state
    for step in range(int(config.train.num_steps)):
        state, metrics = run.train_step(state, train.data_lib.train_batch(
            run.dataset, 0, step, int(config.train.batch_size), int(config.dataset.get("seq_len", 0))))
    if int(config.train.num_steps):
        assert np.isfinite(float(metrics["loss"]))
        assert run.train_step._cache_size() == 1
    run.state = state
    return train.export_run(run, str(workdir))[1]


def test_structured_prune_and_quantize_compose_on_lenet5_in_both_orders(tmp_path):
    # The ablation of issue 14: 50 % of LeNet-5's filters (kept counts rounded to multiples of 8) and
    # 4-bit per-channel weights. The quantizer's per-channel scales follow the dropped filters.
    stages = {"structured_prune": {"technique": "structured_prune", "sparsity": 0.5, "multiple_of": 8,
                                   "groups": structures.lenet5_filter_groups((20, 50))
                                   + structures.lenet5_neuron_groups()},
              "quantize": {"technique": "quantize", "select": ".*kernel", "bits": 4}}
    for order in (("structured_prune", "quantize"), ("quantize", "structured_prune")):
        config = tiny_config(num_steps=2, batch_size=8, eval_batch_size=16, log_every=2, checkpoint_every=100)
        config.model = {"name": "lenet5", "conv_features": [20, 50], "dense_features": 500}
        config.compression.stages = [stages[name] for name in order]
        report = train_and_export(config, tmp_path / "_".join(order))
        assert report["params_exported"] < report["params_total"]
        assert 8 * report["bytes_exported"] / report["params_total"] < 8


def test_stage_names_key_the_state_and_a_given_name_wins():
    config = pair_config("prune", "quantize")
    config.compression.stages[1]["name"] = "weights_4bit"
    run = train.build_run(config)
    assert sorted(run.state["comp_state"]) == ["prune", "weights_4bit"]
    assert sorted(run.state["trainable"]) == ["params"]
    leaves = jax.tree_util.tree_leaves(run.state["comp_state"]["weights_4bit"])
    assert leaves, "the quantize stage's state lives under its given name"


@pytest.mark.parametrize("order", [("prune", "quantize"), ("quantize", "prune")])
def test_binary_connect_clip_reaches_the_stored_weights_after_pruning_in_either_order(order):
    # Issue 14's regression: chain(prune, quantize(binary, no scale)) kept the shadow kernel at
    # [3, -2] after update, so BinaryConnect after pruning trained without its clip.
    stages = {"prune": registry.build("prune", select=".*kernel", sparsity=0.0),
              "quantize": registry.build("quantize", select=".*kernel", scheme="binary", binary_scale="none")}
    t = chain(*[stages[name] for name in order])
    params = {"Dense_0": {"kernel": np.array([[3.0, -2.0]], np.float32), "bias": np.zeros(2, np.float32)}}
    trainable, state = t.init(params)
    grads = jax.tree_util.tree_map(np.zeros_like, trainable)
    trainable, state = t.update(trainable, state, grads, 0)
    np.testing.assert_array_equal(trainable["params"]["Dense_0"]["kernel"], np.array([[1.0, -1.0]], np.float32))


def test_layer_drop_before_a_stage_that_rebuilds_the_leaves_it_zeroes_is_refused_when_built(tmp_path):
    # Clustering ffn_out stores its kernels as centroids and assignments, and rebuilds them in its own
    # apply, after layer_drop's: the dropped block would train with its FFN on. In the other order the
    # dropped kernel reaches clustering all zero, which it refuses: select the kept layers' kernels.
    config = pair_config("layer_drop", "cluster")
    config.compression.stages[1] = {"technique": "cluster", "select": ".*ffn_out/kernel", "bits": 2}
    with pytest.raises(ValueError, match="stage 'layer_drop' does not hold on the effective parameters after "
                                         r"stage\(s\) \['cluster'\] .*block_1/ffn_out/kernel of dropped layer"):
        train.build_run(config)
    config.compression.stages = config.compression.stages[::-1]
    with pytest.raises(ValueError, match="every weight of block_1/ffn_out/kernel is zero .* narrow cluster.select"):
        train.build_run(config)
    config.compression.stages[0]["select"] = "block_0/ffn_out/kernel"
    config.train.num_steps = 0
    assert train_and_export(config, tmp_path)["export_max_abs_logit_diff"] <= 1e-4
