"""Han, Mao, Dally 2016, "Deep Compression" on LeNet-5: prune, k-means weight sharing, Huffman coding.

Paper (MNIST): 1,720 KB -> 44 KB (39x) at 0.74 % error; pruning and
quantization alone 33x; 8-bit conv and 5-bit FC weights. Ours (Fashion-MNIST):
the stages of configs/han2016_deep_compression_lenet300.py on LeNet-5
(`pruned`: han2015_lenet5:sgd at KEPT_SCALE times the paper's kept
fractions), with CONV_BITS for the convolutions and FC_BITS for the dense
layers (`kept_scale=`, `conv_bits=`, `fc_bits=` set them), chosen on the
selection split as LeNet-300-100's are (the fewest bytes within half a point
of the best selection accuracy):
    python -m experiments.select --config=han2016_deep_compression_lenet5:pruned \
        --grid=arg.kept_scale=0.75,1,1.5 --smallest=compression.bytes_exported --within=0.005
    python -m experiments.select --config=han2016_deep_compression_lenet5:huffman \
        --grid=compression.stages.0.bits=4,5,6,8 --grid=compression.stages.1.bits=3,4,5,6 \
        --smallest=compression.bytes_exported --within=0.005
(a pruned point trains about 47 minutes here, hence three). Variants `pruned`,
`clustered`, `huffman`, each with `_quick`.
"""
from configs import common, han2015_lenet5
from configs.han2016_deep_compression_lenet300 import KINDS, deep_compression, pruned_config, pruned_export

# Chosen on the selection split by the two grids above (paper/selection/NAME_{pruned,huffman}.json):
# the paper's rates (kept_scale 1.0; 1.5 scored best, 0.75 fell out of the half-point band) and 4-bit
# conv / 3-bit FC weights (every bits pair lay within 0.3 points of the best; 4/3 is the smallest).
CONV_BITS = 4
FC_BITS = 3
KEPT_SCALE = 1.0  # the paper's per-layer rates (han2015_lenet5.FINAL_SPARSITY)
NAME = "han2016_deep_compression_lenet5"


def get_config(arg: str = "clustered"):
    arg = common.parse_arg(arg, __file__, kind=("clustered", KINDS), quick=False, conv_bits=CONV_BITS,
                           fc_bits=FC_BITS, kept_scale=KEPT_SCALE)
    config = pruned_config(han2015_lenet5, arg.quick, arg.kept_scale)
    if arg.kind == "pruned":
        return config
    deep_compression(config, pruned_export(NAME, arg.quick, arg.kept_scale, KEPT_SCALE),
                     [("Conv_.*/kernel", arg.conv_bits), ("Dense_.*/kernel", arg.fc_bits)],
                     arg.kind == "huffman", arg.quick)
    return config
