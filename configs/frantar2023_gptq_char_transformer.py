"""Frantar et al. 2023, GPTQ: one-shot 4- and 3-bit weights with error feedback, against round-to-nearest.

Paper: OPT and BLOOM at 4 bits stay within a small fraction of the float
perplexity where round-to-nearest (RTN) degrades, and at 3 bits RTN
collapses while GPTQ holds; grouping (one scale per 128 inputs) helps both.
Ours: the trained Shakespeare Transformer, every block's attention and FFN
kernels (configs/one_shot_common.py) at BITS, asymmetric min-max codes per
output (GROUP `pc`, per channel) or per group of 32 inputs (`g32`), by `gptq` (Cholesky error feedback,
block 128, dampening 1 %; `_act`: activation order) or `rtn` (the same grid,
rounded to nearest: `error_feedback=False`); no fine-tuning. The export
stores the codes at their width and the scales once per group (`packed`
codec); results.json has its bytes. Variants METHOD_BITS_GROUP[_act][_quick].
"""
from configs import common, one_shot_common

METHODS = ("gptq", "rtn")
BITS = (4, 3)
GROUPS = ("pc", "g32")  # one scale per output (per channel), or per group of 32 inputs


def get_config(arg: str = "gptq_4_pc"):
    arg = common.parse_arg(arg, __file__, method=("gptq", METHODS), bits=(4, BITS), group=("pc", GROUPS),
                           act=False, quick=False)
    config = one_shot_common.pretrained("char_transformer", arg.quick)
    config.compression.stages = [{"technique": "gptq", "select": one_shot_common.BLOCK_KERNELS, "bits": arg.bits,
                                  "group_size": 0 if arg.group == "pc" else int(arg.group[1:]), "act_order": arg.act,
                                  "error_feedback": arg.method == "gptq", "block_size": 128}]
    return config
