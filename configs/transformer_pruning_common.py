"""Shared setup of the Transformer pruning reproductions: start from the trained baseline's export.

Run configs/baseline_char_transformer.py first (python -m experiments.reproduce
--configs=baseline_char_transformer); its export in runs/baseline_char_transformer/
is the pretrained model these configs prune. Without fine-tuning (`num_steps`
= 0) a run only evaluates and exports the pruned model; `_ft` variants
fine-tune for FINETUNE_STEPS at a small constant learning rate. The pruning
configs' variants are LEVEL[_ft][_quick] (common.parse_arg with ft and quick flags).
"""
from configs import baseline_char_transformer

PRETRAINED = "runs/baseline_char_transformer/export/params.safetensors"
FINETUNE_STEPS = 300


def pretrained_config(finetune: bool, quick: bool = False):
    """The baseline Transformer config, initialised from the trained export, per-layer lists spelled out."""
    config = baseline_char_transformer.get_config()
    layers = config.model.num_layers
    config.model = {**config.model.to_dict(), "num_heads": [config.model.num_heads] * layers,
                    "ffn_dim": [config.model.ffn_dim] * layers}
    config.init_from = PRETRAINED
    config.train.num_steps = (FINETUNE_STEPS // (10 if quick else 1)) if finetune else 0
    config.train.checkpoint_every = 100
    config.optimizer.update(schedule="constant", learning_rate=3e-4, warmup_steps=0)
    if quick:
        config.train.eval_batch_size = 64
    return config

