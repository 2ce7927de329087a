"""Defaults every experiment config starts from (Flax-examples style: import, then change a few fields)."""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """The shared defaults; an experiment config overrides dataset, model, optimizer and train."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.data_dir = ".data"
    # Start from an earlier run's export (DIR/export/params.safetensors) instead of a random init.
    config.init_from = ""
    # With init_from: which top-level module of the export each module of this model starts
    # from, [[this model's module, the export's module], ...]; unnamed modules keep their name.
    # DistilBERT's student: [["block_0", "block_0"], ["block_1", "block_2"]] from a 4-layer teacher.
    config.init_layers = []
    # The model's config read from an export's header instead of config.model (an architecture a
    # search found, say: its export records the model it is); with init_from empty the model is
    # trained from scratch, with the same path it starts from those weights.
    config.model_from = ""
    # What runs the config: "train" (experiments.train, the driver) or "nas" (experiments.nas:
    # a SuperTransformer search, or the export of one model it found).
    config.runner = "train"

    config.dataset = ml_collections.ConfigDict({
        "name": "fashion_mnist", "eval_split": "test",
        # The selection split, on which every choice a config makes is made (the reported
        # number stays on eval_split). Image datasets hold out `selection_size` training
        # examples drawn by `selection_seed` (not config.seed, so every seed of a reproduction
        # selects on the same images); training shrinks by as many. 0: none, which keeps
        # today's training data for existing configs; new reproduction configs set 5000
        # (of Fashion-MNIST's 60,000).
        "selection_size": 0,
        "selection_seed": 0,
        # Shakespeare holds out works instead: every val_every-th in sorted order from
        # this offset (5: Cymbeline, Julius Caesar, Othello, The Tempest); -1: none.
        "selection_offset": -1,
        # Training-batch augmentation, drawn from (seed, step) so a resumed run is
        # bit-identical; images only. shift: random translation by up to N pixels each way,
        # zero-filled (Hinton et al. 2015); crop: pad N and crop back (CIFAR-10's pad-4 crop;
        # not with shift); flip: horizontal flip with probability 1/2. 0/False: off.
        "augment": {"shift": 0, "crop": 0, "flip": False},
    })
    config.model = ml_collections.ConfigDict({"name": "mlp", "hidden": (300, 100)})

    config.optimizer = ml_collections.ConfigDict({
        "name": "adam", "learning_rate": 1e-3, "schedule": "cosine", "warmup_steps": 0, "grad_clip": 0.0})

    config.train = ml_collections.ConfigDict({
        "num_steps": 1000,
        "batch_size": 128,
        "eval_batch_size": 1000,
        "log_every": 100,
        "checkpoint_every": 1000,
        "eval_every": 0,  # 0: evaluate at the end only
        "eval_max_batches": 0,  # 0: the whole evaluation split
        "stop_after": 0,  # > 0: stop (checkpointed) after this many steps; rerun to resume
        # k > 1: each step's batch_size examples are k micro-batches whose gradients are averaged
        # inside the jitted step (one optimizer update), so a global batch k times larger than
        # what fits in memory trains as one batch.
        "grad_accum_steps": 1,
    })

    # The precision policy: parameters, gradients, optimizer state and every technique's
    # transform (masks, fake quantization, factors) are float32; `compute` is the dtype the
    # train and eval steps' forward and backward passes run in: float32, or bfloat16 (each
    # module casts its float32 parameters where it uses them; softmax, normalisation
    # statistics, logits and loss stay float32). Calibration at init and exports are float32.
    config.precision = ml_collections.ConfigDict({"compute": "float32"})

    # A (data, model) mesh; data=-1 takes all devices. Partition rules are
    # first-match (regex over parameter paths, spec per axis); every
    # parameter must match one.
    config.mesh = ml_collections.ConfigDict({
        "data": -1, "model": 1, "distributed": False,
        "partition_rules": ((".*", ()),),
    })

    # The training loss: named pure terms added up, each times its weight
    # (compression/losses.py: cross_entropy with optional label_smoothing, l2, ...).
    config.loss = [{"term": "cross_entropy"}]
    # A teacher for distillation terms: an earlier run's export (its header names its model);
    # or that run's directory. Empty: no teacher. mode "in_step": it runs in the jitted step in
    # eval mode, without gradients; "precomputed": its logits over this run's training batches
    # are computed once into the folder `outputs` (reused by any run with the same transfer set)
    # and read from there (experiments/teacher_outputs.py); top_k > 0 (language models) keeps the
    # k largest logits per position in float16.
    config.teacher = ml_collections.ConfigDict({"export": "", "mode": "in_step", "outputs": "", "top_k": 0})

    # Compression: a chain of registered techniques, each a dict
    # {"technique": name, **settings}; chain(a, b) means "a, then b".
    config.compression = ml_collections.ConfigDict({"stages": [], "init_batches": 0})

    # How the effective params are written: first-match (regex, codec) rules over
    # parameter paths; codecs: dense, sparse (values + compact indices), ...
    # int8_eval: also evaluate the export with every Dense on int8 codes and int32 accumulation
    # (compression/int8_inference.py), reported as int8_test_accuracy beside the fake-quant metrics.
    config.export = ml_collections.ConfigDict({"codecs": ((".*", "dense"),), "int8_eval": False})
    return config
