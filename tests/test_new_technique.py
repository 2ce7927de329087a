"""A new technique needs no edit outside its own module and its config.

Everything new here is registered from this file: a toy pruning criterion,
a toy quantization scheme, a toy loss term, a toy W -> (U, V) transform
whose export changes the model config (and the small model that reads that
config), chained before `quantize`; the driver runs them to an export that
reloads as the new model and predicts as in training.
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import losses, quantization_schemes, registry
from compression import pruning_criteria
from compression.export import Coded
from compression.selection import leaves_by_path, nest_paths
from compression.transform import PARAMS, Transform
from experiments import models, train
from tests.helpers import tiny_config

RANK = 4


# --- a toy pruning criterion: prune the entries whose weights are largest (the control nobody wants) --

@pruning_criteria.register_criterion("test_largest_first")
class LargestFirst(pruning_criteria.Criterion):
    def current(self, weights, scores):
        return {p: -jnp.abs(w) for p, w in weights.items()}


# --- a toy quantization scheme: sign(w) times a per-tensor power of two ---------------------------

@quantization_schemes.register_scheme("test_power_of_two_sign")
class PowerOfTwoSign(quantization_schemes.Binary):
    def calibrate(self, w, bits, learned, axis):
        return {"scale": jnp.exp2(jnp.round(jnp.log2(jnp.mean(jnp.abs(w))))).reshape((1,) * w.ndim)}


# --- a toy loss term: pull the logits' mean square towards zero ---------------------------------------

@losses.register_loss("test_logit_energy")
def logit_energy():
    return lambda outputs, batch, extras: jnp.mean(jnp.square(outputs["logits"]))


# --- a toy W -> (U, V) transform, and the model its export names ---------------------------------------

class FactoredMLP(nn.Module):
    """The MLP whose first layer is x @ U (no bias) then @ V + b: what a rank-r export runs."""

    hidden: tuple
    rank: int
    num_classes: int = 10

    @nn.compact
    def __call__(self, inputs, *, train=False):
        x = inputs.astype(jnp.float32).reshape((inputs.shape[0], -1)) / 255.0
        x = nn.Dense(self.rank, use_bias=False, name="Dense_0_u")(x)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, name=f"Dense_{i}")(x))
        return nn.Dense(self.num_classes, name=f"Dense_{len(self.hidden)}")(x)


models.MODELS.setdefault("test_factored_mlp", lambda num_classes, **kw: FactoredMLP(num_classes=num_classes, **kw))


@registry.register("test_low_rank_first_layer")
def low_rank_first_layer(rank: int = RANK) -> Transform:
    """Dense_0's kernel stored as factors {u, v} (rank `rank`, from its SVD); the export runs x U V."""
    if rank < 1:
        raise ValueError(f"test_low_rank_first_layer.rank {rank} must be >= 1")
    path = "Dense_0/kernel"

    def init(params, key=None, batches=None):
        flat = dict(leaves_by_path(params))
        u, s, vt = jnp.linalg.svd(flat.pop(path), full_matrices=False)
        flat[path + "/u"], flat[path + "/v"] = u[:, :rank] * s[:rank], vt[:rank]
        return {PARAMS: nest_paths(flat)}, ()

    def apply(trainable, state):
        flat = dict(leaves_by_path(trainable[PARAMS]))
        flat[path] = flat.pop(path + "/u") @ flat.pop(path + "/v")
        return nest_paths(flat)

    def update(trainable, state, grads, step):
        return trainable, state

    def export(params, state, model_config):
        w = leaves_by_path(params)[path]
        if isinstance(w, Coded):
            raise ValueError(f"{path} is encoded by an earlier stage and cannot be factorized; "
                             "quantize the factors instead")
        u, s, vt = np.linalg.svd(np.asarray(w, np.float64), full_matrices=False)
        flat = {p: v for p, v in leaves_by_path(params).items() if p != path}
        flat["Dense_0_u/kernel"] = (u[:, :rank] * s[:rank]).astype(np.float32)
        flat["Dense_0/kernel"] = vt[:rank].astype(np.float32)
        config = {"name": "test_factored_mlp", "hidden": list(model_config["hidden"]), "rank": rank}
        return nest_paths(flat), config

    return Transform(init, apply, update, export=export)


def config_with(stages, loss=None):
    config = tiny_config(num_steps=6, checkpoint_every=100)
    config.model.hidden = (16,)
    config.compression.stages = stages
    if loss is not None:
        config.loss = loss
    return config


def test_toy_criterion_scheme_loss_and_factorization_run_through_the_driver_to_a_reloadable_export(tmp_path):
    # quantize, then prune: the model sees the signs with the pruned entries at exactly zero.
    stages = [{"technique": "test_low_rank_first_layer", "rank": RANK},
              {"technique": "quantize", "select": "Dense_1/kernel", "scheme": "test_power_of_two_sign"},
              {"technique": "prune", "select": "Dense_1/kernel", "sparsity": 0.5, "criterion": "test_largest_first"}]
    config = config_with(stages, loss=[{"term": "cross_entropy"}, {"term": "test_logit_energy", "weight": 0.1}])
    results = train.train_and_evaluate(config, str(tmp_path), progress=False)
    # The export is the factored model, reloaded and checked against the trained one by the driver.
    assert results["compression"]["export_max_abs_logit_diff"] <= 1e-4
    header_model = train.read_export(str(tmp_path / "export" / "params.safetensors"))[0]
    assert header_model == {"name": "test_factored_mlp", "hidden": [16], "rank": RANK}
    assert results["compression"]["params_exported"] == 784 * RANK + RANK * 16 + 16 + 16 * 10 + 10
    # The toy criterion pruned the largest half of Dense_1's weights; the toy scheme left one magnitude.
    run = train.build_run(config)
    effective = jax.device_get(run.apply_transform(run.state["trainable"], run.state["comp_state"]))
    # The same seed without compression: the initial weights the criterion scored.
    initial = np.asarray(train.build_run(config_with([])).state["trainable"]["params"]["Dense_1"]["kernel"])
    kernel = np.asarray(effective["Dense_1"]["kernel"])
    kept = kernel != 0
    assert kept.mean() == 0.5
    assert np.abs(initial[kept]).max() <= np.abs(initial[~kept]).min()
    assert len(np.unique(np.abs(kernel[kept]))) == 1
    magnitude = float(np.abs(kernel[kept])[0])
    assert magnitude == 2.0 ** round(np.log2(magnitude))


def test_factorizing_a_weight_that_a_later_stage_encodes_is_refused_when_the_run_is_built():
    stages = [{"technique": "test_low_rank_first_layer"}, {"technique": "quantize", "select": ".*kernel", "bits": 4}]
    with pytest.raises(ValueError, match="stage 'test_low_rank_first_layer' cannot export after .*'quantize'|"
                                         "cannot be factorized"):
        train.build_run(config_with(stages))
