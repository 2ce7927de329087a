"""A GPT-2-small-shaped Transformer on synthetic tokens, sharded over a (data, model) mesh: the lab at scale.

The shape of GPT-2 small (Radford et al. 2019): 12 layers, 768 wide, 12 heads
of 64, FFN 3072, context 1024, a vocabulary of 50,257 tokens, the output
projection tied to the token embedding: 124,439,808 parameters (the
`CharTransformer` with `tie_embeddings`; the LayerNorms and biases as in
GPT-2). The data are synthetic tokens (`dataset.name = "synthetic"`, what a
machine without the data and a throughput benchmark use), so the loss says
nothing about language: the config exists to show that the driver and the
techniques hold at this shape, sharded, in bfloat16.

Sharding: over `model`, attention heads (query/key/value kernels on their
heads axis, the output kernel on its heads axis) and FFN columns (ffn_in's
output axis, ffn_out's input axis), Megatron-style (Shoeybi et al. 2019);
over `data`, the batch and each kernel's other axis (fully sharded data
parallelism, Rajbhandari et al. 2020's ZeRO-3), so the devices hold one copy
of the weights and of Adam's state between them; the embeddings along their
width over `model` (50,257 rows divide by neither axis). Compute in bfloat16
(`precision.compute`), parameters and Adam's state in float32; `model.remat`
recomputes each block in the backward pass. The full variant's mesh is
data = every device / model 2; on one accelerator, add
--config.mesh.model=1.

Variants: [quick][_prune][_quantize][_fp32], e.g. `quick_prune`:
- quick: 3 steps at context 128, batch 8, on a data 4 x model 2 mesh, the
  8 host devices of a CPU (XLA_FLAGS=--xla_force_host_platform_device_count=8);
- prune: a magnitude `prune` stage, 50 % of every kernel, gradual over the
  run (Zhu & Gupta 2017, masks re-scored every 100 steps; with quick's 3
  steps, one shot after the first step) — the pruning transform at this shape;
- quantize: an 8-bit symmetric per-channel `quantize` stage (QAT) on every
  kernel and the embeddings — the quantization transform at this shape;
- fp32: float32 compute instead of bfloat16.
"""
from configs import common, default

LAYERS, WIDTH, HEADS, HEAD_DIM, FFN, CONTEXT, VOCAB = 12, 768, 12, 64, 3072, 1024, 50257

# Tensor parallel over `model` (Megatron's split: heads, FFN columns) and fully sharded data
# parallel over `data` (each weight's other axis split over the data devices, gathered by XLA
# where it is used, as ZeRO-3 / FSDP do): one copy of the weights and of Adam's state in all.
PARTITION_RULES = (
    (r".*attn/(query|key|value)/kernel", ("data", "model", None)),  # (width, heads, head_dim)
    (r".*attn/(query|key|value)/bias", ("model", None)),
    (r".*attn/out/kernel", ("model", None, "data")),  # (heads, head_dim, width)
    (r".*ffn_in/kernel", ("data", "model")),
    (r".*ffn_in/bias", ("model",)),
    (r".*ffn_out/kernel", ("model", "data")),
    # 50,257 rows divide by neither axis: the embeddings are split along their width, over
    # `model` only (split over both, the activations they produce would need a full reshuffle).
    (r"embed/embedding", (None, "model")),
    (r"pos_embed", (None, "model")),
    (r".*", ()),
)


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False, prune=False, quantize=False, fp32=False)
    config = default.get_config()
    context = 128 if arg.quick else CONTEXT
    config.dataset = {"name": "synthetic", "kind": "language_model", "num_classes": VOCAB, "seq_len": context,
                      "train_size": 2_000_000, "eval_size": 16 * CONTEXT + 1}
    config.model = {"name": "char_transformer", "max_len": CONTEXT, "width": WIDTH, "num_layers": LAYERS,
                    "num_heads": HEADS, "head_dim": HEAD_DIM, "ffn_dim": FFN, "embed_dim": None,
                    "dropout_rate": 0.0, "tie_embeddings": True, "remat": False}
    # nanoGPT's GPT-2 recipe: AdamW, peak 6e-4 after a warmup, cosine decay, clipping at 1.
    config.optimizer = {"name": "adamw", "learning_rate": 6e-4, "schedule": "cosine", "warmup_steps": 100,
                        "weight_decay": 0.1, "grad_clip": 1.0}
    config.precision.compute = "float32" if arg.fp32 else "bfloat16"
    config.train.update(num_steps=1000, batch_size=16, eval_batch_size=16, log_every=50, checkpoint_every=500,
                        eval_max_batches=4)
    config.mesh.update(data=-1, model=2, partition_rules=PARTITION_RULES)
    if arg.quick:
        config.train.update(num_steps=3, batch_size=8, eval_batch_size=8, log_every=1, checkpoint_every=3)
        config.optimizer.warmup_steps = 1
        config.mesh.data = 4
    stages = []
    if arg.prune:
        # Re-scoring sorts every kernel: every 100 steps, not every step.
        schedule = ({"kind": "one_shot", "sparsity": 0.5, "at_step": 1} if arg.quick else
                    {"kind": "polynomial", "final_sparsity": 0.5, "begin_step": 0,
                     "end_step": config.train.num_steps // 2, "frequency": 100})
        stages.append({"technique": "prune", "select": ".*kernel", "sparsity": schedule,
                       "criterion": "magnitude", "scope": "layer"})
    if arg.quantize:
        stages.append({"technique": "quantize", "select": ".*(kernel|embedding)", "scheme": "uniform", "bits": 8,
                       "symmetric": True, "per_channel": True})
    config.compression.stages = stages
    return config
