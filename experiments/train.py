"""The one driver: a jitted, sharded train/eval loop for every experiment.

A technique enters through the config (`config.compression.stages`, a chain
of registered transforms), never through a branch here. The loop keeps
metrics on the device and reads them every `log_every` steps; after
dispatching step i it waits on step i-1 only (see STYLE.md: a host sync each
step costs 2-3x on a GPU, free-running dispatch can abort on a CPU mesh).
Training batches are pure functions of (seed, step) and the train state is
checkpointed with orbax, so a resumed run ends exactly where an
uninterrupted one would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import json
import logging as logging_lib
import math
import os
import platform
import signal
import threading
import time
from typing import Any, Callable, Iterator, Optional, Sequence

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from absl import logging
from tqdm import tqdm

from compression import accounting, distillation, export, intercept, losses, registry, settings
from compression.selection import match_rules, path_str
from compression.transform import InitBatches, Transform, export_model
from configs import default as default_config
from experiments import data as data_lib
from experiments import teacher_outputs as teacher_outputs_lib
from experiments import gpt2_format, models, multihost, provenance
from experiments import workdir as workdir_lib
from experiments.metrics_log import MetricsLog

# ---------------------------------------------------------------- mesh and sharding


def create_mesh(mesh_config: Any) -> Mesh:
    """A (data, model) device mesh; `data = -1` takes every device not used by `model`."""
    devices = jax.devices()
    model = int(mesh_config.get("model", 1))
    data = int(mesh_config.get("data", -1))
    if model < 1:
        raise ValueError(f"mesh.model must be >= 1 (got {model})")
    if data == -1:
        data = max(1, len(devices) // model)
    if data < 1 or data * model > len(devices):
        raise ValueError(f"mesh data={data} x model={model} needs {data * model} devices but "
                         f"{len(devices)} are available (on CPU, set XLA_FLAGS="
                         f"--xla_force_host_platform_device_count=N before jax is imported)")
    if data * model < len(devices):
        logging.warning("the mesh (data=%d x model=%d) uses %d of the %d devices; the others stay idle "
                        "(mesh.data=-1 takes every device)", data, model, data * model, len(devices))
    return Mesh(np.asarray(devices[:data * model]).reshape(data, model), ("data", "model"))


def hardware(mesh: Mesh) -> dict[str, Any]:
    """What a run ran on (results.json `hardware`): platform, devices present and used, mesh shape, processes."""
    return {"platform": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
            "device_count": jax.device_count(), "devices_used": int(mesh.devices.size),
            "mesh": {name: int(size) for name, size in mesh.shape.items()},
            "process_count": jax.process_count()}


def param_specs(tree: Any, rules: Any, mesh: Mesh) -> Any:
    """PartitionSpecs for every leaf of `tree` from first-match (regex, spec) rules.

    A leaf no rule matches is an error (policies cover every parameter), and
    so is a sharded dimension that the mesh axis does not divide.
    """
    rules = [(pattern, tuple(spec)) for pattern, spec in rules]
    specs = match_rules(tree, [(p, _Spec(s)) for p, s in rules], what="mesh.partition_rules",
                        allow_unused=True)

    def check(kp, leaf, spec):
        axes = spec.axes
        if len(axes) > np.ndim(leaf):
            raise ValueError(f"partition rule {axes} has more axes than {path_str(kp)} of shape {np.shape(leaf)}")
        for dim, axis in zip(np.shape(leaf), axes):
            # One dimension may be split over several mesh axes at once, e.g. ("data", "model")
            # shards a weight over every device (fully sharded data parallelism).
            names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
            unknown = [a for a in names if a not in mesh.shape]
            if unknown:
                raise ValueError(f"partition rule {axes} for {path_str(kp)} names mesh axes {unknown}; the mesh "
                                 f"has {list(mesh.shape)}")
            size = int(np.prod([mesh.shape[a] for a in names]))
            if dim % size:
                raise ValueError(f"{path_str(kp)} of shape {np.shape(leaf)} cannot be split over mesh "
                                 f"axis {axis!r} of size {size} (rule {axes}); change "
                                 f"mesh.partition_rules or the mesh")
        return PartitionSpec(*(tuple(a) if isinstance(a, list) else a for a in axes))

    return jax.tree_util.tree_map_with_path(check, tree, specs)


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A partition spec held as one pytree leaf (a bare tuple would be flattened)."""

    axes: tuple


# ---------------------------------------------------------------- the driver's settings

# (dotted key, kind, lowest allowed, highest allowed); a technique checks its
# own settings when it is built (compression.registry.build).
DRIVER_SETTINGS = (
    ("seed", int, 0, 2 ** 32 - 1),
    ("train.num_steps", int, 0, None),
    ("train.batch_size", int, 1, None),
    ("train.eval_batch_size", int, 1, None),
    ("train.log_every", int, 1, None),
    ("train.checkpoint_every", int, 1, None),
    ("train.eval_every", int, 0, None),
    ("train.eval_max_batches", int, 0, None),
    ("train.stop_after", int, 0, None),
    ("train.grad_accum_steps", int, 1, None),
    ("compression.init_batches", int, 0, None),
    ("optimizer.warmup_steps", int, 0, None),
    ("optimizer.grad_clip", float, 0.0, None),
    ("optimizer.weight_decay", float, 0.0, None),
    ("optimizer.restart_scale", float, 0.0, None),
)


def check_settings(config: Any) -> None:
    """Refuses a driver setting out of its range (DRIVER_SETTINGS, the learning rate, momentum), naming it.

    Runs before any data is read: a setting that makes the run degenerate (a
    zero batch, a learning rate <= 0, an evaluation batch of 0 that would
    only fail after training) is an error, never a result.
    """
    for key, kind, low, high in DRIVER_SETTINGS:
        node = config
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        if node is None:
            continue
        if kind is int:
            settings.require_int(key, node, low=low, high=high)
        else:
            settings.require_float(key, node, low=low, high=high)
    settings.require_float("optimizer.learning_rate", config.optimizer.learning_rate, low=0.0, low_open=True,
                           fix="a run that cannot move its weights (or climbs the loss) is not a result")
    models.compute_dtype(_compute(config))
    if config.get("export", {}).get("int8_eval", False) and jax.process_count() > 1:
        raise ValueError("export.int8_eval evaluates the export file in one process; in a multi-process run "
                         "set it False and evaluate the export afterwards in a single process")
    mode = config.get("teacher", {}).get("mode", "in_step")
    if mode not in teacher_outputs_lib.MODES:
        raise ValueError(f"teacher.mode {mode!r} is not one of {teacher_outputs_lib.MODES}")
    if mode == "precomputed" and not config.teacher.get("export", ""):
        raise ValueError("teacher.mode 'precomputed' needs teacher.export: the teacher whose outputs are computed")
    if "momentum" in config.optimizer:
        settings.require_float("optimizer.momentum", config.optimizer.momentum, low=0.0, high=1.0,
                               high_open=True, fix="at 1 or above the updates never decay")


def _compute(config: Any) -> str:
    """The precision policy's compute dtype name (precision.compute; float32 in configs without it)."""
    return str(config.get("precision", {}).get("compute", "float32"))


def check_finite(tree: Any, what: str) -> None:
    """Refuses a parameter tree with a NaN or infinite entry, naming the first such path.

    Quantizing or exporting such a tensor turns it into NaN or zeros
    silently; it is refused where it enters the run.
    """
    floats = [(kp, leaf) for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
              if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)]
    # One jitted program for every leaf: eager reductions dispatched one by one on a sharded
    # CPU mesh can leave devices waiting in different programs' collectives (a deadlock).
    finite = jax.device_get(_all_finite([leaf for _, leaf in floats])) if floats else []
    bad = [path_str(kp) for (kp, _), ok in zip(floats, finite) if not ok]
    if bad:
        raise ValueError(f"{what} has non-finite values (NaN or inf) in {', '.join(bad[:5])}"
                         f"{' and more' if len(bad) > 5 else ''}; a model with them cannot be trained, "
                         f"quantized or exported: fix or re-create it")


@jax.jit
def _all_finite(leaves: list) -> jnp.ndarray:
    return jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves])


# ---------------------------------------------------------------- optimizer, loss, steps


def build_optimizer(config: Any, num_steps: int) -> optax.GradientTransformation:
    """The optax optimizer of `config.optimizer`: name, learning rate schedule, clipping, weight decay."""
    oc = config.optimizer
    lr = float(oc.learning_rate)
    warmup = int(oc.get("warmup_steps", 0))
    schedule_name = oc.get("schedule", "constant")
    if schedule_name == "constant":
        schedule = optax.constant_schedule(lr) if not warmup else optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])
    elif schedule_name == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup, max(num_steps, warmup + 1))
    elif schedule_name == "cosine_restarts":
        # One cosine decay per phase (e.g. Han et al.'s prune-then-retrain rounds): the first from
        # `learning_rate`, each later one from `learning_rate * restart_scale`.
        starts = [int(x) for x in oc.get("restarts", ())]
        if not starts or starts != sorted(set(starts)) or starts[0] <= 0 or starts[-1] >= num_steps:
            raise ValueError(f"optimizer.restarts must be increasing steps inside (0, {num_steps}) (got {starts})")
        bounds = [0, *starts, num_steps]
        scale = float(oc.get("restart_scale", 1.0))
        schedule = optax.join_schedules(
            [optax.cosine_decay_schedule(lr if i == 0 else lr * scale, bounds[i + 1] - bounds[i])
             for i in range(len(bounds) - 1)], starts)
    else:
        raise ValueError(f"unknown optimizer.schedule {schedule_name!r}; use 'constant', 'cosine' or "
                         f"'cosine_restarts'")
    name = oc.get("name", "adam")
    makers = {
        "adam": lambda: optax.adam(schedule),
        "adamw": lambda: optax.adamw(schedule, weight_decay=float(oc.get("weight_decay", 1e-4))),
        # weight_decay here is Caffe's L2 regularisation (lambda * w added to the gradient, then
        # momentum), what Han et al. 2015 train with; AdamW's is decoupled.
        "sgd": lambda: _with_l2(float(oc.get("weight_decay", 0.0)),
                                optax.sgd(schedule, momentum=float(oc.get("momentum", 0.9)) or None)),
    }
    if name not in makers:
        raise ValueError(f"unknown optimizer.name {name!r}; available: {sorted(makers)}")
    parts = []
    if float(oc.get("grad_clip", 0.0)) > 0:
        parts.append(optax.clip_by_global_norm(float(oc.grad_clip)))
    parts.append(makers[name]())
    return optax.chain(*parts)


def _with_l2(weight_decay: float, optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    # Without decay the optimizer (and its checkpointed state) is exactly the plain one.
    return optax.chain(optax.add_decayed_weights(weight_decay), optimizer) if weight_decay > 0 else optimizer


def cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray, mask: Optional[jnp.ndarray] = None):
    """Sum of softmax cross-entropy, sum of correct predictions and count, over (masked) examples.

    Works for one target per example (logits [B, C]) and one per position
    (logits [B, L, V]); the mask weights examples.
    """
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weights = jnp.ones_like(losses) if mask is None else jnp.broadcast_to(
        mask.reshape(mask.shape + (1,) * (losses.ndim - mask.ndim)), losses.shape)
    return (losses * weights).sum(), (correct * weights).sum(), weights.sum()


def make_loss(model: Any, model_state: Optional[dict] = None) -> Callable:
    """loss(params, batch): the mean training cross-entropy of the model in eval mode (no dropout).

    What data-aware techniques (SNIP, mixed precision) read at init.
    """

    def loss(params, batch):
        logits = models.apply_model(model, params, batch["inputs"], model_state=model_state, train=False)
        loss_sum, _, count = cross_entropy(logits, batch["targets"])
        return loss_sum / count

    return loss


def make_train_step(model: Any, transform: Transform, optimizer: optax.GradientTransformation,
                    loss: losses.Loss, teacher: Optional[Any] = None, micro_batches: int = 1) -> Callable:
    """train_step(state, batch, teacher_variables) -> (state, metrics): one optimizer step on the trainable.

    The loss is the configured terms over the student's outputs (logits and
    sown intermediates); the teacher, when the config names one, runs in the
    same jitted step in eval mode, and its outputs enter the loss under
    `extras["teacher"]` with no gradient. The model's collections besides
    params (BatchNorm's `batch_stats`) are carried in `state["model_state"]`
    and updated by the training forward pass.

    With `micro_batches` = k > 1 (`train.grad_accum_steps`), the batch is cut
    into k equal micro-batches whose gradients are averaged in a `lax.scan`
    inside the step, so only one micro-batch's activations are alive at a
    time; the optimizer and the techniques' updates then run once, on the
    mean gradient, which for a loss that is a mean over examples is the
    gradient of the whole batch. Micro-batch j takes examples j, j+k, j+2k,
    ...: each device's slice of a data-sharded batch holds its share of every
    micro-batch, so cutting moves no data between devices. BatchNorm's
    statistics are those of each micro-batch, updated k times in order.
    """

    def loss_fn(learnable, comp_state, model_state, batch, rng, teacher_variables):
        # learnable = (the transform's trainable, the loss terms' own parameters).
        trainable, loss_params = learnable
        params = transform.apply(trainable, comp_state)
        logits, updates = models.apply_model(
            model, params, batch["inputs"], model_state=model_state, train=True, rngs={"dropout": rng},
            mutable=[*model_state, "intermediates"])
        # Loss terms read float32 whatever the compute dtype (the models return float32 logits).
        outputs = {"logits": logits, "intermediates": _as_float32(updates.get("intermediates", {}))}
        extras = {"params": params, "loss_params": loss_params}
        precomputed = teacher_outputs_lib.teacher_logits(batch, logits.shape[-1])
        if precomputed is not None:  # teacher.mode "precomputed": the batch carries its logits
            extras["teacher"] = jax.lax.stop_gradient({"logits": precomputed.astype(jnp.float32)})
        if teacher is not None:
            extras["teacher"] = jax.lax.stop_gradient(teacher_forward(teacher, teacher_variables, batch["inputs"]))
        total, terms = loss.total(outputs, batch, extras)
        accuracy = jnp.mean((jnp.argmax(logits, -1) == batch["targets"]).astype(jnp.float32))
        metrics = {"accuracy": accuracy, **({f"loss_{k}": v for k, v in terms.items()} if len(terms) > 1 else {})}
        return total, (metrics, {k: updates[k] for k in model_state})

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def accumulated_grads(state, batch, rng, teacher_variables):
        learnable = (state["trainable"], state.get("loss_params", {}))
        if micro_batches == 1:
            return grad_fn(learnable, state["comp_state"], state["model_state"], batch, rng, teacher_variables)
        # [B, ...] -> [k, B/k, ...] with micro-batch j = examples j, j+k, ... (see the docstring).
        micro = jax.tree_util.tree_map(
            lambda x: jnp.moveaxis(x.reshape((x.shape[0] // micro_batches, micro_batches) + x.shape[1:]), 1, 0),
            batch)

        def one(carry, xs):
            (total, metrics), grads, model_state = carry
            index, micro_batch = xs
            (t, (m, model_state)), g = grad_fn(learnable, state["comp_state"], model_state,
                                               micro_batch, jax.random.fold_in(rng, index), teacher_variables)
            add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
            return ((total + t, add(metrics, m)), add(grads, g), model_state), None

        first = jax.tree_util.tree_map(lambda x: x[0], micro)
        shapes = jax.eval_shape(grad_fn, learnable, state["comp_state"], state["model_state"], first,
                                rng, teacher_variables)
        (_, (metric_shapes, _)), grad_shapes = shapes
        zeros = lambda tree: jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), tree)
        carry = ((jnp.zeros((), jnp.float32), zeros(metric_shapes)), zeros(grad_shapes), state["model_state"])
        ((total, metrics), grads, model_state), _ = jax.lax.scan(
            one, carry, (jnp.arange(micro_batches), micro))
        mean = lambda tree: jax.tree_util.tree_map(lambda x: x / micro_batches, tree)
        return (total / micro_batches, (mean(metrics), model_state)), mean(grads)

    def train_step(state, batch, teacher_variables=None):
        rng = jax.random.fold_in(state["rng"], state["step"])
        (total, (metrics, model_state)), (grads, loss_grads) = accumulated_grads(state, batch, rng,
                                                                                teacher_variables)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["trainable"])
        trainable = optax.apply_updates(state["trainable"], updates)
        trainable, comp_state = transform.update(trainable, state["comp_state"], grads, state["step"])
        # Entries a technique removed (pruned weights) keep no optimizer state; the
        # default keep is a constant 1, which XLA folds away.
        keep = transform.keep(trainable, comp_state)
        opt_state = optax.tree_utils.tree_map_params(
            optimizer, lambda leaf, k: leaf * jnp.asarray(k, leaf.dtype), opt_state, keep,
            transform_non_params=lambda leaf: leaf)
        new_state = dict(state, step=state["step"] + 1, trainable=trainable, comp_state=comp_state,
                         opt_state=opt_state, model_state=model_state)
        if "loss_params" in state:  # the loss terms' parameters, by the same optimizer, their own state
            loss_updates, new_state["loss_opt_state"] = optimizer.update(loss_grads, state["loss_opt_state"],
                                                                         state["loss_params"])
            new_state["loss_params"] = optax.apply_updates(state["loss_params"], loss_updates)
        return new_state, {"loss": total, **metrics}

    return train_step


def teacher_forward(teacher: Any, variables: dict, inputs: Any) -> dict:
    """The teacher's outputs as the loss terms read them: {"logits", "intermediates" (float32)}, in eval mode."""
    logits, updates = models.apply_model(teacher, variables["params"], inputs, model_state=variables["model_state"],
                                         train=False, mutable=["intermediates"])
    return {"logits": logits, "intermediates": _as_float32(updates.get("intermediates", {}))}


def _as_float32(tree: Any) -> Any:
    return jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float32) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_eval_step(model: Any) -> Callable:
    """eval_step(variables, batch) -> (loss_sum, correct_sum, count) over the batch's mask.

    `variables` = {"params": effective params, **model_state}.
    """

    def eval_step(variables, batch):
        params, model_state = split_variables(variables)
        logits = models.apply_model(model, params, batch["inputs"], model_state=model_state, train=False)
        return jnp.stack(cross_entropy(logits, batch["targets"], batch["mask"]))

    return eval_step


def split_variables(variables: dict) -> tuple[Any, dict]:
    """(params, the other collections) of a Flax variables dict."""
    return variables["params"], {k: v for k, v in variables.items() if k != "params"}


# ---------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """Everything built once from a config: data, model, transform, mesh, jitted steps and the state."""

    config: Any
    dataset: data_lib.Dataset
    model: Any
    transform: Transform
    mesh: Mesh
    batch_sharding: NamedSharding
    state: Any
    train_step: Any
    eval_step: Any
    apply_transform: Any
    num_steps: int
    # The model in float32, whatever precision.compute (`model` computes in it): what init-time
    # calibration reads and what an export, which loads as float32, is checked against.
    float32_model: Any
    teacher: Any = None  # (teacher model, its variables on the mesh) when config.teacher names one
    # teacher.mode "precomputed": the teacher's outputs per training step, read from disk.
    teacher_outputs: Optional[teacher_outputs_lib.TeacherOutputs] = None
    # With init batches: their count, the compression init's wall time (calibration and any
    # one-shot solve) and the calibration statistics' peak bytes (`_measured`).
    calibration: Optional[dict] = None


def _example_input(config: Any, dataset: data_lib.Dataset) -> np.ndarray:
    if dataset.kind == "language_model":
        return np.zeros((1, int(config.dataset.seq_len)), np.int32)
    return dataset.train["inputs"][:1]


def _put_batch(batch: dict, sharding: NamedSharding) -> dict:
    """This process's numpy batch as global arrays (multi-host); one process hands numpy to jit as is."""
    if jax.process_count() == 1:
        return batch
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def resolve_model_from(config: Any) -> None:
    """Sets config.model to the model config recorded in config.model_from's export header, if it names one."""
    path = provenance.seeded_path(config.get("model_from", ""), config.get("seed", 0))
    if not path:
        return
    path = provenance.export_file(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model_from {path!r} does not exist: run the config that writes it first")
    model = export.read_header(path)["metadata"].get("model")
    if not model:
        raise ValueError(f"model_from {path!r} records no model config in its header")
    config.model = model


def build_run(config: Any, dataset: Optional[data_lib.Dataset] = None) -> Run:
    """Builds the run `config` describes, with freshly initialized parameters placed on the mesh.

    Every setting is checked here, before the first step: the driver's
    (`check_settings`), the mesh's, and each technique's when it is built.
    """
    check_settings(config)
    resolve_model_from(config)
    dataset = dataset or data_lib.load_dataset(config.dataset, config.get("data_dir", ".data"))
    # The precision policy: the train and eval steps compute in precision.compute; parameters,
    # gradients, the optimizer state and the techniques' transforms stay float32, and so do the
    # init-time passes (calibration, SNIP, Hessian statistics), so a post-training export is
    # the same whatever the compute dtype.
    compute = _compute(config)
    float32_model = models.build_model(config.model, dataset.num_classes)
    model = models.build_model(config.model, dataset.num_classes, compute)
    transform = registry.build_chain(list(config.compression.get("stages", [])))
    mesh = create_mesh(config.mesh)
    num_steps = int(config.train.num_steps)
    batch_size = int(config.train.batch_size)
    for key in ("batch_size", "eval_batch_size"):
        if int(config.train[key]) % mesh.shape["data"]:
            raise ValueError(f"train.{key} {config.train[key]} is not divisible by mesh data axis "
                             f"{mesh.shape['data']}")
    micro_batches = int(config.train.get("grad_accum_steps", 1))
    if batch_size % (micro_batches * mesh.shape["data"]):
        raise ValueError(f"train.batch_size {batch_size} cannot be cut into train.grad_accum_steps="
                         f"{micro_batches} micro-batches spread over the mesh's {mesh.shape['data']} data "
                         f"devices: make it a multiple of {micro_batches * mesh.shape['data']}")
    optimizer = build_optimizer(config, num_steps)

    example = _example_input(config, dataset)
    init_key, transform_key, rng = jax.random.split(jax.random.PRNGKey(int(config.seed)), 3)
    # Its own stream, so a loss with parameters leaves every other draw as it was.
    loss_key = jax.random.fold_in(jax.random.PRNGKey(int(config.seed)), 7)
    abstract, abstract_state = jax.eval_shape(lambda k: models.init_variables(float32_model, k, example), init_key)
    shardings = param_shardings(abstract, config.mesh.partition_rules, mesh)
    params, model_state = jax.jit(lambda k: models.init_variables(float32_model, k, example),
                                  out_shardings=(shardings, None))(init_key)
    init_from = provenance.seeded_path(config.get("init_from", ""), config.seed)
    if init_from:
        params, model_state = load_pretrained(init_from, abstract, shardings, abstract_state,
                                              list(config.get("init_layers", [])))
    check_finite({"params": params, **model_state},
                 f"init_from {init_from!r}" if init_from else "the initialized model")
    teacher = load_teacher(config, dataset, mesh, compute)
    outputs = None
    if teacher is not None and config.teacher.get("mode", "in_step") == "precomputed":
        outputs = load_teacher_outputs(config, dataset, teacher)
    loss = losses.build_loss(list(config.get("loss", [{"term": "cross_entropy"}])))

    # Data-aware techniques (SNIP, calibration) read the first few training batches at init.
    count = int(config.compression.get("init_batches", 0))
    batches = [data_lib.train_batch(dataset, int(config.seed), i, batch_size, int(config.dataset.get("seq_len", 0)))
               for i in range(count)]
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    calibration = {"batches": count, "statistics_calls": 0, "statistics_peak_bytes": 0}
    init_batches = InitBatches(
        batches, make_loss(float32_model, model_state),
        _measured(functools.partial(models.module_statistics, float32_model, inputs=[b["inputs"] for b in batches],
                                    model_state=model_state, put=lambda x: multihost.put_global(x, batch_sharding)),
                  calibration),
    ) if count > 0 else None
    init_start = time.time()
    trainable, comp_state = init_transform(transform, params, transform_key, init_batches, mesh)
    calibration["init_s"] = time.time() - init_start
    check_export(transform, trainable, comp_state, config.model.to_dict())
    state = {"step": jnp.zeros((), jnp.int32), "trainable": trainable, "comp_state": comp_state,
             "opt_state": jax.jit(optimizer.init)(trainable), "rng": rng, "model_state": model_state}
    loss_params = init_loss_params(loss, model, teacher, params, model_state, example, loss_key)
    if jax.tree_util.tree_leaves(loss_params):
        state.update(loss_params=loss_params, loss_opt_state=jax.jit(optimizer.init)(loss_params))
    # Every leaf lives on the mesh (scalars and keys replicated), and the step
    # returns the same shardings it takes, so it compiles once per run.
    replicated = NamedSharding(mesh, PartitionSpec())
    state_shardings = jax.tree_util.tree_map(
        lambda x: x.sharding if isinstance(x.sharding, NamedSharding) and x.sharding.mesh == mesh
        else replicated, state)
    # A transform may hand back one array in several places (a shared constant);
    # the donated step needs every leaf in its own buffer.
    state = jax.device_put(_unalias(state), state_shardings)
    # With the batch sharding given here, a single process passes numpy batches
    # straight in and the jitted call places them (cheaper than device_put).
    # A precomputed teacher does not run in the step: the batches carry its outputs.
    teacher_model, teacher_variables = teacher if teacher is not None and outputs is None else (None, None)
    step = jax.jit(make_train_step(model, transform, optimizer, loss, teacher_model, micro_batches),
                   donate_argnums=0,
                   in_shardings=(state_shardings, batch_sharding, None), out_shardings=(state_shardings, None))

    def train_step(state, batch):
        # The teacher's variables are an argument, not constants baked into the program.
        return step(state, batch, teacher_variables)

    train_step._cache_size = step._cache_size  # the compile count results.json reports
    # The step's compiled program for a state and batch (cost analysis: what it computes).
    train_step.lower = lambda state, batch: step.lower(state, batch, teacher_variables)
    eval_step = jax.jit(make_eval_step(model), in_shardings=(None, batch_sharding))
    return Run(config, dataset, model, transform, mesh, batch_sharding, state, train_step,
               eval_step, jax.jit(transform.apply), num_steps, float32_model, teacher, outputs,
               calibration if count > 0 else None)


def load_teacher_outputs(config: Any, dataset: data_lib.Dataset, teacher: tuple
                         ) -> teacher_outputs_lib.TeacherOutputs:
    """The teacher's outputs over this run's training batches (teacher.mode "precomputed"), computed if missing."""
    folder, top_k = teacher_outputs_lib.check_settings(config, dataset.kind == "language_model")
    export = provenance.export_file(provenance.seeded_path(config.teacher.export, config.seed))
    wanted = teacher_outputs_lib.fingerprint(config, dataset, export, top_k)
    if not os.path.exists(os.path.join(folder, teacher_outputs_lib.META)):
        t_model, t_variables = teacher
        print(f"teacher.outputs {folder!r}: computing the teacher's outputs over {config.train.num_steps} "
              f"training batches")
        teacher_outputs_lib.precompute(
            folder, config, dataset, lambda inputs: models.apply_model(
                t_model, t_variables["params"], inputs, model_state=t_variables["model_state"], train=False),
            wanted)
    return teacher_outputs_lib.TeacherOutputs(folder, wanted)


def init_loss_params(loss: losses.Loss, model: Any, teacher: Optional[tuple], params: Any, model_state: dict,
                     example: np.ndarray, key: Any) -> dict:
    """The parameters of the loss terms that own some (`losses.ParamTerm`), {} when none does.

    The terms read only the shapes of the student's and the teacher's outputs
    (logits and sown intermediates), taken by jax.eval_shape on one example.
    """
    def forward():
        logits, updates = models.apply_model(model, params, example, model_state=model_state, train=False,
                                             mutable=["intermediates"])
        outputs = {"logits": logits, "intermediates": _as_float32(updates.get("intermediates", {}))}
        extras = {"params": params}
        if teacher is not None:
            extras["teacher"] = teacher_forward(*teacher, example)
        return outputs, extras

    if not loss.owners:
        return {}
    outputs, extras = jax.eval_shape(forward)
    return loss.init(key, outputs, extras)


def _measured(statistics: Callable[..., Any], record: dict) -> Callable[..., Any]:
    """`statistics` that counts its calls and records in `record` the most bytes one call handed back.

    A call's bytes are those of every statistic it returns (with
    one_at_a_time, every module's in turn, summed: what a solver holding a
    whole group of layers keeps alive), so `statistics_peak_bytes` is the
    peak memory the calibration statistics took (SparseGPT, GPTQ, DRONE:
    one group's X^T X; Wanda: its norms).
    """
    def nbytes(stats):  # an array's own nbytes: no copy to the host
        return sum(int(a.nbytes if hasattr(a, "nbytes") else np.asarray(a).nbytes)
                   for a in jax.tree_util.tree_leaves(stats))

    def call(*args, **kwargs):
        record["statistics_calls"] += 1
        result = statistics(*args, **kwargs)
        if not kwargs.get("one_at_a_time"):
            record["statistics_peak_bytes"] = max(record["statistics_peak_bytes"], nbytes(result))
            return result

        def each():
            total = 0
            for path, stats in result:
                total += nbytes(stats)
                record["statistics_peak_bytes"] = max(record["statistics_peak_bytes"], total)
                yield path, stats
        return each()
    return call


def init_transform(transform: Transform, params: Any, key: Any, init_batches: Optional[InitBatches],
                   mesh: Mesh) -> tuple[Any, Any]:
    """(trainable, comp_state) = transform.init(params, key, init_batches), on the mesh.

    On a mesh of several devices the init runs as one jitted program where it
    can be traced: its outputs take the parameters' shardings, it dispatches
    once instead of op by op, and on a CPU mesh it avoids a runtime deadlock
    (eager sharded ops dispatched one after another can leave the host
    devices waiting in different programs' collectives). An init that reads
    values on the host (calibration rows, say) cannot be traced and runs
    eagerly, as it does on one device.
    """
    if mesh.devices.size > 1:
        try:
            return jax.jit(lambda p, k: transform.init(p, k, init_batches))(params, key)
        except TypeError as e:  # jax's tracer errors (ConcretizationTypeError, ...) are TypeErrors
            logging.info("the compression init reads values on the host (%s); it runs eagerly",
                         str(e).splitlines()[0] if str(e) else type(e).__name__)
    return transform.init(params, key, init_batches)


def param_shardings(abstract: Any, rules: Any, mesh: Mesh) -> Any:
    """NamedShardings for a parameter tree from the config's first-match partition rules."""
    return jax.tree_util.tree_map(lambda s: NamedSharding(mesh, s), param_specs(abstract, rules, mesh))


def load_teacher(config: Any, dataset: data_lib.Dataset, mesh: Mesh,
                 compute: str = "float32") -> Optional[tuple[Any, dict]]:
    """(the teacher model, {"params", "model_state"} on the mesh) from `config.teacher.export`, or None.

    The export's header names the model config that reads it, so a teacher
    is one path: an earlier run's DIR/export/params.safetensors, or DIR itself.
    The teacher computes in the run's precision policy (`compute`).
    """
    path = provenance.seeded_path(config.get("teacher", {}).get("export", ""), config.seed)
    if not path:
        return None
    path = provenance.export_file(path)  # a run directory: its export
    if not os.path.exists(path):
        raise FileNotFoundError(f"teacher.export {path!r} does not exist: run the teacher's config first "
                                f"(its export is DIR/export/params.safetensors)")
    model_config, params, model_state = read_export(path)
    check_finite({"params": params, **model_state}, f"teacher.export {path!r}")
    teacher = models.build_model(ml_collections.ConfigDict(model_config), dataset.num_classes, compute)
    example = _example_input(config, dataset)
    model_params, _ = intercept.split_params(params)
    abstract, _ = jax.eval_shape(lambda k: models.init_variables(teacher, k, example), jax.random.PRNGKey(0))
    _check_shapes(f"teacher.export {path!r} (read as its header's model with the dataset's "
                  f"{dataset.num_classes} classes: a teacher must predict the student's classes)", abstract, model_params)
    out = jax.eval_shape(lambda p, s: models.apply_model(teacher, p, example, model_state=s), params, model_state)
    if out.shape[-1] != dataset.num_classes:
        raise ValueError(f"teacher.export {path!r} predicts {out.shape[-1]} classes but the dataset "
                         f"{dataset.name!r} has {dataset.num_classes}; distil from a teacher of the same task")
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = jax.tree_util.tree_map(lambda _: replicated, params)
    if jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(abstract):
        shardings = param_shardings(abstract, config.mesh.partition_rules, mesh)
    variables = {"params": jax.device_put(jax.tree_util.tree_map(jnp.asarray, params), shardings),
                 "model_state": jax.device_put(jax.tree_util.tree_map(jnp.asarray, model_state), replicated)}
    return teacher, variables


def read_export(path: str) -> tuple[dict, Any, dict]:
    """(model config, params, model_state) of an export written by `export_run`."""
    header = export.read_header(path)
    loaded = export.load_params(path)
    collections = header["metadata"].get("collections", [])
    params = {k: v for k, v in loaded.items() if k not in collections}
    return header["metadata"].get("model", {}), params, {k: loaded[k] for k in collections if k in loaded}


def _check_shapes(what: str, abstract: Any, loaded: Any) -> None:
    want = {path_str(kp): tuple(leaf.shape) for kp, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]}
    got = {path_str(kp): tuple(np.shape(leaf)) for kp, leaf in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    if want != got:
        diff = sorted(p for p in set(want) | set(got) if want.get(p) != got.get(p))[:10]
        raise ValueError(f"{what} does not fit the configured model; differing parameters "
                         f"(path: model shape vs file shape): "
                         + ", ".join(f"{p}: {want.get(p)} vs {got.get(p)}" for p in diff))


def check_export(transform: Transform, trainable: Any, comp_state: Any, model_config: dict) -> None:
    """Runs the transform's export on zero stand-ins of the effective params, before any training.

    A chain whose stages cannot export together (a structural stage whose
    export renames the layers a later stage's export selects) is refused
    here, with the chain's message naming both stages, instead of after a
    whole run. The stand-ins are zero-stride numpy views, so nothing
    parameter-sized is allocated for them.
    """
    shapes = jax.eval_shape(transform.apply, trainable, comp_state)
    stand_ins = jax.tree_util.tree_map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes)
    export_model(transform, stand_ins, multihost.to_host(comp_state), model_config)


def _unalias(tree: Any) -> Any:
    """The tree with any leaf that appears more than once replaced by copies."""
    seen: set[int] = set()

    def own(leaf):
        if id(leaf) in seen:
            return jnp.array(leaf, copy=True)
        seen.add(id(leaf))
        return leaf

    return jax.tree_util.tree_map(own, tree)


def load_pretrained(path: str, abstract: Any, shardings: Any, abstract_state: Any = None,
                    layers: Sequence[Any] = ()) -> tuple[Any, dict]:
    """(params, model_state) from an earlier run's export (`config.init_from`), checked against the model's shapes.

    Fine-tuning, post-training compression and pruning a trained model start
    here. `layers` (`config.init_layers`) renames top-level modules, so a
    shallower model starts from chosen layers of a deeper one (DistilBERT).
    `path` may also be a Hugging Face GPT-2 checkpoint folder
    (`experiments.gpt2_format`), for a model configured as its
    `lab_model_config`.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"init_from {path!r} does not exist: run the config that trains it first "
                                f"(its export is DIR/export/params.safetensors)")
    if gpt2_format.is_checkpoint(path):
        loaded, model_state = gpt2_format.read(path)[0], {}
    else:
        _, loaded, model_state = read_export(path)
    if layers:
        loaded = distillation.student_from_teacher(loaded, list(abstract), layers)
        # Other collections (BatchNorm's statistics) follow the modules that have them.
        model_state = {collection: distillation.student_from_teacher(
            tree, list(modules), [pair for pair in layers if pair[0] in modules])
            for collection, tree in model_state.items()
            for modules in [(abstract_state or {}).get(collection, {})]}
    _check_shapes(f"init_from {path!r}", abstract, loaded)
    if abstract_state:
        _check_shapes(f"init_from {path!r} (its {sorted(abstract_state)})", abstract_state, model_state)
    return (jax.device_put(jax.tree_util.tree_map(jnp.asarray, loaded), shardings),
            jax.tree_util.tree_map(jnp.asarray, model_state))


def evaluate(run: Run, trainable: Any, comp_state: Any, max_batches: int = 0,
             split: str = "eval", model_state: Optional[dict] = None) -> dict[str, float]:
    """Mean loss and accuracy of the effective params on `split` (eval or selection; sums stay on device).

    `model_state` (BatchNorm's running statistics) defaults to the run's state's.
    """
    params = run.apply_transform(trainable, comp_state)
    return evaluate_params(run, params, max_batches, split,
                           run.state["model_state"] if model_state is None else model_state)


def evaluate_params(run: Run, params: Any, max_batches: int = 0, split: str = "eval",
                    model_state: Optional[dict] = None) -> dict[str, float]:
    """Mean loss and accuracy of `params` (with `model_state`) on `split`: "eval" (reported) or "selection"."""
    return _evaluate_with(run, run.eval_step, {"params": params, **(model_state or {})}, max_batches, split)


def _evaluate_with(run: Run, step: Callable, variables: Any, max_batches: int = 0,
                   split: str = "eval") -> dict[str, float]:
    """Mean loss and accuracy over `split` of step(variables, batch) -> (loss_sum, correct_sum, count)."""
    totals = jnp.zeros(3)
    for batch in data_lib.eval_batches(run.dataset, int(run.config.train.eval_batch_size),
                                       int(run.config.dataset.get("seq_len", 0)), max_batches,
                                       jax.process_index(), jax.process_count(), split=split):
        totals = totals + step(variables, _put_batch(batch, run.batch_sharding))
    loss_sum, correct, count = (float(v) for v in jax.device_get(totals))
    return {"loss": loss_sum / count, "accuracy": correct / count}


class CheckpointError(workdir_lib.RunError):
    """A checkpoint could not be saved or restored; the message names the cause and what to do."""


def _checkpoint_manager(workdir: str, config: Any) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=max(1, int(config.train.checkpoint_every)), max_to_keep=2,
        enable_async_checkpointing=True)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(workdir, "checkpoints")), options=options,
                                 item_handlers=ocp.StandardCheckpointHandler())


def restore_latest(manager: ocp.CheckpointManager, state: Any) -> tuple[Any, int]:
    """The newest checkpoint in the manager restored onto `state`'s shapes and shardings, and its step.

    A checkpoint that does not fit the state (another model or chain) is a
    CheckpointError naming the differing arrays; the checkpoint is untouched.
    """
    step = manager.latest_step()
    if step is None:
        return state, 0
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, state)
    # Compared before reading: a restore orbax abandons midway leaves its readers pending.
    mismatch = _checkpoint_mismatch(manager, step, abstract)
    try:
        if mismatch:
            raise ValueError(mismatch)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract)), int(step)
    except Exception as e:  # orbax raises ValueError, KeyError, FileNotFoundError, ... here
        raise CheckpointError(
            f"the checkpoint of step {step} in {manager.directory} does not fit this run "
            f"({mismatch or _root_cause(e)}): it was written by another model, chain or version of the "
            f"code. Use a new workdir, or delete {manager.directory} to train from scratch here") from e


def _checkpoint_mismatch(manager: ocp.CheckpointManager, step: int, abstract: Any) -> str:
    """The arrays whose shapes differ between the stored checkpoint and `abstract`, as one line ('' if none)."""
    try:
        stored = _shapes_by_path(manager.item_metadata(step))
    except Exception:  # no readable metadata: the caller falls back to orbax's message
        return ""
    wanted = _shapes_by_path(abstract)
    # The model's own arrays first: they say most plainly which model wrote the checkpoint.
    differ = sorted((p for p in set(stored) | set(wanted) if stored.get(p) != wanted.get(p)),
                    key=lambda p: (not p.startswith("trainable/params/"), p))
    shown = ", ".join(f"{p}: stored {stored.get(p, 'absent')} vs this run {wanted.get(p, 'absent')}"
                      for p in differ[:4])
    return shown + (f" and {len(differ) - 4} more" if len(differ) > 4 else "")


def _shapes_by_path(tree: Any) -> dict[str, tuple]:
    # Orbax's metadata keys tuples and NamedTuples by index/name as dict keys; compare by the names alone.
    def name(entry):
        for attr in ("key", "idx", "name"):
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    return {"/".join(name(k) for k in kp): tuple(getattr(leaf, "shape", ()))
            for kp, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost exception in `error`'s chain (orbax wraps the real cause)."""
    while error.__cause__ is not None or (error.__context__ is not None and not error.__suppress_context__):
        error = error.__cause__ or error.__context__
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # Orbax's own advice (strict=False, padding) would load a wrong model.
    return text.split(" Truncating/padding is disabled")[0]


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Starts an asynchronous save of `state` at `step` (the previous save's error surfaces here)."""
    with _save_errors(manager, step):
        manager.save(step, args=ocp.args.StandardSave(state))


def save_final_checkpoint(manager: ocp.CheckpointManager, step: int, state: Any) -> None:
    """Checkpoints `state` at `step` unless the cadence already did, and waits for the write."""
    jax.block_until_ready(state)
    with _save_errors(manager, step):
        if manager.latest_step() != step:
            manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()


@contextlib.contextmanager
def _save_errors(manager: ocp.CheckpointManager, step: int) -> Iterator[None]:
    """Turns a failed checkpoint save into one CheckpointError line: the cause and what to do.

    Orbax writes a checkpoint into a temporary folder and renames it when
    complete, so a failed save (a full disk) leaves the older checkpoints
    usable, and a rerun resumes from the newest complete one.
    """
    try:
        yield
    except Exception as e:  # orbax re-raises its writer threads' errors at the next save or wait
        cause = _root_cause(e)
        full = isinstance(e, OSError) and e.errno == errno.ENOSPC or "No space left" in cause
        newest = manager.all_steps()
        kept = (f"the newest complete checkpoint (step {max(newest)}) is kept" if newest
                else "no checkpoint was completed")
        raise CheckpointError(
            f"saving a checkpoint in {manager.directory} failed at step {step}: {cause}; {kept}. "
            f"{'Free some disk space (or give --workdir a larger disk)' if full else 'Check the disk'}, "
            f"then run the same command again to resume") from e


@contextlib.contextmanager
def _orbax_errors_to(path: str) -> Iterator[None]:
    """Keeps orbax's background-thread error logs (hundreds of lines each) out of the terminal, in `path`.

    The driver raises one CheckpointError line with the cause; the full
    orbax logs of a failed save stay in `path` for whoever needs them.
    """
    records: list[str] = []

    def keep(record: Any) -> bool:
        if record.levelno >= logging_lib.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname:
            records.append(logging_lib.Formatter().format(record))
            return False
        return True

    logger = logging_lib.getLogger("absl")
    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)
        if records:
            with open(path, "a") as f:
                f.write("\n\n".join(records) + "\n")
            print(f"orbax reported {len(records)} error(s) while checkpointing; full logs: {path}")


def _raise_on_nan(step: int, history: list[dict], last_finite: Optional[dict]) -> None:
    for i, metrics in enumerate(history):
        if not all(math.isfinite(v) for v in metrics.values()):
            raise FloatingPointError(
                f"non-finite metrics {metrics} at step {step - len(history) + i + 1}; "
                f"last finite metrics: {last_finite}. No results.json was written.")


class Terminated(KeyboardInterrupt):
    """SIGTERM received while training: handled as Ctrl-C is (the state reached is checkpointed, then stop)."""


@contextlib.contextmanager
def _termination_interrupts() -> Iterator[None]:
    """While the loop runs, SIGTERM raises `Terminated` in it instead of killing the process.

    `kill PID`, a job scheduler's stop and a preempted cloud TPU VM all send
    SIGTERM, and a job started in the background (`nohup ... &`) ignores
    SIGINT: without this, each of those loses every step since the last
    cadence checkpoint. Signal handlers can only be set from the main thread;
    elsewhere SIGTERM keeps its default.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise Terminated(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def checkpointing(workdir: str, config: Any) -> Iterator[ocp.CheckpointManager]:
    """The checkpoint manager of WORKDIR/checkpoints, held while a training loop runs in the block.

    Inside the block SIGTERM interrupts as Ctrl-C does (see
    `_termination_interrupts`) and orbax's error logs go to
    WORKDIR/checkpoint_errors.log; on leaving, the manager is closed. Every
    loop that checkpoints (the trainer's, the supernet's) runs in one, so they
    handle interruptions and failed saves alike.
    """
    manager = _checkpoint_manager(workdir, config)
    try:
        with _orbax_errors_to(os.path.join(workdir, "checkpoint_errors.log")), _termination_interrupts():
            yield manager
    finally:
        with contextlib.suppress(Exception):  # a failed save re-raises here; it was reported already
            manager.close()


def save_interrupted(manager: ocp.CheckpointManager, step: int, state: Any, total: int,
                     interruption: BaseException, what: str = "") -> None:
    """Checkpoints the state an interrupted loop reached and says where it stopped (the caller re-raises).

    Nothing is lost on interruption: a rerun of the same command resumes at `step`.
    """
    save_final_checkpoint(manager, step, state)
    print(f"{str(interruption) or 'interrupted'}: {what + ' ' if what else ''}stopped at step {step} of {total}, "
          f"checkpointed in {manager.directory}; run the same command again to continue from there")


def train_loop(run: Run, workdir: str, log: Optional[MetricsLog] = None, progress: bool = True,
               batches: Optional[Callable[[int], dict]] = None,
               on_restored: Optional[Callable[[], None]] = None) -> dict[str, Any]:
    """Trains `run` from its newest checkpoint in `workdir` to `train.num_steps` (or `train.stop_after`).

    `batches(step)` overrides the data pipeline (the step benchmark passes
    in-memory batches); `on_restored()` runs once the newest checkpoint has
    been restored onto the run's state (or there is none). Returns timing:
    per-step wall times measured after the lag-1 wait, the compile count of
    the train step, whether the run reached num_steps, and how long the
    cadence checkpoints held the loop (`checkpoint_hold_s`).
    """
    with checkpointing(workdir, run.config) as manager:
        return _train_steps(run, manager, log, progress, batches, on_restored)


def _train_steps(run: Run, manager: ocp.CheckpointManager, log: Optional[MetricsLog], progress: bool,
                 batches: Optional[Callable[[int], dict]], on_restored: Optional[Callable[[], None]]
                 ) -> dict[str, Any]:
    config = run.config
    state, start = restore_latest(manager, run.state)
    if on_restored is not None:
        on_restored()
    stop_after = int(config.train.get("stop_after", 0))
    end = run.num_steps if stop_after <= 0 else min(run.num_steps, start + stop_after)
    log_every = max(1, int(config.train.log_every))
    checkpoint_every = max(1, int(config.train.checkpoint_every))
    eval_every = int(config.train.get("eval_every", 0))
    seed, batch_size = int(config.seed), int(config.train.batch_size)
    seq_len = int(config.dataset.get("seq_len", 0))
    make_batch = batches or (lambda s: data_lib.train_batch(
        run.dataset, seed, s, batch_size, seq_len, jax.process_index(), jax.process_count()))
    if run.teacher_outputs is not None:
        rows = data_lib.process_slice(batch_size, jax.process_index(), jax.process_count())
        data_batch = make_batch
        make_batch = lambda s: {**data_batch(s), **run.teacher_outputs.for_step(s, rows)}

    pending: list[dict] = []
    last_finite: Optional[dict] = None
    step_times: list[float] = []
    checkpoint_hold_s = 0.0  # how long the cadence saves held the loop (the writing itself is asynchronous)
    bar = tqdm(total=run.num_steps, initial=start, desc="train", disable=not progress,
               mininterval=1.0, dynamic_ncols=True)
    previous_loss = None
    next_batch = _put_batch(make_batch(start), run.batch_sharding) if start < end else None
    step = start
    tick = time.perf_counter()
    try:
        while step < end:
            state, metrics = run.train_step(state, next_batch)
            step += 1
            # Host work for the next step overlaps the device's work on this one.
            next_batch = _put_batch(make_batch(step), run.batch_sharding) if step < end else None
            if previous_loss is not None:
                previous_loss.block_until_ready()
            previous_loss = metrics["loss"]
            now = time.perf_counter()
            step_times.append(now - tick)
            tick = now
            pending.append(metrics)
            if step % log_every == 0 or step == end:
                history = [{k: float(v) for k, v in m.items()} for m in jax.device_get(pending)]
                pending = []
                _raise_on_nan(step, history, last_finite)
                last_finite = history[-1]
                if log is not None:
                    log.write(step, {f"train_{k}": float(np.mean([h[k] for h in history]))
                                     for k in history[-1]})
                bar.set_postfix(loss=f"{last_finite['loss']:.4f}", refresh=False)
            if eval_every and step % eval_every == 0 and step < run.num_steps:
                # Choices made during training look at the selection split, never the reported one.
                split = "selection" if run.dataset.has_selection else "eval"
                ev = evaluate(run, state["trainable"], state["comp_state"],
                              int(config.train.get("eval_max_batches", 0)), split, state["model_state"])
                if log is not None:
                    log.write(step, {f"{split}_{k}": v for k, v in ev.items()})
            # Orbax's own cadence check costs ~40 us a call: ask it only when a save is due.
            if step % checkpoint_every == 0:
                save_start = time.perf_counter()
                save_checkpoint(manager, step, state)
                checkpoint_hold_s += time.perf_counter() - save_start
            bar.update(1)
    except KeyboardInterrupt as interruption:
        bar.close()
        save_interrupted(manager, step, state, run.num_steps, interruption)
        # The steps reached are kept, so their cost is too: the caller records it before re-raising.
        interruption.timing = _loop_timing(run, step_times, start, step, checkpoint_hold_s)
        raise
    save_final_checkpoint(manager, step, state)
    bar.close()
    run.state = state
    return _loop_timing(run, step_times, start, step, checkpoint_hold_s)


def _loop_timing(run: Run, step_times: list[float], start: int, step: int, checkpoint_hold_s: float) -> dict:
    steady = step_times[2:] if len(step_times) > 4 else step_times
    return {"train_step_ms_median": 1000 * float(np.median(steady)) if steady else None,
            "compiles": int(run.train_step._cache_size()), "steps_this_invocation": step - start,
            "finished": step >= run.num_steps, "step": step, "checkpoint_hold_s": checkpoint_hold_s}


# ---------------------------------------------------------------- results


def versions() -> dict[str, str]:
    """Python, jax, flax, optax versions and the git commit of the code (`experiments.provenance.commit_of`)."""
    return {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
            "optax": optax.__version__,
            "git_commit": provenance.commit_of(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}


def export_run(run: Run, workdir: str) -> tuple[str, dict]:
    """Exports the model to DIR/export/params.safetensors; returns the path and the size report.

    The effective params are encoded and made physically smaller by the
    transform (`compression.transform.export_model`, with the model config
    that reads them), each other parameter is written with the codec
    `config.export.codecs` names, the model's other collections (BatchNorm's
    running statistics) are written beside them (dense, named in the
    header's `collections`), and the file is loaded back and run beside the
    trained model on evaluation inputs: an export that does not predict what
    the trained model predicts is an error.
    """
    # Gathered on every process (a collective); only process 0 writes and checks the file.
    params = multihost.to_host(run.apply_transform(run.state["trainable"], run.state["comp_state"]))
    model_state = multihost.to_host(run.state["model_state"])
    comp_state = multihost.to_host(run.state["comp_state"])
    path = os.path.join(workdir, "export", "params.safetensors")
    if not multihost.is_writer():
        return path, {}
    model_config = run.config.model.to_dict()
    exported, model_config = export_model(run.transform, params, comp_state, model_config)
    if run.config.model.get("num_layers", 0) > 0 and model_config.get("num_layers") == 0:
        print(f"note: the export keeps none of the model's {run.config.model.num_layers} layers (allowed: "
              f"what remains is the embedding and the output head)")
    rules = run.config.get("export", {}).get("codecs", ((".*", "dense"),))
    names = match_rules(exported, [tuple(rule) for rule in rules], what="export.codecs", allow_unused=True)
    codecs = {path_str(kp): (name, {}) for kp, name in jax.tree_util.tree_flatten_with_path(names)[0]}
    metadata = {"model": model_config, **({"collections": sorted(model_state)} if model_state else {})}
    export.export_params(path, {**exported, **model_state}, codecs, metadata=metadata)
    report = accounting.size_report(params, path)
    report["params_exported"] = accounting.params_total(export.plain_values(exported))
    report.update(export.payload_report(path))
    loaded_config, loaded, loaded_state = read_export(path)
    loaded_model = models.build_model(ml_collections.ConfigDict(loaded_config), run.dataset.num_classes)
    report["export_max_abs_logit_diff"] = _check_export(
        run, (params, model_state), loaded_model, (loaded, loaded_state), path)
    # Multiply-add FLOPs of one forward pass of the exported model on one example (one sequence
    # for language models): a structured export is a smaller model and costs less.
    report["flops_per_example"] = accounting.count_flops(
        lambda p, x: models.apply_model(loaded_model, p, x, model_state=loaded_state), loaded,
        _example_input(run.config, run.dataset))
    return path, report


def _check_export(run: Run, trained: tuple, loaded_model: Any, loaded: tuple, path: str) -> float:
    inputs = _eval_inputs(run)
    expected = np.asarray(models.apply_model(run.float32_model, trained[0], inputs, model_state=trained[1]))
    got = np.asarray(models.apply_model(loaded_model, loaded[0], inputs, model_state=loaded[1]))
    diff = float(np.max(np.abs(expected - got)))
    if not diff <= 1e-4 * (1.0 + float(np.max(np.abs(expected)))):
        raise AssertionError(f"the export at {path} predicts differently from the trained model "
                             f"(max |logit difference| {diff}); this is a bug in an export codec or shrink")
    return diff


def _eval_inputs(run: Run, count: int = 16) -> np.ndarray:
    batch = next(data_lib.eval_batches(run.dataset, count, int(run.config.dataset.get("seq_len", 0)), 1))
    return batch["inputs"]


def final_metrics(run: Run) -> dict[str, float]:
    """The results.json `metrics` block: test accuracy/loss, or validation loss in nats per character;
    plus the selection split's (selection_accuracy/selection_loss, or selection_loss_nats) when it has one."""
    ev = evaluate(run, run.state["trainable"], run.state["comp_state"])
    sel = evaluate(run, run.state["trainable"], run.state["comp_state"], split="selection") \
        if run.dataset.has_selection else None
    if run.dataset.kind == "language_model":
        entropy = float(run.dataset.info["unigram_entropy_nats"])
        metrics = {"val_loss_nats": ev["loss"], "val_accuracy": ev["accuracy"],
                   "unigram_entropy_nats": entropy, "val_loss_below_unigram": 1.0 - ev["loss"] / entropy}
        return metrics if sel is None else {**metrics, "selection_loss_nats": sel["loss"]}
    metrics = {"test_accuracy": ev["accuracy"], "test_loss": ev["loss"]}
    return metrics if sel is None else {**metrics, "selection_accuracy": sel["accuracy"],
                                        "selection_loss": sel["loss"]}


def int8_metrics(run: Run, export_path: str) -> dict[str, float]:
    """The exported model evaluated through the int8 kernel (`config.export.int8_eval`), on the reported split.

    Every nn.Dense runs on int8 weight codes and int8 inputs with int32
    accumulation (`models.apply_model_int8`, Jacob et al. 2018); the other
    modules run in float32. Reported beside the fake-quantized metrics as
    `int8_test_accuracy`/`int8_test_loss` (`int8_val_loss_nats` for text).
    """
    model_config, params, model_state = read_export(export_path)
    if model_state:
        raise ValueError("export.int8_eval runs nn.Dense layers on int8 codes; it does not handle a model with "
                         f"{sorted(model_state)} (BatchNorm): turn one of them off")
    model = models.build_model(ml_collections.ConfigDict(model_config), run.dataset.num_classes)
    step = jax.jit(lambda p, batch: jnp.stack(cross_entropy(models.apply_model_int8(model, p, batch["inputs"]),
                                                            batch["targets"], batch["mask"])))
    ev = _evaluate_with(run, step, jax.tree_util.tree_map(jnp.asarray, params))
    if run.dataset.kind == "language_model":
        return {"int8_val_loss_nats": ev["loss"]}
    return {"int8_test_accuracy": ev["accuracy"], "int8_test_loss": ev["loss"]}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, progress: bool = True) -> Optional[dict]:
    """Runs the experiment `config` in `workdir`; writes and returns results.json (None if stopped early).

    The workdir belongs to one config (`experiments.workdir`): a rerun
    resumes or re-evaluates the run in it, and a rerun with a config that
    trains something else is refused before anything is read or written.
    config.json is stored only once every setting has passed its checks and
    the workdir's newest checkpoint has been restored with it.
    """
    runner = config.get("runner", "train")
    if runner != "train":
        if runner != "nas":
            raise ValueError(f"config.runner {runner!r} is not one of ['train', 'nas']")
        from experiments import nas
        return nas.run(config, workdir, progress)
    start_time = time.time()
    with workdir_lib.hold(workdir, jax.process_index()):
        workdir_lib.check_config(workdir, config.to_dict(), default_config.get_config().to_dict())
        run = build_run(config)
        if run.num_steps == 0:
            print("note: train.num_steps=0: nothing is trained; the results are those of the "
                  f"{'init_from export' if config.get('init_from') else 'randomly initialized model'}")
        return _train_evaluate_export(run, workdir, progress, start_time)


def _train_evaluate_export(run: Run, workdir: str, progress: bool, start_time: float) -> Optional[dict]:
    config = run.config

    def store_config():
        # Only now: the config passed every check and the workdir's checkpoint fits it.
        if multihost.is_writer():
            workdir_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG_FILE), config.to_dict())

    log = MetricsLog(workdir) if multihost.is_writer() else None
    try:
        timing = train_loop(run, workdir, log, progress and multihost.is_writer(), on_restored=store_config)
        if multihost.is_writer():
            _record_invocation(workdir, timing, time.time() - start_time)
        if not timing["finished"]:
            print(f"stopped at step {timing['step']} of {run.num_steps} (train.stop_after); "
                  f"run the same command again to resume from the checkpoint in {workdir}")
            return None
        metrics = final_metrics(run)
        if log is not None:
            log.write(timing["step"], {f"final_{k}": v for k, v in metrics.items()})
    except KeyboardInterrupt as interruption:
        # The training loop checkpointed the steps it reached: their wall time counts toward the run's.
        if multihost.is_writer() and getattr(interruption, "timing", None):
            _record_invocation(workdir, interruption.timing, time.time() - start_time)
        raise
    finally:
        if log is not None:
            log.close()
    export_path, size = export_run(run, workdir)
    if run.config.get("export", {}).get("int8_eval", False):
        metrics.update(int8_metrics(run, export_path))
    results = {
        "config": config.to_dict(),
        "metrics": metrics,
        "compression": size,
        "timing": _accumulated_timing(workdir, timing, time.time() - start_time),
        **({"calibration": run.calibration} if run.calibration else {}),
        "versions": versions(),
        "hardware": hardware(run.mesh),
        "dataset": {"name": run.dataset.name, **{k: v for k, v in run.dataset.info.items()}},
        "artifacts": {"export": os.path.relpath(export_path, workdir), "metrics": "metrics.jsonl",
                      "tensorboard": "tensorboard"},
    }
    if multihost.is_writer():
        write_results(os.path.join(workdir, "results.json"), results)
    return results


TIMING_LOG = "timing.jsonl"


def _record_invocation(workdir: str, timing: dict, wall_s: float) -> None:
    # One line per invocation that trained, so a run split by stop_after, or
    # rerun after it finished, reports the timing of the steps it really took.
    if timing["steps_this_invocation"] <= 0:
        return
    line = {"steps": timing["steps_this_invocation"], "train_step_ms_median": timing["train_step_ms_median"],
            "compiles": timing["compiles"], "wall_s": wall_s}
    with open(os.path.join(workdir, TIMING_LOG), "a") as f:
        f.write(json.dumps(line) + "\n")


def _accumulated_timing(workdir: str, timing: dict, wall_s: float) -> dict:
    """results.json `timing` over every invocation of the run in `workdir`.

    train_step_ms_median and compiles come from the invocation that trained
    the most steps; wall_s adds the training invocations' wall times and this
    one's when it trained nothing (evaluation and export only).
    """
    path = os.path.join(workdir, TIMING_LOG)
    lines = _read_jsonl(path) if os.path.exists(path) else []
    out = {"train_step_ms_median": timing["train_step_ms_median"], "compiles": timing["compiles"],
           "wall_s": wall_s, "steps_this_invocation": timing["steps_this_invocation"], "invocations": 1}
    if lines:
        main = max(lines, key=lambda l: l["steps"])
        out.update(train_step_ms_median=main["train_step_ms_median"], compiles=main["compiles"],
                   wall_s=sum(l["wall_s"] for l in lines) + (wall_s if timing["steps_this_invocation"] == 0 else 0),
                   invocations=len(lines) + (timing["steps_this_invocation"] == 0),
                   steps_trained=sum(l["steps"] for l in lines))
    return out


def _read_jsonl(path: str) -> list[dict]:
    """The records of a JSON-lines file; a last line cut short by a killed run is left out, with a warning."""
    with open(path) as f:
        lines = [line for line in f.read().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} is not JSON; the file was edited by hand: delete it "
                                 f"(the run then reports only this invocation's timing)") from None
            logging.warning("%s: the last line was cut short (a run killed while writing it); left out", path)
    return records


def write_results(path: str, results: dict) -> None:
    """Writes a results dict as sorted, indented JSON (numpy scalars and tuples made plain), atomically."""
    workdir_lib.write_json(path, results)
