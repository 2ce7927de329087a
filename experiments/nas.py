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
import json
import os
import time
from typing import Any, Iterable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

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
    shapes: dict = dataclasses.field(default_factory=dict)  # width -> the bucket's parameter shapes

    def bucket_model(self, width: int):
        return models.build_model(bucket_architecture(self.model_config, width).model_config(self.model_config),
                                  self.dataset.num_classes)

    def masks(self, params: Any, arch: sn.Architecture) -> dict:
        """The nested masks of `arch` at its width bucket's shapes (numpy; arguments, never constants)."""
        if arch.width not in self.shapes:  # traced once per width
            self.shapes[arch.width] = jax.eval_shape(functools.partial(
                sn.slice_params, arch=bucket_architecture(self.model_config, arch.width)), params)
        return nest_paths(sn.supernet_masks(self.shapes[arch.width], arch))

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
    budget_by = config.nas.get("budget_by", "latency")
    if budget_by not in BUDGET_KINDS:
        raise ValueError(f"nas.budget_by {budget_by!r} is not one of {list(BUDGET_KINDS)}")
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

    Stopped by Ctrl-C or SIGTERM, it checkpoints the step reached (as
    `train.train_loop` does) and re-raises; a rerun continues from there.
    Returns {"state", "widths": the width bucket of each step run this
    invocation, "compiles", "wall_s": the wall time of every invocation so
    far (WORKDIR/timing.json), so an interrupted search still reports its
    whole cost}.
    """
    config = net.config
    num_steps = int(config.train.num_steps)
    batch_size, seq_len = int(config.train.batch_size), int(config.dataset.seq_len)
    sampling = str(config.nas.get("sampling", "uniform"))
    checkpoint_every = max(1, int(config.train.checkpoint_every))
    state = init_state(net)
    os.makedirs(workdir, exist_ok=True)
    timing_path = os.path.join(workdir, "timing.json")
    earlier_s = json.load(open(timing_path))["wall_s"] if os.path.exists(timing_path) else 0.0
    log_every = max(1, int(config.train.log_every))
    history, widths = [], []
    begin = time.time()
    step = 0
    try:
        with train.checkpointing(workdir, config) as manager:
            state, step = train.restore_latest(manager, state)
            bar = None
            if progress:
                from tqdm import tqdm
                bar = tqdm(total=num_steps, initial=step, desc="supernet")
            try:
                while step < num_steps:
                    arch = architecture_at(net.space, int(config.seed), step, sampling)
                    batch = data_lib.train_batch(net.dataset, int(config.seed), step, batch_size, seq_len)
                    state, loss = net.train_step(arch.width)(state, net.masks(state["params"], arch), batch)
                    step += 1
                    widths.append(arch.width)
                    history.append(loss)
                    if step % log_every == 0 or step == num_steps:
                        values = [float(v) for v in jax.device_get(history)]  # one host sync per log interval
                        if not all(np.isfinite(values)):
                            raise FloatingPointError(f"supernet training: non-finite loss by step {step}; "
                                                     f"no results written")
                        train.write_results(os.path.join(workdir, "supernet_log.json"),
                                            {"step": step, "train_loss": float(np.mean(values))})
                        history = []
                    if step % checkpoint_every == 0:
                        train.save_checkpoint(manager, step, state)
                    if bar is not None:
                        bar.update(1)
            except KeyboardInterrupt as interruption:
                train.save_interrupted(manager, step, state, num_steps, interruption, "the supernet")
                raise
            finally:
                if bar is not None:
                    bar.close()
            train.save_final_checkpoint(manager, step, state)
    finally:
        train.write_results(timing_path, {"wall_s": earlier_s + time.time() - begin, "step": step})
    return {"state": state, "widths": widths, "compiles": net.compiles(),
            "wall_s": earlier_s + time.time() - begin}


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


# ----------------------------------------------------------------------------- costs and latency

def _standalone(arch: sn.Architecture, supernet: Mapping[str, Any], vocab_size: int):
    return models.build_model(arch.model_config(supernet), vocab_size)


@functools.lru_cache(maxsize=4096)
def _exact_costs(arch: sn.Architecture, supernet_json: str, vocab_size: int, seq_len: int) -> tuple[int, int]:
    from compression.accounting import count_flops

    model = _standalone(arch, json.loads(supernet_json), vocab_size)
    tokens = jax.ShapeDtypeStruct((1, seq_len), jnp.int32)
    params = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, seq_len), jnp.int32))["params"],
                            jax.random.PRNGKey(0))
    count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
    return count, count_flops(lambda p, x: model.apply({"params": p}, x), params, tokens)


def exact_costs(arch: sn.Architecture, supernet: Mapping[str, Any], vocab_size: int, seq_len: int) -> dict:
    """{"params", "flops"} of the standalone model of `arch`: its parameter count and the matmul FLOPs
    (2 per multiply-add, `compression.accounting.count_flops`) of one sequence of `seq_len` tokens."""
    params, flops = _exact_costs(arch, json.dumps(dict(supernet), sort_keys=True), int(vocab_size), int(seq_len))
    return {"params": params, "flops": flops}


def measure_latency_ms(arch: sn.Architecture, supernet: Mapping[str, Any], params: Any, vocab_size: int,
                       batch_size: int, seq_len: int, repeats: int = 20) -> float:
    """Median wall time (ms) of the standalone model's jitted forward pass on one batch, after a warm-up call."""
    model = _standalone(arch, supernet, vocab_size)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x))
    sliced = jax.device_put(sn.slice_params(params, arch))
    tokens = jnp.zeros((batch_size, seq_len), jnp.int32)
    forward(sliced, tokens).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(sliced, tokens).block_until_ready()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def latency_features(arch: sn.Architecture) -> np.ndarray:
    """What a Transformer's forward time grows with: a constant, layers, heads and FFN units, both times the width,
    and the width (embedding and output head)."""
    w, h, f = arch.width, sum(arch.heads), sum(arch.ffn)
    return np.array([1.0, arch.depth, h, f, w * h, w * f, w, w * arch.depth], np.float64)


@dataclasses.dataclass
class LatencyModel:
    """A fitted cost model of measured latency (least squares on relative error over `latency_features`).

    HAT trains a small MLP on a few thousand measurements; with a few hundred
    here, a linear model on the terms the forward pass's cost is made of is
    the fitted cost model the issue allows, and its held-out error is what
    decides whether the search may use it (`MAX_MAPE`).
    """

    coefficients: list[float]
    device_kind: str
    batch_size: int
    seq_len: int
    heldout_mape: float
    measurements: int

    def predict(self, arch: sn.Architecture) -> float:
        return float(latency_features(arch) @ np.asarray(self.coefficients))

    def check_device(self, device_kind: str) -> None:
        if device_kind != self.device_kind:
            raise ValueError(f"the latency model was measured on {self.device_kind!r} but the search targets "
                             f"{device_kind!r}: measure latencies on the device searched for (its latency table)")


MAX_MAPE = 0.10


def repeat_spread(table: Sequence[Mapping[str, Any]]) -> Optional[dict]:
    """The latency table's own noise: over the architectures it measured more than once (sampling repeats
    some), the median and the largest of (slowest - fastest) / median of one architecture's measurements.
    A cost model cannot be fitted to much below this, so it tells a held-out error over `MAX_MAPE` that
    comes from the machine from one that comes from the model; None when no architecture repeats."""
    by_arch: dict[str, list[float]] = {}
    for row in table:
        by_arch.setdefault(json.dumps(row["arch"], sort_keys=True), []).append(float(row["latency_ms"]))
    spreads = [(max(v) - min(v)) / float(np.median(v)) for v in by_arch.values() if len(v) > 1]
    if not spreads:
        return None
    return {"architectures": len(spreads), "median": float(np.median(spreads)), "max": float(max(spreads))}


BUDGET_KINDS = ("latency", "flops", "params")  # what a budget limits; latency through the fitted cost model


def fit_latency_model(table: Sequence[Mapping[str, Any]], device_kind: str, batch_size: int, seq_len: int,
                      heldout_fraction: float = 0.2, seed: int = 0) -> LatencyModel:
    """Fits `LatencyModel` on `table` ({"arch": dict, "latency_ms"} rows) and scores it on held-out rows."""
    if len(table) < 10:
        raise ValueError(f"a latency model needs at least 10 measured architectures (got {len(table)})")
    archs = [sn.Architecture.from_dict(r["arch"]) for r in table]
    x = np.stack([latency_features(a) for a in archs])
    y = np.array([float(r["latency_ms"]) for r in table])
    order = np.random.default_rng(seed).permutation(len(table))
    held = order[:max(1, int(round(heldout_fraction * len(table))))]
    fit = order[len(held):]

    def solve(rows):
        # Relative error: each row divided by its latency, so small models count as much as large ones.
        return np.linalg.lstsq(x[rows] / y[rows, None], np.ones(len(rows)), rcond=None)[0]

    coefficients = solve(fit)
    mape = float(np.mean(np.abs(x[held] @ coefficients - y[held]) / y[held]))
    return LatencyModel([float(c) for c in solve(np.arange(len(table)))], device_kind, batch_size, seq_len, mape,
                        len(table))


# ----------------------------------------------------------------------------- the search

FOUND = ("evolution", "layers", "narrow")  # the models each budget exports: searched, fewer layers, narrower


def found_export(workdir: str, name: str) -> str:
    """Where a search run writes its model `name` (BUDGET_KIND, KIND one of FOUND; or sample_I)."""
    return os.path.join(workdir, "found", name, "export", "params.safetensors")


def export_architecture(path: str, params: Any, arch: sn.Architecture, supernet: Mapping[str, Any]) -> str:
    """Writes `arch`'s slice of the supernet as a standalone export (its own model config in the header):
    what `init_from` fine-tunes from inherited weights, and what loads as the found model."""
    from compression import export

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sliced = jax.tree_util.tree_map(np.asarray, jax.device_get(sn.slice_params(params, arch)))
    export.export_params(path, sliced, metadata={"model": arch.model_config(supernet), "architecture":
                                                  arch.as_dict()})
    return path


def latency_table(net: Supernet, params: Any, path: str, count: int, seed: int, repeats: int,
                  progress: bool = True) -> list[dict]:
    """Measured latency of `count` sampled architectures (plus the largest and the smallest), resumable:
    the rows already in `path` are kept and the rest measured and appended; each row records the
    seconds its measurement took (`measure_s`)."""
    rng = np.random.default_rng((seed, 11))
    archs = [net.space.largest(), net.space.smallest()] + [net.space.sample(rng) for _ in range(count)]
    rows = json.load(open(path)) if os.path.exists(path) else []
    device = jax.devices()[0].device_kind
    if rows and rows[0]["device_kind"] != device:
        raise ValueError(f"{path} was measured on {rows[0]['device_kind']!r}, this machine is {device!r}: "
                         f"measure in another workdir")
    batch, seq_len = int(net.config.train.eval_batch_size), int(net.config.dataset.seq_len)
    todo = archs[len(rows):]
    if progress:
        from tqdm import tqdm
        todo = tqdm(todo, desc="latency", initial=len(rows), total=len(archs))
    for arch in todo:
        start = time.time()
        ms = measure_latency_ms(arch, net.model_config, params, net.dataset.num_classes, batch, seq_len, repeats)
        # Each row keeps its own cost, so a table measured over several invocations reports all of it.
        rows.append({"arch": arch.as_dict(), "latency_ms": ms, "device_kind": device,
                     "measure_s": time.time() - start})
        train.write_results(path, rows)
    return rows


def hand_scaled(space: sn.SearchSpace, measure: Any, budget: float) -> dict[str, Optional[sn.Architecture]]:
    """The hand-scaled baselines of a budget: the deepest model at full size per layer (`layers`: uniformly
    fewer layers), and the largest at full depth with width, heads and FFN scaled down together (`narrow`:
    uniformly narrower); None where none fits."""
    top = space.largest()
    layers = next((a for d in sorted(space.depths, reverse=True)
                   for a in [sn.Architecture(top.width, (top.heads[0],) * d, (top.ffn[0],) * d)]
                   if measure(a) <= budget), None)
    depth = max(space.depths)
    steps = max(len(space.widths), len(space.heads), len(space.ffn))
    pick = lambda choices, k: choices[max(len(choices) - 1 - k, 0)]
    narrow = next((a for k in range(steps)
                   for a in [sn.Architecture(pick(space.widths, k), (pick(space.heads, k),) * depth,
                                             (pick(space.ffn, k),) * depth)]
                   if measure(a) <= budget), None)
    return {"layers": layers, "narrow": narrow}


def search_budgets(net: Supernet, params: Any, within: Mapping[str, Any], batches: Sequence[dict],
                   seed: int) -> dict:
    """Evolutionary and random search at each budget; `within` maps a budget's name to its predicate."""
    from compression import evolution

    nas_config = net.config.nas
    score = functools.lru_cache(maxsize=None)(lambda arch: inherited_loss(net, params, arch, batches))
    out = {}
    for name, predicate in within.items():
        begin = time.time()
        evolved = evolution.evolutionary_search(
            net.space, score, predicate, np.random.default_rng((seed, 13)),
            population=int(nas_config.population), generations=int(nas_config.generations),
            parents=int(nas_config.parents), mutations=int(nas_config.mutations),
            mutation_probability=float(nas_config.mutation_probability))
        evolution_s = time.time() - begin
        control = evolution.random_search(net.space, score, predicate, np.random.default_rng((seed, 17)),
                                          evolved.count)
        out[name] = {"evolution": {"arch": evolved.best.as_dict(), "inherited_loss": evolved.best_score,
                                   "evaluations": evolved.count, "wall_s": evolution_s},
                     "random": {"arch": control.best.as_dict(), "inherited_loss": control.best_score,
                                "evaluations": control.count}}
    return out


def run_hat(config: Any, workdir: str, progress: bool = True) -> dict:
    """HAT end to end on config: the supernet, its latency model, the searches at each budget, the exports.

    Writes WORKDIR/results.json (and latency_table.json, found/BUDGET/export/params.safetensors); every
    stage resumes from what an interrupted run left.
    """
    net = build_supernet(config)
    trained = train_supernet(net, os.path.join(workdir, "supernet"), progress)
    params = trained["state"]["params"]
    nas_config = config.nas
    seed = int(config.seed)
    device = jax.devices()[0].device_kind
    table = latency_table(net, params, os.path.join(workdir, "latency_table.json"),
                          int(nas_config.latency_samples), seed, int(nas_config.latency_repeats), progress)
    fit_start = time.time()
    model = fit_latency_model(table, device, int(config.train.eval_batch_size), int(config.dataset.seq_len),
                              seed=seed)
    model.check_device(device)
    # Summed over the rows (and the fit now), so a table measured over several invocations counts whole.
    latency_s = sum(float(r.get("measure_s", 0.0)) for r in table) + time.time() - fit_start
    rest_start = time.time()
    largest = net.space.largest()
    largest_ms = float(np.median([r["latency_ms"] for r in table if r["arch"] == largest.as_dict()]))
    seq_len, vocab = int(config.dataset.seq_len), net.dataset.num_classes
    costs = lambda arch: exact_costs(arch, net.model_config, vocab, seq_len)
    budget_by = str(nas_config.get("budget_by", "latency"))
    if budget_by == "latency" and model.heldout_mape > MAX_MAPE:
        budget_by = "flops"  # the predictor is not good enough here: exact FLOPs instead, as the issue allows
    if budget_by == "latency":
        reference = largest_ms
        measure = model.predict
    else:
        reference = float(costs(largest)[budget_by])
        measure = lambda arch: float(costs(arch)[budget_by])
    budgets = {f"{int(round(100 * f))}": f * reference for f in nas_config.budget_fractions}
    within = {name: (lambda arch, b=b: measure(arch) <= b) for name, b in budgets.items()}
    batches = fixed_batches(net, int(nas_config.score_batches))
    search_start = time.time()
    searches = search_budgets(net, params, within, batches, seed)
    search_s = time.time() - search_start
    exports = {}
    for name, found in searches.items():
        scaled = hand_scaled(net.space, measure, budgets[name])
        found.update({kind: {"arch": None} if arch is None else
                      {"arch": arch.as_dict(), "inherited_loss": inherited_loss(net, params, arch, batches)}
                      for kind, arch in scaled.items()})
        for kind in ("evolution", "random", "layers", "narrow"):
            if found[kind]["arch"] is not None:
                arch = sn.Architecture.from_dict(found[kind]["arch"])
                found[kind].update(costs(arch), predicted_latency_ms=model.predict(arch))
                if kind in FOUND:
                    exports[f"{name}_{kind}"] = found[kind]
    # HAT's rank check: architectures drawn from the whole space, whose inherited losses are set
    # against their losses once retrained (Kendall's tau, in the report).
    rng = np.random.default_rng((seed, 19))
    samples = []
    while len(samples) < int(nas_config.get("rank_samples", 0)):
        arch = net.space.sample(rng)
        if arch not in samples:
            samples.append(arch)
    for i, arch in enumerate(samples):
        exports[f"sample_{i}"] = {"arch": arch.as_dict(), "inherited_loss": inherited_loss(net, params, arch, batches),
                                  **costs(arch), "predicted_latency_ms": model.predict(arch)}
    for name, entry in exports.items():
        export_architecture(found_export(workdir, name), params, sn.Architecture.from_dict(entry["arch"]),
                            net.model_config)
    metrics = {f"inherited_loss_{name}": entry["inherited_loss"] for name, entry in exports.items()}
    results = {
        "config": config.to_dict(), "space": dataclasses.asdict(net.space), "metrics": metrics,
        "compression": {"params_total": costs(largest)["params"], "flops_per_example": costs(largest)["flops"]},
        # The whole search's cost: the supernet and the latency table over every invocation, then the rest.
        "timing": {"wall_s": trained["wall_s"] + latency_s + time.time() - rest_start,
                   "supernet_s": trained["wall_s"], "latency_s": latency_s,
                   "search_s": search_s, "compiles": trained["compiles"]},
        "supernet": {"steps": int(config.train.num_steps), "sampling": str(nas_config.get("sampling", "uniform"))},
        "latency": {"device_kind": device, "measurements": model.measurements, "heldout_mape": model.heldout_mape,
                    "coefficients": model.coefficients, "largest_ms": largest_ms,
                    "repeat_spread": repeat_spread(table)},
        "budget": {"by": budget_by, "asked": str(nas_config.get("budget_by", "latency")), "reference": reference,
                   "fractions": list(nas_config.budget_fractions)},
        "searches": searches, "exports": exports, "versions": train.versions(),
    }
    train.write_results(os.path.join(workdir, "results.json"), results)
    return results


# nas.export's name for the supernet's full-size slice, the reference the found models are timed against
# (configs/wang2020_hat_char_transformer.py's `found_largest`).
LARGEST = "largest"


def export_largest(config: Any, search_dir: str, searched: Mapping[str, Any], workdir: str) -> dict:
    """The finished search's largest architecture (the supernet at full size) as a standalone export at
    WORKDIR/export/params.safetensors, with its inherited loss on the search's scoring batches: the
    model whose measured latency the budgets are fractions of, so `benchmark_inference` times the found
    models beside it."""
    net = build_supernet(config)
    supernet_dir = os.path.join(search_dir, "supernet")
    with train.checkpointing(supernet_dir, config) as manager:
        state, step = train.restore_latest(manager, init_state(net))
    if step < int(config.train.num_steps):
        raise ValueError(f"{supernet_dir} holds the supernet at step {step} of {config.train.num_steps}: "
                         f"finish the search before exporting from it")
    arch = net.space.largest()
    export_architecture(os.path.join(workdir, "export", "params.safetensors"), state["params"], arch,
                        net.model_config)
    costs = exact_costs(arch, net.model_config, net.dataset.num_classes, int(config.dataset.seq_len))
    loss = inherited_loss(net, state["params"], arch, fixed_batches(net, int(config.nas.score_batches)))
    return _write_found(config, workdir, searched, arch.as_dict(), costs,
                        {"inherited_loss": loss, "measured_latency_ms": searched["latency"]["largest_ms"]})


def _write_found(config: Any, workdir: str, searched: Mapping[str, Any], arch: Mapping[str, Any],
                 costs: Mapping[str, Any], metrics: Mapping[str, float]) -> dict:
    """WORKDIR/results.json of an exported model: its architecture, metrics and exact costs; its wall time
    is the search's, which made it."""
    results = {"config": config.to_dict(), "architecture": arch, "metrics": dict(metrics),
               "compression": {"params_total": costs["params"], "flops_per_example": costs["flops"]},
               "timing": {"wall_s": searched["timing"]["wall_s"]}, "versions": train.versions()}
    train.write_results(os.path.join(workdir, "results.json"), results)
    return results


def run(config: Any, workdir: str, progress: bool = True) -> dict:
    """config.runner "nas": the search (config.nas.export empty), or the export of one model it found.

    config.nas.export = NAME (BUDGET_KIND, KIND one of FOUND, or sample_I) copies that model of the search
    run in config.nas.search (runs/NAME_search/seed_{seed}, searched first if it has not finished) to
    WORKDIR/export/params.safetensors, so a retraining config reads it through `model_from`; LARGEST
    exports the supernet's full-size slice (`export_largest`).
    """
    import copy
    import shutil

    from experiments import provenance

    chosen = str(config.nas.get("export", ""))
    if not chosen:
        done = os.path.join(workdir, "results.json")
        if os.path.exists(done):
            with open(done) as f:
                previous = json.load(f)
            # Compared as JSON stores it (tuples become lists): a finished search is read back, not redone.
            if previous.get("config") == json.loads(json.dumps(config.to_dict())):
                return previous
        return run_hat(config, workdir, progress)
    search_config = copy.deepcopy(config)
    search_config.nas.export = ""
    search_dir = provenance.seeded_path(str(config.nas.search), int(config.seed))
    searched = run(search_config, search_dir, progress)
    if chosen == LARGEST:
        return export_largest(config, search_dir, searched, workdir)
    if chosen not in searched["exports"]:
        raise ValueError(f"nas.export {chosen!r} is not one of the search's models {sorted(searched['exports'])} "
                         f"(a hand-scaled baseline that no budget admits is not exported; see "
                         f"{search_dir}/results.json)")
    found = searched["exports"][chosen]
    target = os.path.join(workdir, "export", "params.safetensors")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copyfile(found_export(search_dir, chosen), target)
    return _write_found(config, workdir, searched, found["arch"], found,
                        {"inherited_loss": found["inherited_loss"],
                         "predicted_latency_ms": found["predicted_latency_ms"]})
