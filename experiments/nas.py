"""Architecture search over Transformers as HAT does it (Wang et al. 2020): train a SuperTransformer, search it.

The search space and the slicing are `compression.supernet`; this module runs
them on data.

- `train_supernet`: the SuperTransformer (config.model, the maxima) trained
  by sampling one sub-architecture per step from (seed, step)
  (`architecture_at`: uniform, or `sandwich`, which cycles the largest, the
  smallest and a random one). Heads, FFN widths and depth are masks passed to
  the step, so each hidden-width bucket compiles one step (at most
  `supernet.MAX_WIDTH_BUCKETS` compiles, plus one evaluation step per
  bucket); the gradient of the parameters a step's architecture does not use
  is zero, and every parameter lives in one full-size tree (a narrower
  bucket's step reads and updates its first `width` dimensions). Resumable
  from its checkpoints.
- `inherited_loss`: an architecture's loss with the supernet's weights (no
  training), on fixed batches: how the search ranks candidates.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from compression import supernet as sn
from compression.selection import nest_paths
from experiments import data as data_lib
from experiments import models, train

SAMPLING = ("uniform", "sandwich")


def architecture_at(space: sn.SearchSpace, seed: int, step: int, sampling: str = "uniform") -> sn.Architecture:
    """The sub-architecture trained at `step`: a function of (seed, step) alone, so a resumed run repeats it."""
    if sampling not in SAMPLING:
        raise ValueError(f"supernet sampling {sampling!r} is not one of {list(SAMPLING)}")
    if sampling == "sandwich" and step % 3 < 2:
        return space.largest() if step % 3 == 0 else space.smallest()
    return space.sample(np.random.default_rng((int(seed), int(step), 7)))


def bucket_architecture(model: Mapping[str, Any], width: int) -> sn.Architecture:
    """The supernet's own sizes at hidden width `width`: what one bucket's compiled step runs (then masks)."""
    layers = int(model["num_layers"])
    per_layer = lambda v: tuple(v) if isinstance(v, Sequence) else (int(v),) * layers
    return sn.Architecture(width, per_layer(model["num_heads"]), per_layer(model["ffn_dim"]))


@dataclasses.dataclass
class Supernet:
    """A SuperTransformer run's pieces: its space, data, the full-size model config and per-width steps."""

    config: Any
    space: sn.SearchSpace
    dataset: data_lib.Dataset
    model_config: dict
    optimizer: optax.GradientTransformation
    compiled: dict = dataclasses.field(default_factory=dict)  # (kind, width) -> jitted function

    def bucket_model(self, width: int):
        return models.build_model(bucket_architecture(self.model_config, width).model_config(self.model_config),
                                  self.dataset.num_classes)

    def masks(self, params: Any, arch: sn.Architecture) -> dict:
        """The nested masks of `arch` at its width bucket's shapes (numpy; arguments, never constants)."""
        bucket = jax.eval_shape(functools.partial(sn.slice_params,
                                                  arch=bucket_architecture(self.model_config, arch.width)), params)
        return nest_paths(sn.supernet_masks(bucket, arch))

    def _forward(self, width: int):
        """logits(params, masks, inputs) of the full-size `params` sliced to `width` and masked."""
        model = self.bucket_model(width)
        bucket = bucket_architecture(self.model_config, width)

        def forward(params, masks, inputs):
            sub = jax.tree_util.tree_map(lambda w, m: w * m, sn.slice_params(params, bucket), masks)
            return model.apply({"params": sub}, inputs)
        return forward

    def train_step(self, width: int):
        """The jitted step of width bucket `width`: (state, masks, batch) -> (state, mean loss)."""
        key = ("train", width)
        if key not in self.compiled:
            forward = self._forward(width)

            def loss(params, masks, batch):
                loss_sum, _, count = train.cross_entropy(forward(params, masks, batch["inputs"]), batch["targets"])
                return loss_sum / count

            def step(state, masks, batch):
                value, grads = jax.value_and_grad(loss)(state["params"], masks, batch)
                updates, opt_state = self.optimizer.update(grads, state["opt_state"], state["params"])
                return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state,
                        "step": state["step"] + 1}, value
            self.compiled[key] = jax.jit(step, donate_argnums=0)
        return self.compiled[key]

    def eval_step(self, width: int):
        """The jitted (loss sum, count) of a masked batch in width bucket `width`."""
        key = ("eval", width)
        if key not in self.compiled:
            forward = self._forward(width)

            def sums(params, masks, batch):
                loss_sum, _, count = train.cross_entropy(forward(params, masks, batch["inputs"]), batch["targets"],
                                                         batch["mask"])
                return jnp.stack([loss_sum, count])
            self.compiled[key] = jax.jit(sums)
        return self.compiled[key]

    def compiles(self) -> int:
        return sum(int(f._cache_size()) for f in self.compiled.values())


def build_supernet(config: Any, dataset: Optional[data_lib.Dataset] = None) -> Supernet:
    """The SuperTransformer of config.model with config.nas.space, checked; its data; its optimizer."""
    model_config = dict(config.model.to_dict() if hasattr(config.model, "to_dict") else config.model)
    space = sn.SearchSpace.from_config(dict(config.nas.space), model_config)
    dataset = dataset or data_lib.load_dataset(config.dataset, config.get("data_dir", ".data"))
    if dataset.kind != "language_model":
        raise ValueError(f"architecture search runs on a language model's data; dataset {dataset.name!r} is "
                         f"{dataset.kind}")
    return Supernet(config, space, dataset, model_config, train.build_optimizer(config, int(config.train.num_steps)))


def init_state(net: Supernet) -> dict:
    model = models.build_model(net.model_config, net.dataset.num_classes)
    tokens = np.zeros((1, int(net.config.dataset.seq_len)), np.int32)
    params = model.init(jax.random.PRNGKey(int(net.config.seed)), tokens)["params"]
    return {"params": params, "opt_state": net.optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def train_supernet(net: Supernet, workdir: str, progress: bool = True) -> dict:
    """Trains the SuperTransformer for config.train.num_steps (resuming from workdir's checkpoints).

    Returns {"state", "architectures": the per-step widths seen, "compiles", "wall_s"}.
    """
    config = net.config
    num_steps = int(config.train.num_steps)
    batch_size, seq_len = int(config.train.batch_size), int(config.dataset.seq_len)
    sampling = str(config.nas.get("sampling", "uniform"))
    state = init_state(net)
    manager = train._checkpoint_manager(workdir, config)
    start = 0
    if manager.latest_step() is not None:
        state, start = train.restore_latest(manager, state)
    log_every = max(1, int(config.train.log_every))
    history, widths = [], []
    begin = time.time()
    steps = range(start, num_steps)
    if progress:
        from tqdm import tqdm
        steps = tqdm(steps, desc="supernet", initial=start, total=num_steps)
    for step in steps:
        arch = architecture_at(net.space, int(config.seed), step, sampling)
        batch = data_lib.train_batch(net.dataset, int(config.seed), step, batch_size, seq_len)
        state, loss = net.train_step(arch.width)(state, net.masks(state["params"], arch), batch)
        widths.append(arch.width)
        history.append(loss)
        if (step + 1) % log_every == 0 or step + 1 == num_steps:
            values = [float(v) for v in jax.device_get(history)]  # one host sync per log interval
            if not all(np.isfinite(values)):
                raise FloatingPointError(f"supernet training: non-finite loss by step {step + 1}; no results written")
            train.write_results(os.path.join(workdir, "supernet_log.json"),
                                {"step": step + 1, "train_loss": float(np.mean(values))})
            history = []
        manager.save(step + 1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    manager.close()
    return {"state": state, "widths": widths, "compiles": net.compiles(), "wall_s": time.time() - begin}


def fixed_batches(net: Supernet, count: int, split: str = "selection") -> list[dict]:
    """`count` batches of `split` in fixed order (the search's scoring set; never the reported split)."""
    batches = data_lib.eval_batches(net.dataset, int(net.config.train.eval_batch_size), int(net.config.dataset.seq_len),
                                    count, split=split)
    return list(batches)


def inherited_loss(net: Supernet, params: Any, arch: sn.Architecture, batches: Iterable[dict]) -> float:
    """Mean loss of `arch` with the supernet's weights (masked in its width bucket) over `batches`."""
    net.space.check(arch)
    step = net.eval_step(arch.width)
    masks = net.masks(params, arch)
    total = jnp.zeros(2)
    for batch in batches:
        total = total + step(params, masks, batch)
    loss_sum, count = (float(v) for v in jax.device_get(total))
    return loss_sum / count
