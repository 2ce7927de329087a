"""GPT-2 checkpoints in the Hugging Face layout (experiments/gpt2_format.py): read, run, compress, write back.

The checkpoints are tiny and written here, by name, in the Hugging Face
layout (Conv1D weights (in, out), query/key/value fused in c_attn); the lab's
model run on them is compared with a forward pass written from the GPT-2
definition (Radford et al. 2019; Hugging Face's modeling_gpt2): pre-LayerNorm
with epsilon 1e-5, gelu_new, learned positions, logits against the tied
token embedding.
"""
import json
import math

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from experiments import gpt2_format, models, train
from tests.helpers import tiny_lm_config

VOCAB, POSITIONS, WIDTH, HEADS, LAYERS, INNER = 32, 8, 16, 2, 2, 24
HF_CONFIG = {"model_type": "gpt2", "vocab_size": VOCAB, "n_positions": POSITIONS, "n_embd": WIDTH, "n_head": HEADS,
             "n_layer": LAYERS, "n_inner": INNER, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new"}


def hf_tensors(seed=0, prefix=""):
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, 0.3, shape).astype(np.float32)
    t = {"wte.weight": w(VOCAB, WIDTH), "wpe.weight": w(POSITIONS, WIDTH), "ln_f.weight": 1 + w(WIDTH),
         "ln_f.bias": w(WIDTH)}
    for i in range(LAYERS):
        h = f"h.{i}"
        t.update({f"{h}.ln_1.weight": 1 + w(WIDTH), f"{h}.ln_1.bias": w(WIDTH),
                  f"{h}.attn.c_attn.weight": w(WIDTH, 3 * WIDTH), f"{h}.attn.c_attn.bias": w(3 * WIDTH),
                  f"{h}.attn.c_proj.weight": w(WIDTH, WIDTH), f"{h}.attn.c_proj.bias": w(WIDTH),
                  f"{h}.ln_2.weight": 1 + w(WIDTH), f"{h}.ln_2.bias": w(WIDTH),
                  f"{h}.mlp.c_fc.weight": w(WIDTH, INNER), f"{h}.mlp.c_fc.bias": w(INNER),
                  f"{h}.mlp.c_proj.weight": w(INNER, WIDTH), f"{h}.mlp.c_proj.bias": w(WIDTH)})
    return {prefix + k: v for k, v in t.items()}


def reference_logits(t, ids, eps=1e-5):
    """GPT-2's forward pass in float64 numpy, from its definition."""
    t = {k: v.astype(np.float64) for k, v in t.items()}
    ln = lambda x, n: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * t[n + ".weight"] \
        + t[n + ".bias"]
    gelu_new = lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    length, hd = len(ids), WIDTH // HEADS
    x = t["wte.weight"][ids] + t["wpe.weight"][:length]
    for i in range(LAYERS):
        h = f"h.{i}"
        qkv = ln(x, f"{h}.ln_1") @ t[f"{h}.attn.c_attn.weight"] + t[f"{h}.attn.c_attn.bias"]
        q, k, v = (a.reshape(length, HEADS, hd).transpose(1, 0, 2) for a in np.split(qkv, 3, axis=-1))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        scores = np.where(np.tril(np.ones((length, length), bool)), scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        merged = (probs @ v).transpose(1, 0, 2).reshape(length, WIDTH)
        x = x + merged @ t[f"{h}.attn.c_proj.weight"] + t[f"{h}.attn.c_proj.bias"]
        m = gelu_new(ln(x, f"{h}.ln_2") @ t[f"{h}.mlp.c_fc.weight"] + t[f"{h}.mlp.c_fc.bias"])
        x = x + m @ t[f"{h}.mlp.c_proj.weight"] + t[f"{h}.mlp.c_proj.bias"]
    return ln(x, "ln_f") @ t["wte.weight"].T


def write_checkpoint(path, tensors, config=HF_CONFIG):
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config))
    return str(path)


@pytest.mark.parametrize("prefix,buffers", [("", False), ("transformer.", True)])
def test_a_hugging_face_checkpoint_runs_in_the_lab_model_as_gpt2_defines_it(prefix, buffers, tmp_path):
    t = hf_tensors(prefix=prefix)
    if buffers:  # older files carry the causal mask as a buffer per layer, and the tied head
        t.update({f"transformer.h.{i}.attn.bias": np.ones((1, 1, 8, 8), np.float32) for i in range(LAYERS)})
        t["lm_head.weight"] = t["transformer.wte.weight"]
    params, model_config, _ = gpt2_format.read(write_checkpoint(tmp_path / "gpt2", t))
    assert model_config["tie_embeddings"] and model_config["layer_norm_epsilon"] == 1e-5
    config = dict(model_config)
    model = models.build_model({**config, "name": "char_transformer"}, VOCAB)
    ids = np.array([3, 1, 4, 1, 5, 9, 2, 6])
    logits = np.asarray(model.apply({"params": jax.tree_util.tree_map(np.asarray, params)}, ids[None]))[0]
    reference = reference_logits(hf_tensors(), ids)
    assert np.max(np.abs(logits - reference)) < 1e-4
    # With Flax's default epsilon the same weights give other logits: the setting matters and is carried.
    other = models.build_model({**config, "layer_norm_epsilon": 1e-6}, VOCAB)
    assert np.max(np.abs(np.asarray(other.apply({"params": params}, ids[None]))[0] - reference)) > 1e-6


def test_parameters_write_back_to_the_same_names_and_bytes():
    t = hf_tensors()
    back = gpt2_format.hf_from_params(gpt2_format.params_from_hf(t, HF_CONFIG), gpt2_format.lab_model_config(HF_CONFIG))
    assert sorted(back) == sorted(t)
    for name in t:
        np.testing.assert_array_equal(back[name], t[name], err_msg=name)


def test_a_pruned_gpt2_exports_back_to_the_hugging_face_layout_with_its_zeros(tmp_path):
    source = write_checkpoint(tmp_path / "gpt2", hf_tensors())
    model_config = gpt2_format.lab_model_config(HF_CONFIG)
    config = tiny_lm_config(model_config, num_steps=0)
    config.init_from = source
    config.compression.stages = [{"technique": "prune", "select": ".*(attn|ffn).*kernel", "sparsity": 0.5}]
    run = train.build_run(config)
    path, report = train.export_run(run, str(tmp_path / "run"))
    model, params, _ = train.read_export(path)
    gpt2_format.write(str(tmp_path / "pruned"), params, model, VOCAB)
    written = load_file(str(tmp_path / "pruned" / "model.safetensors"))
    assert json.loads((tmp_path / "pruned" / "config.json").read_text())["n_inner"] == INNER
    for i in range(LAYERS):
        for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            assert np.mean(written[f"h.{i}.{name}.weight"] == 0) == pytest.approx(0.5, abs=0.02), name
    # Unpruned tensors come back as they went in; the pruned model reads back and runs as it ran.
    np.testing.assert_array_equal(written["h.0.ln_1.weight"], hf_tensors()["h.0.ln_1.weight"])
    reread = gpt2_format.read(str(tmp_path / "pruned"))[0]
    ids = np.arange(8)[None]
    m = models.build_model(model_config, VOCAB)
    np.testing.assert_allclose(m.apply({"params": reread}, ids), m.apply({"params": params}, ids), atol=1e-6)


def test_what_gpt2_cannot_hold_is_refused_naming_it():
    model = gpt2_format.lab_model_config(HF_CONFIG)
    with pytest.raises(ValueError, match=r"same num_heads in every layer; this model has \[2, 1\]"):
        gpt2_format.hf_config_from_model({**model, "num_heads": [2, 1]}, VOCAB)
    with pytest.raises(ValueError, match="GPT-2 needs model.tie_embeddings = True"):
        gpt2_format.hf_config_from_model({**model, "tie_embeddings": False}, VOCAB)
    with pytest.raises(ValueError, match="GPT-2 needs model.low_rank"):
        gpt2_format.hf_config_from_model({**model, "low_rank": {"head": 4}}, VOCAB)
    t = hf_tensors()
    del t["h.1.mlp.c_fc.bias"]
    with pytest.raises(ValueError, match="lacks 'h.1.mlp.c_fc.bias'"):
        gpt2_format.params_from_hf(t, HF_CONFIG)
    t = hf_tensors()
    t["h.0.mlp.c_fc.weight"] = t["h.0.mlp.c_fc.weight"].T  # a torch Linear's layout, not Conv1D's
    with pytest.raises(ValueError, match=r"'h.0.mlp.c_fc.weight' has shape \(24, 16\); .* needs \(16, 24\)"):
        gpt2_format.params_from_hf(t, HF_CONFIG)
    with pytest.raises(ValueError, match="tensors the model does not use"):
        gpt2_format.params_from_hf({**hf_tensors(), "h.2.ln_1.weight": np.ones(WIDTH, np.float32)}, HF_CONFIG)
