"""Knowledge distillation as loss terms: the student learns from the teacher's outputs.

Distillation changes the loss, not the parameters: the driver runs the
teacher (`config.teacher.export`) inside the jitted step without gradients
and hands its outputs to the terms as `extras["teacher"]` (compression/losses.py).

- `knowledge_distillation` (Hinton, Vinyals, Dean 2015, "Distilling the
  Knowledge in a Neural Network"): the hard-label cross-entropy mixed with the
  KL divergence between the teacher's and the student's softmax at temperature
  T, scaled by T^2 so that the soft targets' gradients keep their size as T
  changes (the paper's Section 2).
- `hint` (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets"): a student
  layer regressed onto a teacher layer, ½ · ‖r(s) - t‖², through a learned
  linear regressor r where the widths differ.
- `attention_transfer` (Zagoruyko & Komodakis 2017, "Paying More Attention
  to Attention"): the distance between the two models' normalised spatial
  attention maps, mean_c(A_c²) flattened and scaled to unit ℓ2 norm.
- `hidden_mse` and `attention_mse` (Jiao et al. 2020, TinyBERT): mean squared
  error between mapped layers' hidden states (through a learned projection
  where the widths differ; the embeddings are the layer `embedding`) and
  attention probabilities.
- `hidden_cosine` (Sanh et al. 2019, DistilBERT): 1 - cosine similarity
  between mapped layers' hidden states.

The feature terms name the values the models sow (`self.sow("intermediates",
NAME, x)`): `hidden_0`, `features_1`, `embedding`, `block_0/attn/attention`.
A layer mapping is a list of [student layer, teacher layer] pairs, so a
shallow student can learn from every other layer of a deep teacher.
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp

from compression.losses import LossTerm, ParamTerm, mean_cross_entropy, register_loss
from compression.settings import require_float


def soft_target_kl(student_logits: jnp.ndarray, teacher_logits: jnp.ndarray, temperature: float) -> jnp.ndarray:
    """T^2 · mean over examples (and positions) of KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015).

    The T^2 factor keeps the gradient's magnitude roughly constant in T: the
    gradient of the KL with respect to a student logit is (q_i - p_i) / T,
    which for large T is about (s_i - t_i) / (N T^2) (the paper's eq. 3-4).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"the student's logits {student_logits.shape} and the teacher's "
                         f"{teacher_logits.shape} differ in shape: a teacher must predict the student's "
                         f"classes for the same examples")
    t = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    s = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(t) * (t - s), axis=-1)
    return temperature ** 2 * jnp.mean(kl)


def teacher_outputs(extras: Mapping[str, Any], term: str) -> Mapping[str, Any]:
    """extras["teacher"], or a ValueError saying how to name a teacher."""
    if "teacher" not in extras:
        raise ValueError(f"loss term {term!r} needs a teacher: set config.teacher.export to the teacher run's "
                         f"export (or its run folder), e.g. runs/NAME/export/params.safetensors")
    return extras["teacher"]


def top_k_logits(logits: jnp.ndarray, k: int) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(the k largest logits in float16, their indices, the log-sum-exp of all logits in float32).

    What a precomputed language-model teacher keeps per position: all 256
    logits of every window would not fit on disk (see `dense_from_top_k`).
    """
    values, indices = jax.lax.top_k(logits.astype(jnp.float32), k)
    lse = jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    return values.astype(jnp.float16), indices.astype(jnp.int32), lse


def dense_from_top_k(values: jnp.ndarray, indices: jnp.ndarray, lse: jnp.ndarray, vocab: int) -> jnp.ndarray:
    """Logits over `vocab` symbols rebuilt from `top_k_logits`: the top k exact, the rest sharing the remaining mass.

    At T = 1 the rebuilt softmax gives each kept symbol its probability
    exp(l_i - lse) and spreads the remaining mass 1 - Σ_kept p_i evenly over
    the vocab - k others (each gets the logit lse + log(rest / (vocab - k))),
    so the total is exactly 1; at other temperatures the tail is this even
    spread, softened, which is the approximation top-k storage makes.
    """
    values = values.astype(jnp.float32)
    k = values.shape[-1]
    if k >= vocab:
        return jnp.take_along_axis(values, jnp.argsort(indices, axis=-1), axis=-1)
    kept = jnp.sum(jnp.exp(values - lse[..., None]), axis=-1)
    rest = jnp.clip(1.0 - kept, 1e-12, 1.0)
    tail = lse + jnp.log(rest / (vocab - k))
    dense = jnp.broadcast_to(tail[..., None], values.shape[:-1] + (vocab,))
    return jnp.put_along_axis(dense, indices, values, axis=-1, inplace=False)


@register_loss("knowledge_distillation")
def knowledge_distillation(temperature: float = 1.0, alpha: float = 0.5) -> LossTerm:
    """(1 - α) · cross-entropy with the labels + α · T^2 · KL(teacher ‖ student) at temperature T.

    Hinton et al. 2015: α = 1 trains on the soft targets alone, α = 0 is plain
    training; the paper weights the hard targets "considerably lower".
    """
    temperature = require_float("knowledge_distillation.temperature", temperature, low=0, low_open=True,
                                fix="T = 1 is the plain softmax; Hinton et al. use up to 20")
    alpha = require_float("knowledge_distillation.alpha", alpha, low=0, high=1,
                          fix="alpha weighs the soft targets, 1 - alpha the labels")

    def term(outputs, batch, extras):
        teacher = teacher_outputs(extras, "knowledge_distillation")
        soft = soft_target_kl(outputs["logits"], teacher["logits"], temperature)
        if alpha == 1.0:
            return soft
        return (1.0 - alpha) * mean_cross_entropy(outputs["logits"], batch["targets"]) + alpha * soft

    return term


# --------------------------------------------------------------------------
# Student initialisation from the teacher.


def student_from_teacher(teacher: Mapping[str, Any], student_modules: Any, layers: Any) -> dict:
    """The student's top-level modules taken from the teacher's, renamed by `layers` (Sanh et al. 2019).

    `layers` is [[student module, teacher module], ...] (DistilBERT's student
    takes every other layer of its teacher: [["block_0", "block_0"],
    ["block_1", "block_2"]]); a student module not named keeps its own name
    (embeddings, the final norm, the head). `student_modules` lists the
    student's top-level module names. Shapes are checked by the caller.
    """
    mapping = {}
    for pair in layers:
        if isinstance(pair, str) or not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError(f"init_layers entry {pair!r} is not a [student module, teacher module] pair")
        mapping[str(pair[0])] = str(pair[1])
    unknown = sorted(set(mapping) - set(student_modules))
    if unknown:
        raise ValueError(f"init_layers names {unknown}, which the model does not have; its modules: "
                         f"{', '.join(sorted(student_modules))}")
    out = {}
    for name in student_modules:
        source = mapping.get(name, name)
        if source not in teacher:
            raise ValueError(f"init_layers: the model's {name!r} starts from the export's {source!r}, which the "
                             f"export lacks; it has: {', '.join(sorted(teacher))}")
        out[name] = teacher[source]
    return out


# --------------------------------------------------------------------------
# Feature transfer: intermediate values the models sow.


def sown_names(intermediates: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every name a model sowed, as slash-joined paths (`hidden_0`, `block_1/attn/attention`)."""
    names = []
    for key, value in intermediates.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            names += sown_names(value, path + "/")
        else:
            names.append(path)
    return names


def sown(outputs: Mapping[str, Any], name: str, who: str, term: str) -> Any:
    """The value `who` ("student" or "teacher") sowed under `name` (the last one, if sown several times)."""
    node: Any = outputs.get("intermediates", {})
    for key in name.split("/"):
        if not isinstance(node, Mapping) or key not in node:
            known = ", ".join(sown_names(outputs.get("intermediates", {}))) or "nothing"
            why = (" (a precomputed teacher keeps only its logits: use teacher.mode 'in_step' for feature terms)"
                   if "intermediates" not in outputs else "")
            raise ValueError(f"loss term {term!r}: the {who} sows no {name!r}; it sows: {known}{why}")
        node = node[key]
    if isinstance(node, Mapping):
        raise ValueError(f"loss term {term!r}: {name!r} names a group of the {who}'s sown values, not one; "
                         f"pick one of {', '.join(sown_names(node, name + '/'))}")
    return node[-1] if isinstance(node, (tuple, list)) else node


def layer_pairs(pairs: Any, term: str) -> tuple[tuple[str, str], ...]:
    """A layer mapping [[student layer, teacher layer], ...], checked."""
    if isinstance(pairs, str) or not isinstance(pairs, (list, tuple)) or not pairs:
        raise ValueError(f"{term}.pairs must be a non-empty list of [student layer, teacher layer] pairs "
                         f"such as [['hidden_0', 'hidden_1']] (got {pairs!r})")
    out = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, (list, tuple)) or len(pair) != 2 \
                or not all(isinstance(p, str) and p for p in pair):
            raise ValueError(f"{term}.pairs entry {pair!r} is not a [student layer, teacher layer] pair of names")
        out.append((pair[0], pair[1]))
    return tuple(out)


PROJECTIONS = ("auto", "linear", "none")


def _check_projection(projection: str, term: str) -> str:
    if projection not in PROJECTIONS:
        raise ValueError(f"{term}.projection {projection!r} is not one of {PROJECTIONS} (auto: a learned "
                         f"linear map where the widths differ)")
    return projection


def _paired_values(outputs, extras, pairs, term):
    teacher = teacher_outputs(extras, term)
    return [(sown(outputs, s, "student", term), sown(teacher, t, "teacher", term)) for s, t in pairs]


def _needs_projection(student, teacher, projection: str, pair: tuple[str, str], term: str) -> bool:
    if student.shape[:-1] != teacher.shape[:-1]:
        raise ValueError(f"loss term {term!r}: student {pair[0]!r} {tuple(student.shape)} and teacher {pair[1]!r} "
                         f"{tuple(teacher.shape)} differ in more than their last (feature) axis: map layers "
                         f"whose other axes (batch, positions, spatial size) agree")
    if projection == "none" and student.shape[-1] != teacher.shape[-1]:
        raise ValueError(f"loss term {term!r}: student {pair[0]!r} has {student.shape[-1]} features and teacher "
                         f"{pair[1]!r} {teacher.shape[-1]}; set projection='auto' to learn a linear map between them")
    return projection == "linear" or student.shape[-1] != teacher.shape[-1]


def _projection_params(key, pairs, outputs, extras, projection, term) -> dict:
    """{pair index: {"kernel", "bias"}} for the pairs that get a learned linear map (LeCun-normal, zero bias)."""
    params = {}
    for i, (student, teacher) in enumerate(_paired_values(outputs, extras, pairs, term)):
        if _needs_projection(student, teacher, projection, pairs[i], term):
            d_in, d_out = student.shape[-1], teacher.shape[-1]
            kernel = jax.nn.initializers.lecun_normal()(jax.random.fold_in(key, i), (d_in, d_out), jnp.float32)
            params[str(i)] = {"kernel": kernel, "bias": jnp.zeros((d_out,), jnp.float32)}
    return params


def _projected(params, i: int, student):
    p = params.get(str(i))
    return student if p is None else student @ p["kernel"] + p["bias"]


def _projected_distance(term: str, pairs: Any, projection: str, distance) -> ParamTerm:
    """Σ over `pairs` of distance(r(s) - t), r a learned linear map on the feature axis where the widths differ."""
    pairs = layer_pairs(pairs, term)
    projection = _check_projection(projection, term)

    def init(key, outputs, extras):
        return _projection_params(key, pairs, outputs, extras, projection, term)

    def apply(params, outputs, batch, extras):
        total = 0.0
        for i, (student, teacher) in enumerate(_paired_values(outputs, extras, pairs, term)):
            total = total + distance(_projected(params, i, student) - teacher)
        return total

    return ParamTerm(init, apply)


@register_loss("hint")
def hint(pairs: Any = (("hidden_0", "hidden_0"),), projection: str = "auto") -> ParamTerm:
    """FitNets' hint loss (Romero et al. 2015, eq. 3): Σ over pairs of ½ · mean over examples of ‖r(s) - t‖².

    r is a learned linear regressor on the feature axis (a 1×1 convolution on
    [B, H, W, C] maps) where the widths differ or `projection="linear"`; the
    sum runs over every other axis, as the paper's squared norm does.
    """
    return _projected_distance(
        "hint", pairs, projection,
        lambda diff: 0.5 * jnp.mean(jnp.sum(jnp.square(diff).reshape(diff.shape[0], -1), axis=-1)))


@register_loss("hidden_mse")
def hidden_mse(pairs: Any = (("hidden_0", "hidden_0"),), projection: str = "auto") -> ParamTerm:
    """TinyBERT's hidden-state and embedding loss (Jiao et al. 2020, eq. 2 and 4): Σ over pairs of MSE(s W, t).

    W is a learned linear map where the widths differ (or `projection="linear"`).
    """
    return _projected_distance("hidden_mse", pairs, projection, lambda diff: jnp.mean(jnp.square(diff)))


def _same_shapes(values, pairs, term: str, what: str):
    for (student, teacher), pair in zip(values, pairs):
        if student.shape != teacher.shape:
            raise ValueError(f"loss term {term!r}: student {pair[0]!r} {tuple(student.shape)} and teacher "
                             f"{pair[1]!r} {tuple(teacher.shape)} differ in shape; {what}")
    return values


@register_loss("attention_mse")
def attention_mse(pairs: Any = (("block_0/attn/attention", "block_0/attn/attention"),)) -> LossTerm:
    """TinyBERT's attention loss (Jiao et al. 2020, eq. 3): Σ over pairs of MSE between attention maps.

    Our Transformer sows attention probabilities ([batch, heads, query, key]);
    TinyBERT compares the scores before the softmax. Student and teacher need
    the same number of heads and positions.
    """
    pairs = layer_pairs(pairs, "attention_mse")

    def term(outputs, batch, extras):
        values = _same_shapes(_paired_values(outputs, extras, pairs, "attention_mse"), pairs, "attention_mse",
                              "attention maps are compared head by head, so give the student the teacher's heads")
        return sum(jnp.mean(jnp.square(s - t)) for s, t in values)

    return term


@register_loss("hidden_cosine")
def hidden_cosine(pairs: Any = (("hidden_0", "hidden_0"),)) -> LossTerm:
    """DistilBERT's cosine embedding loss (Sanh et al. 2019): Σ over pairs of mean(1 - cos(s, t)) over features."""
    pairs = layer_pairs(pairs, "hidden_cosine")

    def term(outputs, batch, extras):
        values = _same_shapes(_paired_values(outputs, extras, pairs, "hidden_cosine"), pairs, "hidden_cosine",
                              "the cosine compares hidden states of one width (DistilBERT keeps the teacher's)")
        total = 0.0
        for s, t in values:
            cos = jnp.sum(s * t, -1) / jnp.maximum(jnp.linalg.norm(s, axis=-1) * jnp.linalg.norm(t, axis=-1), 1e-8)
            total = total + jnp.mean(1.0 - cos)
        return total

    return term


def attention_map(features) -> jnp.ndarray:
    """Zagoruyko & Komodakis 2017's spatial attention map: mean over channels of A², flattened, unit ℓ2 norm.

    `features` is [B, H, W, C] (channels last, as Flax); the result is [B, H·W].
    """
    q = jnp.mean(jnp.square(features), axis=-1).reshape(features.shape[0], -1)
    return q / jnp.maximum(jnp.linalg.norm(q, axis=-1, keepdims=True), 1e-12)


@register_loss("attention_transfer")
def attention_transfer(pairs: Any = (("features_0", "features_0"),)) -> LossTerm:
    """Attention transfer (Zagoruyko & Komodakis 2017): Σ over pairs of mean((Q_s - Q_t)²) of `attention_map`s.

    As the authors' code (at_loss), the squared difference is averaged over
    positions and examples; the paper weighs it by β/2 with β = 1000, which is
    this term's `weight`. Student and teacher maps need the same spatial size;
    their channel counts may differ.
    """
    pairs = layer_pairs(pairs, "attention_transfer")

    def term(outputs, batch, extras):
        total = 0.0
        for (s, t), pair in zip(_paired_values(outputs, extras, pairs, "attention_transfer"), pairs):
            if s.ndim != 4 or t.ndim != 4 or s.shape[:3] != t.shape[:3]:
                raise ValueError(f"loss term 'attention_transfer': student {pair[0]!r} {tuple(s.shape)} and teacher "
                                 f"{pair[1]!r} {tuple(t.shape)} must be [batch, height, width, channels] maps of "
                                 f"the same spatial size")
            total = total + jnp.mean(jnp.square(attention_map(s) - attention_map(t)))
        return total

    return term
