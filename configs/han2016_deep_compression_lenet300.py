"""Han, Mao, Dally 2016, "Deep Compression": prune, then share weights by k-means, then Huffman-code (LeNet-300-100).

Paper (MNIST): 1,070 KB -> 27 KB (40x) at 1.58 % error; pruning and
quantization alone 32x; 6-bit weights and 5-bit relative indices. Ours
(Fashion-MNIST), the paper's stage-by-stage table with bytes measured on
disk at each stage:

1. dense: configs/han2015_lenet300.py:sgd_dense (its export, float32);
2. `pruned`: han2015_lenet300:sgd, the paper's iterative prune-retrain with SGD
   and L2, each layer keeping KEPT_SCALE times the paper's kept fraction (its
   export: values + indices);
3. `clustered`: that pruned model (runs/han2016_deep_compression_lenet300_pruned,
   the same seed) with each kernel's nonzero weights shared by 2^BITS k-means
   centroids from a linear initialisation (compression/weight_clustering.py),
   the centroids fine-tuned for FINETUNE_EPOCHS with the assignments and the
   zeros fixed; exported as BITS-bit codes, the codebook and the sparse positions;
4. `huffman`: the same run's codes and relative indices Huffman-coded
   (compression/huffman.py).

Training holds out the selection split, as the pruned model's did, and the
pruning rate, then the bits, are chosen there by one rule: the fewest bytes on
disk among the settings whose selection accuracy is within half a point of the
best setting's (`kept_scale=K`, `bits=B` set them, e.g. `clustered,bits=4`):
    python -m experiments.select --config=han2016_deep_compression_lenet300:pruned \
        --grid=arg.kept_scale=0.5,0.75,1,1.5,2 --smallest=compression.bytes_exported --within=0.005
    python -m experiments.select --config=han2016_deep_compression_lenet300:huffman \
        --grid=compression.stages.0.bits=2,3,4,5,6,8 \
        --smallest=compression.bytes_exported --within=0.005
(seed 0; paper/selection/han2016_deep_compression_lenet300_{pruned,huffman}.json;
the second on the `pruned` runs at the chosen KEPT_SCALE, trained first by
`python -m experiments.reproduce --configs=han2016_deep_compression_lenet300:pruned --seeds=0,1,2`).
Append `_quick` for a CPU check (it starts from `pruned_quick`).
"""
from configs import common, han2015_lenet300, pruning_common

KINDS = ("clustered", "huffman", "pruned")
# Chosen on the selection split (paper/selection/han2016_deep_compression_lenet300_huffman.json, seed 0, on the
# pruned model at KEPT_SCALE): selection accuracy 88.80 / 89.34 / 89.54 / 89.58 / 89.56 / 89.62 % at 2 / 3 / 4 /
# 5 / 6 / 8 bits; 3 is the fewest bytes within half a point of the best (the paper used 6).
BITS = 3
# Chosen on the selection split (paper/selection/han2016_deep_compression_lenet300_pruned.json, seed 0):
# selection accuracy 87.82 / 88.40 / 89.14 / 89.58 / 89.66 % at 0.5 / 0.75 / 1 / 1.5 / 2 times the paper's
# kept fractions; 1.5 (12 / 13.5 / 39 % of each layer kept) is the smallest within half a point of the best.
KEPT_SCALE = 1.5
FINETUNE_EPOCHS = 2
NAME = "han2016_deep_compression_lenet300"


def pruned_export(name: str, quick: bool, kept_scale: float, default_scale: float) -> str:
    """The export of `name`'s `pruned` run at `kept_scale`: the folder experiments.reproduce gives
    --configs=NAME:pruned[_quick][,kept_scale=K] ({seed} is left for the driver, provenance.seeded_path)."""
    folder = f"{name}_pruned" + ("_quick" if quick else "") + (
        f",kept_scale={kept_scale:g}" if kept_scale != default_scale else "")
    return f"runs/{folder}/seed_{{seed}}/export/params.safetensors"


def deep_compression(config, pruned_export: str, bit_rules, huffman: bool, quick: bool) -> None:
    """Turns `config` (the pruned run's) into the clustering stage on `pruned_export`: one `cluster` per (select, bits)."""
    config.init_from = pruned_export
    config.train.num_steps = FINETUNE_EPOCHS * pruning_common.STEPS_PER_EPOCH // (10 if quick else 1)
    config.optimizer.update(name="adam", learning_rate=1e-4, schedule="cosine", weight_decay=0.0, momentum=0.0)
    for key in ("restarts", "restart_scale"):  # the pruned run's cosine restarts
        if key in config.optimizer:
            del config.optimizer[key]
    config.compression.stages = [{"technique": "cluster", "name": f"cluster_{i}", "select": select, "bits": bits,
                                  "huffman": huffman} for i, (select, bits) in enumerate(bit_rules)]
    config.export.codecs = ((".*", "dense"),)


def pruned_config(han2015_module, quick: bool, kept_scale: float):
    """The pruning stage: `han2015_module`'s SGD pipeline at `kept_scale` times the paper's kept fractions."""
    return han2015_module.get_config(("sgd_quick" if quick else "sgd") + f",kept_scale={kept_scale}")


def get_config(arg: str = "clustered"):
    arg = common.parse_arg(arg, __file__, kind=("clustered", KINDS), quick=False, bits=BITS, kept_scale=KEPT_SCALE)
    config = pruned_config(han2015_lenet300, arg.quick, arg.kept_scale)
    if arg.kind == "pruned":
        return config
    deep_compression(config, pruned_export(NAME, arg.quick, arg.kept_scale, KEPT_SCALE), [(".*kernel", arg.bits)],
                     arg.kind == "huffman", arg.quick)
    return config
