"""GPT-2 checkpoints in the Hugging Face layout, read into the lab's Transformer and written back.

A Hugging Face GPT-2 checkpoint is a folder with `config.json` (n_layer,
n_embd, n_head, n_positions, vocab_size, layer_norm_epsilon, n_inner) and
`model.safetensors`, whose names are `wte.weight`, `wpe.weight`,
`h.{i}.ln_1.*`, `h.{i}.attn.c_attn.*` (query, key and value fused along
the output axis), `h.{i}.attn.c_proj.*`, `h.{i}.ln_2.*`, `h.{i}.mlp.c_fc.*`,
`h.{i}.mlp.c_proj.*`, `ln_f.*` (optionally under `transformer.`; the
causal-mask buffers `attn.bias` / `attn.masked_bias` of older files are
skipped). Its projections are `Conv1D`s, whose weight is (in, out): the
transpose of a torch `Linear`'s and already the layout of a Flax kernel.

The lab's `CharTransformer` is GPT-2 (Radford et al. 2019) with
`tie_embeddings` (the logits are the final hidden state times the token
embedding's transpose; no head, no bias), `layer_norm_epsilon` 1e-5,
pre-LayerNorm blocks, GELU (tanh form, GPT-2's `gelu_new`) and learned
positions. `params_from_hf` and `hf_from_params` convert the parameters;
`read` and `write` the folders. A pruned or fine-tuned model writes back
in the same layout; one whose structure GPT-2 cannot hold (per-layer head
counts or widths, low-rank factors, a factorized embedding) is refused.

python -m experiments.gpt2_format --export=RUN/export/params.safetensors --out=DIR
writes a lab export as a Hugging Face GPT-2 folder. A config starts from a
GPT-2 folder with `init_from=DIR` and the model `lab_model_config` gives.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
SKIPPED = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers, not parameters


def is_checkpoint(path: str) -> bool:
    """Whether `path` is a folder holding a Hugging Face GPT-2 checkpoint (config.json + model.safetensors)."""
    config = os.path.join(path, CONFIG_FILE)
    if not (os.path.isdir(path) and os.path.exists(config) and os.path.exists(os.path.join(path, WEIGHTS_FILE))):
        return False
    with open(config) as f:
        return json.load(f).get("model_type") == "gpt2"


def lab_model_config(hf_config: Mapping[str, Any]) -> dict:
    """The lab's model config (`config.model`) for a GPT-2 of `hf_config`; the vocabulary is the dataset's."""
    width, heads = int(hf_config["n_embd"]), int(hf_config["n_head"])
    if width % heads:
        raise ValueError(f"GPT-2 config: n_embd {width} is not a multiple of n_head {heads}")
    return {"name": "char_transformer", "max_len": int(hf_config["n_positions"]), "width": width,
            "num_layers": int(hf_config["n_layer"]), "num_heads": heads, "head_dim": width // heads,
            "ffn_dim": int(hf_config.get("n_inner") or 4 * width), "embed_dim": None, "dropout_rate": 0.0,
            "tie_embeddings": True, "layer_norm_epsilon": float(hf_config.get("layer_norm_epsilon", 1e-5))}


def _strip(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {}
    for name, value in tensors.items():
        name = name[len("transformer."):] if name.startswith("transformer.") else name
        if name.endswith(SKIPPED) or name == "lm_head.weight":  # lm_head is wte (tied)
            continue
        out[name] = np.asarray(value)
    return out


def expected_shapes(hf_config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every parameter of a GPT-2 of `hf_config`, by Hugging Face name, with its shape."""
    model = lab_model_config(hf_config)
    d, inner = model["width"], model["ffn_dim"]
    shapes = {"wte.weight": (int(hf_config["vocab_size"]), d), "wpe.weight": (model["max_len"], d),
              "ln_f.weight": (d,), "ln_f.bias": (d,)}
    for i in range(model["num_layers"]):
        for name, shape in (("ln_1", (d,)), ("ln_2", (d,))):
            shapes[f"h.{i}.{name}.weight"] = shapes[f"h.{i}.{name}.bias"] = shape
        for name, (n_in, n_out) in (("attn.c_attn", (d, 3 * d)), ("attn.c_proj", (d, d)),
                                    ("mlp.c_fc", (d, inner)), ("mlp.c_proj", (inner, d))):
            shapes[f"h.{i}.{name}.weight"], shapes[f"h.{i}.{name}.bias"] = (n_in, n_out), (n_out,)
    return shapes


def params_from_hf(tensors: Mapping[str, np.ndarray], hf_config: Mapping[str, Any]) -> dict:
    """The lab's parameter tree (nested dict of numpy arrays) of a GPT-2 state dict."""
    model = lab_model_config(hf_config)
    t = _strip(tensors)
    for name, shape in expected_shapes(hf_config).items():
        if name in t and tuple(np.shape(t[name])) != shape:
            raise ValueError(f"GPT-2 checkpoint tensor {name!r} has shape {tuple(np.shape(t[name]))}; its config "
                             f"(n_embd {model['width']}, n_inner {model['ffn_dim']}, vocab_size "
                             f"{hf_config['vocab_size']}) needs {shape}")
    width, heads, head_dim = model["width"], model["num_heads"], model["head_dim"]
    ln = lambda name: {"scale": t.pop(f"{name}.weight"), "bias": t.pop(f"{name}.bias")}
    dense = lambda name: {"kernel": t.pop(f"{name}.weight"), "bias": t.pop(f"{name}.bias")}
    try:
        params = {"embed": {"embedding": t.pop("wte.weight")}, "pos_embed": t.pop("wpe.weight"),
                  "ln_final": ln("ln_f")}
        for i in range(model["num_layers"]):
            h = f"h.{i}"
            qkv_w, qkv_b = t.pop(f"{h}.attn.c_attn.weight"), t.pop(f"{h}.attn.c_attn.bias")
            attn = {name: {"kernel": w.reshape(width, heads, head_dim), "bias": b.reshape(heads, head_dim)}
                    for name, w, b in zip(("query", "key", "value"), np.split(qkv_w, 3, axis=1),
                                          np.split(qkv_b, 3))}
            out = dense(f"{h}.attn.c_proj")
            attn["out"] = {"kernel": out["kernel"].reshape(heads, head_dim, width), "bias": out["bias"]}
            params[f"block_{i}"] = {"ln_attn": ln(f"{h}.ln_1"), "attn": attn, "ln_ffn": ln(f"{h}.ln_2"),
                                    "ffn_in": dense(f"{h}.mlp.c_fc"), "ffn_out": dense(f"{h}.mlp.c_proj")}
    except KeyError as e:
        raise ValueError(f"GPT-2 checkpoint lacks {e.args[0]!r} for its config ({model['num_layers']} layers): "
                         f"is it a GPT-2 (Hugging Face layout) checkpoint?") from None
    if t:
        raise ValueError(f"GPT-2 checkpoint has tensors the model does not use: {sorted(t)[:5]}")
    return params


def _uniform(model: Mapping[str, Any], field: str) -> int:
    value = model[field]
    values = set(value) if isinstance(value, (list, tuple)) else {value}
    if len(values) != 1:
        raise ValueError(f"GPT-2 has the same {field} in every layer; this model has {list(value)} "
                         f"(a structured export): it cannot be written in the GPT-2 layout")
    return int(values.pop())


def hf_config_from_model(model: Mapping[str, Any], vocab_size: int) -> dict:
    """The Hugging Face GPT-2 config.json of a lab model config, or a ValueError naming what GPT-2 cannot hold."""
    if model.get("name") != "char_transformer":
        raise ValueError(f"only the char_transformer writes as GPT-2 (got model {model.get('name')!r})")
    for field, gpt2 in (("tie_embeddings", True), ("embed_dim", None), ("low_rank", None)):
        if (model.get(field) or None) != gpt2:
            raise ValueError(f"GPT-2 needs model.{field} = {gpt2!r} (got {model.get(field)!r}): this model cannot "
                             f"be written in the GPT-2 layout")
    heads, head_dim, width = _uniform(model, "num_heads"), int(model["head_dim"]), int(model["width"])
    if heads * head_dim != width:
        raise ValueError(f"GPT-2 needs num_heads x head_dim = width; this model has {heads} x {head_dim} != {width}")
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": int(vocab_size),
            "n_positions": int(model["max_len"]), "n_embd": width, "n_layer": int(model["num_layers"]),
            "n_head": heads, "n_inner": _uniform(model, "ffn_dim"), "activation_function": "gelu_new",
            "layer_norm_epsilon": float(model.get("layer_norm_epsilon", 1e-6)), "tie_word_embeddings": True}


def hf_from_params(params: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The GPT-2 state dict (Hugging Face names, Conv1D layout, fused QKV) of the lab's parameters."""
    num_layers = int(model["num_layers"])
    f32 = lambda a: np.ascontiguousarray(np.asarray(a, np.float32))
    out = {"wte.weight": f32(params["embed"]["embedding"]), "wpe.weight": f32(params["pos_embed"]),
           "ln_f.weight": f32(params["ln_final"]["scale"]), "ln_f.bias": f32(params["ln_final"]["bias"])}
    for i in range(num_layers):
        b, h = params[f"block_{i}"], f"h.{i}"
        attn = b["attn"]
        width = np.shape(attn["query"]["kernel"])[0]
        out[f"{h}.attn.c_attn.weight"] = f32(np.concatenate(
            [np.reshape(attn[n]["kernel"], (width, -1)) for n in ("query", "key", "value")], axis=1))
        out[f"{h}.attn.c_attn.bias"] = f32(np.concatenate([np.reshape(attn[n]["bias"], -1)
                                                          for n in ("query", "key", "value")]))
        out[f"{h}.attn.c_proj.weight"] = f32(np.reshape(attn["out"]["kernel"], (-1, width)))
        out[f"{h}.attn.c_proj.bias"] = f32(attn["out"]["bias"])
        for lab, hf in (("ln_attn", "ln_1"), ("ln_ffn", "ln_2")):
            out[f"{h}.{hf}.weight"], out[f"{h}.{hf}.bias"] = f32(b[lab]["scale"]), f32(b[lab]["bias"])
        for lab, hf in (("ffn_in", "mlp.c_fc"), ("ffn_out", "mlp.c_proj")):
            out[f"{h}.{hf}.weight"], out[f"{h}.{hf}.bias"] = f32(b[lab]["kernel"]), f32(b[lab]["bias"])
    return out


def read(path: str) -> tuple[dict, dict, dict]:
    """(lab params, lab model config, Hugging Face config) of the GPT-2 checkpoint folder `path`."""
    from safetensors.numpy import load_file

    if not is_checkpoint(path):
        raise FileNotFoundError(f"{path!r} is not a GPT-2 checkpoint folder ({CONFIG_FILE} with model_type 'gpt2' "
                                f"and {WEIGHTS_FILE})")
    with open(os.path.join(path, CONFIG_FILE)) as f:
        hf_config = json.load(f)
    return params_from_hf(load_file(os.path.join(path, WEIGHTS_FILE)), hf_config), lab_model_config(hf_config), \
        hf_config


def write(path: str, params: Mapping[str, Any], model: Mapping[str, Any], vocab_size: int) -> None:
    """Writes `params` of the lab model `model` as a Hugging Face GPT-2 folder (config.json, model.safetensors)."""
    from safetensors.numpy import save_file

    hf_config = hf_config_from_model(model, vocab_size)
    tensors = hf_from_params(params, model)
    os.makedirs(path, exist_ok=True)
    save_file(tensors, os.path.join(path, WEIGHTS_FILE), metadata={"format": "pt"})
    with open(os.path.join(path, CONFIG_FILE), "w") as f:
        json.dump(hf_config, f, indent=2)


def main(argv) -> None:
    del argv
    from absl import flags

    from experiments import train

    FLAGS = flags.FLAGS
    model, params, _ = train.read_export(FLAGS.export)
    vocab = int(np.shape(params["embed"]["embedding"])[0])
    write(FLAGS.out, params, model, vocab)
    print(f"wrote GPT-2 checkpoint {FLAGS.out} ({vocab} tokens, {model['num_layers']} layers)")


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("export", None, "A lab export (RUN/export/params.safetensors) of a GPT-2-shaped model.")
    flags.DEFINE_string("out", None, "The Hugging Face GPT-2 folder to write.")
    flags.mark_flags_as_required(["export", "out"])
    app.run(main)
