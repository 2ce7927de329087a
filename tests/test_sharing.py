"""Cross-layer parameter sharing (compression/sharing.py): one array, one summed gradient, stored once."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from compression import export
from compression.sharing import share
from experiments import train
from tests.helpers import tiny_lm_config

RNG = np.random.default_rng(0)


def _layers(*shapes):
    return {f"block_{i}": {"w": jnp.asarray(RNG.normal(size=s), jnp.float32), "b": jnp.zeros(s[-1:])}
            for i, s in enumerate(shapes)}


def test_a_shared_parameter_is_one_array_whose_gradient_sums_its_uses():
    params = _layers((3, 2), (3, 2), (3, 2))
    t = share(["block_0", "block_1", "block_2"], select="w")
    trainable, state = t.init(params)
    assert sorted(trainable["params"]["block_1"]) == ["b"]  # the copy is gone; the bias is not shared
    effective = t.apply(trainable, state)
    for i in (1, 2):
        np.testing.assert_array_equal(effective[f"block_{i}"]["w"], params["block_0"]["w"])
    g = [RNG.normal(size=(3, 2)).astype(np.float32) for _ in range(3)]
    grads = jax.grad(lambda tr: sum(jnp.sum(t.apply(tr, state)[f"block_{i}"]["w"] * g[i]) for i in range(3)))(
        trainable)
    np.testing.assert_allclose(grads["params"]["block_0"]["w"], g[0] + g[1] + g[2], rtol=1e-6)


def test_bad_sharing_groups_are_refused_naming_the_setting():
    with pytest.raises(ValueError, match=r"block_1/w has shape \(4, 2\) but block_0/w has \(3, 2\); a sharing "
                                         r"group must tie layers of the same shapes"):
        share(["block_0", "block_1"], select="w").init(_layers((3, 2), (4, 2)))
    with pytest.raises(ValueError, match="share.layers .* must name at least two layers"):
        share(["block_0"])
    with pytest.raises(ValueError, match="share.layers entry"):
        share(["block_0", ""])
    with pytest.raises(ValueError, match="no parameter under 'block_0' matches select 'attn/.*'"):
        share(["block_0", "block_1"], select="attn/.*").init(_layers((3, 2), (3, 2)))


def test_an_all_shared_transformer_exports_its_block_once_and_reloads_predicting_as_built(tmp_path):
    # Untrained (the summed gradient is checked above): the driver's export reloads the file and
    # compares its predictions with the run's effective params.
    config = tiny_lm_config({"name": "char_transformer", "max_len": 8, "width": 16, "num_layers": 3, "num_heads": 2,
                             "ffn_dim": 32, "head_dim": 8}, num_steps=0)
    config.compression.stages = [{"technique": "share", "layers": ["block_0", "block_1", "block_2"]}]
    results = train.export_run(train.build_run(config), str(tmp_path))[1]
    assert results["export_max_abs_logit_diff"] <= 1e-5
    block = 4 * (16 * 16 + 16) + 2 * 2 * 16 + (16 * 32 + 32) + (32 * 16 + 16)  # attention, 2 LayerNorms, FFN
    assert results["params_total"] - results["params_exported"] == 2 * block
    header = export.read_header(str(tmp_path / "export" / "params.safetensors"))["params"]
    assert header["block_2/ffn_in/kernel"] == {"codec": "alias", "source": "block_0/ffn_in/kernel",
                                               "shape": [16, 32], "dtype": "float32", "parts": []}
