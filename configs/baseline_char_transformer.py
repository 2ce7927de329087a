"""The causal character Transformer on Shakespeare (held-out plays): the language-model baseline.

Validation loss is reported in nats per character beside the unigram entropy
of the validation text. `:quick` trains a few hundred steps.
"""
from configs import common, default


def get_config(arg: str = ""):
    arg = common.parse_arg(arg, __file__, quick=False)
    config = default.get_config()
    config.dataset = {"name": "shakespeare", "seq_len": 128, "val_every": 10, "val_offset": 0}
    config.model = {"name": "char_transformer", "max_len": 128, "width": 128, "num_layers": 4,
                    "num_heads": 4, "head_dim": 32, "ffn_dim": 512, "embed_dim": None, "dropout_rate": 0.0}
    config.optimizer = {"name": "adamw", "learning_rate": 2e-3, "schedule": "cosine", "warmup_steps": 200,
                        "weight_decay": 0.01, "grad_clip": 1.0}
    config.train.batch_size = 32
    config.train.eval_batch_size = 64
    config.train.num_steps = 4000
    config.train.log_every = 100
    config.train.checkpoint_every = 500
    if arg.quick:
        config.train.num_steps = 300
        config.train.checkpoint_every = 300
    return config
