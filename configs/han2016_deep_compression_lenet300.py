"""Han, Mao, Dally 2016, "Deep Compression": prune, then share weights by k-means, then Huffman-code (LeNet-300-100).

Paper (MNIST): 1,070 KB -> 27 KB (40x) at 1.58 % error; pruning and
quantization alone 32x; 6-bit weights and 5-bit relative indices. Ours
(Fashion-MNIST), the paper's stage-by-stage table with bytes measured on
disk at each stage:

1. dense: configs/han2015_lenet300.py:sgd_dense (its export, float32);
2. pruned: han2015_lenet300:sgd, the paper's iterative prune-retrain with SGD
   and L2 to its per-layer rates (its export: values + indices);
3. `clustered`: that pruned model (runs/han2015_lenet300_sgd, the same seed)
   with each kernel's nonzero weights shared by 2^BITS k-means centroids from
   a linear initialisation (compression/weight_clustering.py), the centroids
   fine-tuned for FINETUNE_EPOCHS with the assignments and the zeros fixed;
   exported as BITS-bit codes, the codebook and the sparse positions;
4. `huffman`: the same run's codes and relative indices Huffman-coded
   (compression/huffman.py).

Training holds out the selection split, as the pruned model's did, so the
bits are chosen there (`bits=B` sets them, e.g. `clustered,bits=4`): the
fewest bytes on disk among the bit widths whose selection accuracy is within
half a point of the best width's,
    python -m experiments.select --config=han2016_deep_compression_lenet300:huffman \
        --grid=compression.stages.0.bits=2,3,4,5,6,8 \
        --smallest=compression.bytes_exported --within=0.005
(seed 0; paper/selection/han2016_deep_compression_lenet300_huffman.json).
Append `_quick` for a CPU check (it starts from han2015_lenet300:sgd_quick).
"""
from configs import common, han2015_lenet300, pruning_common

KINDS = ("clustered", "huffman")
BITS = 6  # the paper's, for every layer of LeNet-300-100
FINETUNE_EPOCHS = 2
# {quick} is "" or "_quick"; {seed} is left for the driver (experiments.provenance.seeded_path).
PRUNED_EXPORT = "runs/han2015_lenet300_sgd{quick}/seed_{{seed}}/export/params.safetensors"


def deep_compression(config, pruned_export: str, bit_rules, huffman: bool, quick: bool) -> None:
    """Turns `config` (the pruned run's) into the clustering stage on `pruned_export`: one `cluster` per (select, bits)."""
    config.init_from = pruned_export.format(quick="_quick" if quick else "")
    config.train.num_steps = FINETUNE_EPOCHS * pruning_common.STEPS_PER_EPOCH // (10 if quick else 1)
    config.optimizer.update(name="adam", learning_rate=1e-4, schedule="cosine", weight_decay=0.0, momentum=0.0)
    for key in ("restarts", "restart_scale"):  # the pruned run's cosine restarts
        if key in config.optimizer:
            del config.optimizer[key]
    config.compression.stages = [{"technique": "cluster", "name": f"cluster_{i}", "select": select, "bits": bits,
                                  "huffman": huffman} for i, (select, bits) in enumerate(bit_rules)]
    config.export.codecs = ((".*", "dense"),)


def get_config(arg: str = "clustered"):
    arg = common.parse_arg(arg, __file__, kind=("clustered", KINDS), quick=False, bits=BITS)
    config = han2015_lenet300.get_config("sgd_quick" if arg.quick else "sgd")
    deep_compression(config, PRUNED_EXPORT, [(".*kernel", arg.bits)], arg.kind == "huffman", arg.quick)
    return config
