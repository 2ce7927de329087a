"""The lab's models: ordinary Flax Linen modules, looked up by name from the config.

Compression never edits these classes: techniques transform their parameter
pytrees. Every model maps `inputs` to logits and takes `train` (dropout,
BatchNorm's batch statistics). Models sow the values that distillation and
calibration read into the `intermediates` collection (hidden states,
convolution features, attention probabilities); sowing costs nothing unless
the caller asks for that collection, and inside a jitted step the ones no
loss term reads are dropped by XLA.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from compression import intercept

NORMALIZATIONS = ("none", "layer", "batch")
# The precision policy's compute dtypes (config.precision.compute). Parameters are stored in
# float32 whatever the policy: a module casts them to its `dtype` where it uses them, so the
# gradients, the optimizer state and every technique's transform stay float32.
COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> Any:
    """The jnp dtype of a precision policy's compute setting ("float32" or "bfloat16")."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"precision.compute {name!r} is not one of {sorted(COMPUTE_DTYPES)}; float16 would "
                         f"need loss scaling, which the lab does not implement: use bfloat16")
    return COMPUTE_DTYPES[name]
# Collections besides params that a model may carry between steps (BatchNorm's running statistics).
STATE_COLLECTIONS = ("batch_stats",)


def _as_float_images(x: jnp.ndarray, dtype: Any = jnp.float32) -> jnp.ndarray:
    # Images travel as uint8 (4x less host-to-device traffic) and become [0, 1] floats here,
    # divided in float32 and then rounded once to the compute dtype.
    x = x.astype(jnp.float32) / 255.0 if jnp.issubdtype(x.dtype, jnp.integer) else x
    return x.astype(dtype)


def _logits(x: jnp.ndarray) -> jnp.ndarray:
    # Whatever the compute dtype, the loss, softmax and metrics read float32 logits.
    return x.astype(jnp.float32)


class LowRankDense(nn.Module):
    """A dense layer stored as two factors: y = (x . u) . v + b, with u (*in, rank) and v (rank, *features).

    What a low-rank export (`compression.low_rank`: truncated SVD, DRONE)
    runs in place of a kernel W = u . v: two thin products, (d_in + d_out) * r
    multiply-adds per row instead of d_in * d_out. `axis` are the trailing
    input axes it contracts (a DenseGeneral's, e.g. (-2, -1) for attention's
    output projection), `features` the output shape.
    """

    features: Any
    rank: int
    axis: Any = -1
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        features = (self.features,) if isinstance(self.features, int) else tuple(self.features)
        axes = (self.axis,) if isinstance(self.axis, int) else tuple(self.axis)
        n_in = len(axes)
        if sorted(a % x.ndim for a in axes) != list(range(x.ndim - n_in, x.ndim)):
            raise ValueError(f"LowRankDense contracts trailing axes only, got axis {self.axis} for input "
                             f"of rank {x.ndim}")
        in_shape = x.shape[x.ndim - n_in:]
        u = self.param("u", nn.initializers.lecun_normal(), in_shape + (self.rank,))
        v = self.param("v", nn.initializers.lecun_normal(), (self.rank,) + features)
        x = x.astype(self.dtype).reshape(x.shape[:x.ndim - n_in] + (-1,))
        y = x @ u.reshape((-1, self.rank)).astype(self.dtype)
        y = (y @ v.reshape((self.rank, -1)).astype(self.dtype)).reshape(y.shape[:-1] + features)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, features).astype(self.dtype)
        return y


def _ranks(low_rank: Any) -> dict[str, int]:
    # A model's `low_rank` field ({module path: rank}, or its pairs: build_model passes a
    # hashable tuple) as a dict.
    return dict(low_rank or ())


def _check_low_rank(low_rank: Any, paths: Sequence[str], model: str) -> None:
    unknown = sorted(set(_ranks(low_rank)) - set(paths))
    if unknown:
        raise ValueError(f"model.low_rank names {unknown}, which are not dense layers of this {model} "
                         f"(its dense layers: {sorted(paths)})")
    for path, rank in _ranks(low_rank).items():
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise ValueError(f"model.low_rank[{path!r}] = {rank!r} must be a positive integer rank")


def _sub_ranks(low_rank: Any, prefix: str) -> tuple:
    # The entries under `prefix/`, relative to it, for a submodule.
    return tuple(sorted((p[len(prefix) + 1:], r) for p, r in _ranks(low_rank).items()
                        if p.startswith(prefix + "/")))


def _dense(features: Any, name: str, dtype: Any, low_rank: Any, *, axis: Any = -1,
           use_bias: bool = True) -> nn.Module:
    """The dense layer `name`: nn.Dense (or DenseGeneral), or a LowRankDense where `low_rank` gives it a rank."""
    rank = _ranks(low_rank).get(name)
    if rank is not None:
        return LowRankDense(features, int(rank), axis, use_bias, dtype, name=name)
    if axis == -1 and isinstance(features, int):
        return nn.Dense(features, use_bias=use_bias, name=name, dtype=dtype)
    return nn.DenseGeneral(features, axis=axis, use_bias=use_bias, name=name, dtype=dtype)


class MLP(nn.Module):
    """A ReLU multilayer perceptron on flattened inputs.

    LeNet-300-100 (LeCun et al. 1998; the pruning papers' 266,610-parameter
    net) is `hidden=(300, 100)`; Hinton et al. 2015's MNIST teacher is
    `hidden=(1200, 1200)` with dropout, its student `(800, 800)` without.
    """

    hidden: Sequence[int]
    num_classes: int = 10
    dropout_rate: float = 0.0
    # "layer": LayerNorm between each hidden Dense and its ReLU; "batch": BatchNorm
    # there (BinaryConnect's MLP relies on batch norm to rescale the sums of +-1
    # weights), with running statistics in the `batch_stats` collection.
    normalization: str = "none"
    dtype: Any = jnp.float32  # the compute dtype (the precision policy); parameters stay float32
    # {layer name: rank}: those Dense layers run as LowRankDense factors (a low-rank export).
    low_rank: Any = None

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"MLP normalization {self.normalization!r} is not one of {NORMALIZATIONS}")
        _check_low_rank(self.low_rank, [f"Dense_{i}" for i in range(len(self.hidden) + 1)], "MLP")
        x = _as_float_images(inputs, self.dtype).reshape((inputs.shape[0], -1))
        for i, width in enumerate(self.hidden):
            x = _dense(width, f"Dense_{i}", self.dtype, self.low_rank)(x)
            if self.normalization == "layer":
                x = nn.LayerNorm(dtype=self.dtype)(x)
            elif self.normalization == "batch":
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = nn.relu(x)
            self.sow("intermediates", f"hidden_{i}", x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return _logits(_dense(self.num_classes, f"Dense_{len(self.hidden)}", self.dtype, self.low_rank)(x))


class LeNet5(nn.Module):
    """LeNet-5 in the Caffe form the pruning papers use, not LeCun's 6-16-120-84 original.

    conv 20@5x5 -> maxpool 2 -> conv 50@5x5 -> maxpool 2 -> dense 500 -> ReLU
    -> dense 10, valid padding and no nonlinearity after the convolutions, as
    in Caffe's lenet_train_test.prototxt: 431,080 parameters on 28x28x1
    inputs (Han et al. 2015; Lee et al. 2019).
    """

    num_classes: int = 10
    conv_features: Sequence[int] = (20, 50)
    dense_features: int = 500
    dropout_rate: float = 0.0
    # BatchNorm after each convolution (running statistics in `batch_stats`); off in the Caffe form.
    batch_norm: bool = False
    dtype: Any = jnp.float32  # the compute dtype (the precision policy); parameters stay float32
    low_rank: Any = None  # {"Dense_0" or "Dense_1": rank}: factored dense layers (a low-rank export)

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        _check_low_rank(self.low_rank, ["Dense_0", "Dense_1"], "LeNet5")
        x = _as_float_images(inputs, self.dtype)
        for i, features in enumerate(self.conv_features):
            x = nn.Conv(features, (5, 5), padding="VALID", dtype=self.dtype)(x)
            if self.batch_norm:
                x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            self.sow("intermediates", f"features_{i}", x)
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(_dense(self.dense_features, "Dense_0", self.dtype, self.low_rank)(x))
        self.sow("intermediates", "hidden", x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return _logits(_dense(self.num_classes, "Dense_1", self.dtype, self.low_rank)(x))


class VGG(nn.Module):
    """A small VGG-style CNN: stages of 3x3 conv + ReLU, 2x2 max pool after each stage.

    `stages=((64, 64), (128, 128), (256, 256))` with `dense=(512,)` is close
    to the VGG-7 of the TWN paper (Li et al. 2016) without batch norm.
    """

    stages: Sequence[Sequence[int]] = ((32, 32), (64, 64))
    dense: Sequence[int] = (256,)
    num_classes: int = 10
    dropout_rate: float = 0.0
    batch_norm: bool = False  # BatchNorm between each convolution and its ReLU
    dtype: Any = jnp.float32  # the compute dtype (the precision policy); parameters stay float32

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        x = _as_float_images(inputs, self.dtype)
        for i, stage in enumerate(self.stages):
            for features in stage:
                x = nn.Conv(features, (3, 3), padding="SAME", dtype=self.dtype)(x)
                if self.batch_norm:
                    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
                x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            self.sow("intermediates", f"features_{i}", x)
        x = x.reshape((x.shape[0], -1))
        for width in self.dense:
            x = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
            x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return _logits(nn.Dense(self.num_classes, dtype=self.dtype)(x))


BLOCK_KINDS = ("full", "separable", "factored")


@functools.partial(jax.jit, static_argnames="stride")
def depthwise_conv(x: jnp.ndarray, kernel: jnp.ndarray, stride: int) -> jnp.ndarray:
    """A depthwise K x K convolution (Howard et al. 2017), SAME padding, as K*K shifted multiply-adds.

    out[b, i, j, c] = sum_{u, v} x_pad[b, i*stride + u, j*stride + v, c] * kernel[u, v, 0, c], what
    `lax.conv_general_dilated` computes with feature_group_count = C (equal up to float rounding).
    Written out because XLA:CPU runs grouped convolutions 10-50x slower than these fused
    elementwise loops (forward and gradient). It stays a jit named depthwise_conv
    (`compression.accounting.DEPTHWISE_CONV`) so that `count_flops` counts it as the
    convolution it is.
    """
    kh, kw = kernel.shape[:2]
    height, width = x.shape[1:3]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h, pad_w = max((out_h - 1) * stride + kh - height, 0), max((out_w - 1) * stride + kw - width, 0)
    x = jnp.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = jnp.zeros((x.shape[0], out_h, out_w, x.shape[3]), jnp.result_type(x, kernel))
    last_h, last_w = (out_h - 1) * stride + 1, (out_w - 1) * stride + 1
    for u in range(kh):
        for v in range(kw):
            out = out + x[:, u:u + last_h:stride, v:v + last_w:stride] * kernel[u, v, 0]
    return out


class DepthwiseConv(nn.Module):
    """nn.Conv(C, (K, K), feature_group_count=C, use_bias=False)'s parameter ("kernel", (K, K, 1, C), the
    same initializer, so the same values for a seed) computed by `depthwise_conv`."""

    kernel_size: int = 3
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (self.kernel_size, self.kernel_size, 1, x.shape[-1]), jnp.float32)
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        return depthwise_conv(x, kernel, self.stride)


class MobileNetCNN(nn.Module):
    """A CNN whose parameters are mostly in its convolutions, in full or depthwise-separable blocks.

    MobileNet's comparison (Howard et al. 2017, Table 4) at Fashion-MNIST
    scale: block i is a 3x3 convolution to features[i] channels with stride
    strides[i], then BatchNorm and ReLU; global average pooling and one small
    Dense classifier ("head") follow. `blocks` (one kind for blocks 1 on, or
    a list with one per block; block 0 stays full, as in MobileNet) makes
    block i
    - "full": conv_i 3x3 -> BN (bn_i) -> ReLU;
    - "separable": MobileNet's depthwise 3x3 conv_i_dw -> BN (bn_i_dw) -> ReLU
      -> pointwise 1x1 conv_i_pw -> BN (bn_i) -> ReLU, trained as such;
    - "factored": a trained full conv split into a depthwise-pointwise pair
      with nothing between them (conv_i_dw, conv_i_pw; compression/separable.py),
      -> BN (bn_i) -> ReLU: the pair computes what the full conv would with
      the kernel dw (x) pw.
    """

    features: Sequence[int] = (16, 32, 64, 64, 128)
    strides: Sequence[int] = (1, 2, 1, 2, 1)
    blocks: Any = "full"
    num_classes: int = 10
    dtype: Any = jnp.float32  # the compute dtype (the precision policy); parameters stay float32

    def block_kinds(self) -> tuple[str, ...]:
        """The kind of every block (block 0 always "full")."""
        n = len(self.features)
        kinds = (("full",) + (self.blocks,) * (n - 1)) if isinstance(self.blocks, str) else tuple(self.blocks)
        if len(self.strides) != n or len(kinds) != n:
            raise ValueError(f"model.features {list(self.features)}, strides {list(self.strides)} and blocks "
                             f"{list(kinds)} must have one entry per block")
        unknown = [k for k in kinds if k not in BLOCK_KINDS]
        if unknown or kinds[0] != "full":
            raise ValueError(f"model.blocks {list(kinds)}: each one of {list(BLOCK_KINDS)}, block 0 'full'")
        return kinds

    @nn.compact
    def __call__(self, inputs: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        x = _as_float_images(inputs, self.dtype)
        norm = lambda name: nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype, name=name)
        for i, (kind, features, stride) in enumerate(zip(self.block_kinds(), self.features, self.strides)):
            if kind == "full":
                x = nn.Conv(features, (3, 3), (stride, stride), padding="SAME", dtype=self.dtype, name=f"conv_{i}")(x)
            else:
                x = DepthwiseConv(3, stride, dtype=self.dtype, name=f"conv_{i}_dw")(x)
                if kind == "separable":
                    x = nn.relu(norm(f"bn_{i}_dw")(x))
                x = nn.Conv(features, (1, 1), dtype=self.dtype, name=f"conv_{i}_pw")(x)
            x = nn.relu(norm(f"bn_{i}")(x))
            self.sow("intermediates", f"features_{i}", x)
        x = jnp.mean(x, axis=(1, 2))
        return _logits(nn.Dense(self.num_classes, dtype=self.dtype, name="head")(x))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention whose head count is a field of its own.

    Projections keep heads on their own kernel axis, query/key/value kernels
    (width, heads, head_dim) and the output kernel (heads, head_dim, width),
    so pruning a head removes one slice of each and the smaller model is the
    same module with fewer heads.
    """

    num_heads: int
    head_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    low_rank: Any = None  # {"query" | "key" | "value" | "out": rank}: factored projections

    @nn.compact
    def __call__(self, x: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        width = x.shape[-1]
        if self.num_heads == 0:  # every head pruned: the block's attention contributes nothing
            return jnp.zeros_like(x)
        proj = lambda name: _dense((self.num_heads, self.head_dim), name, self.dtype, self.low_rank)(x)
        q, k, v = proj("query"), proj("key"), proj("value")
        length = x.shape[-2]
        causal = jnp.tril(jnp.ones((length, length), dtype=bool))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(self.head_dim).astype(q.dtype)
        scores = jnp.where(causal, scores, jnp.finfo(scores.dtype).min)
        # The softmax normalises in float32 whatever the compute dtype (bfloat16's 8-bit
        # significand would round small probabilities over a 1024-long context to zero).
        probs = nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        self.sow("intermediates", "attention", probs)  # [batch, heads, query, key], for attention transfer
        weights = nn.Dropout(self.dropout_rate, deterministic=not train)(probs)
        heads = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
        return _dense(width, "out", self.dtype, self.low_rank, axis=(-2, -1))(heads)


class DecoderBlock(nn.Module):
    """A pre-LayerNorm Transformer decoder block: x + attn(ln(x)), then x + ffn(ln(x))."""

    num_heads: int
    head_dim: int
    ffn_dim: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    low_rank: Any = None  # {"attn/query", ..., "ffn_in", "ffn_out": rank}: factored layers
    layer_norm_epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        # `train` is positional so that nn.remat can hold it static (CharTransformer.remat).
        drop = nn.Dropout(self.dropout_rate, deterministic=not train)
        norm = lambda name: nn.LayerNorm(epsilon=self.layer_norm_epsilon, name=name, dtype=self.dtype)
        h = CausalSelfAttention(self.num_heads, self.head_dim, self.dropout_rate, self.dtype,
                                _sub_ranks(self.low_rank, "attn"), name="attn")(norm("ln_attn")(x), train=train)
        x = x + drop(h)
        h = norm("ln_ffn")(x)
        if self.ffn_dim > 0:
            h = _dense(self.ffn_dim, "ffn_in", self.dtype, self.low_rank)(h)
            h = _dense(x.shape[-1], "ffn_out", self.dtype, self.low_rank)(nn.gelu(h))
            x = x + drop(h)
        return x


class CharTransformer(nn.Module):
    """A causal decoder Transformer over characters (or any token ids).

    Heads and FFN width are lists with one entry per layer, since head
    pruning and architecture search produce non-uniform layers; `embed_dim`
    (ALBERT's E) may differ from the model width, in which case the token
    embedding is factorized as vocab x E followed by an E x width projection
    (Lan et al. 2019). `tie_embeddings` computes the logits with the token
    embedding's transpose and no separate head (GPT-2; Press & Wolf 2017;
    with embed_dim < width, after a width x E projection `head_proj`, so the
    output side is factorized too, as ALBERT's tied output embedding);
    `remat` recomputes each block's activations in the backward pass instead
    of keeping them (jax.checkpoint), for long contexts and large widths.
    `layer_norm_epsilon` is 1e-6 (Flax's default) or GPT-2's 1e-5.
    `layer_drop_rate` is LayerDrop (Fan et al. 2020): in training, each
    block is skipped (made the identity) with that probability, drawn once
    per batch from the dropout stream as fairseq does, so that any subset of
    layers can be removed at inference without fine-tuning (the
    `layer_drop` technique, whose export is the shallower model).
    """

    vocab_size: int
    max_len: int
    width: int
    num_heads: Sequence[int]
    ffn_dims: Sequence[int]
    head_dim: int = 32
    embed_dim: Optional[int] = None
    dropout_rate: float = 0.0
    tie_embeddings: bool = False
    remat: bool = False
    dtype: Any = jnp.float32  # the compute dtype (the precision policy); parameters stay float32
    # {module path: rank} ("block_0/attn/query", "block_1/ffn_out", "head", ...): those dense
    # layers run as LowRankDense factors (a low-rank export).
    low_rank: Any = None
    layer_norm_epsilon: float = 1e-6
    layer_drop_rate: float = 0.0

    def _check_layers(self) -> None:
        if len(self.num_heads) != len(self.ffn_dims):
            raise ValueError(f"num_heads {list(self.num_heads)} and ffn_dims {list(self.ffn_dims)} "
                             f"must have one entry per layer")
        if not 0.0 <= self.layer_drop_rate < 1.0:
            raise ValueError(f"model.layer_drop_rate {self.layer_drop_rate!r} must be in [0, 1): the probability "
                             f"that a block is skipped in a training step (Fan et al. 2020 use 0.2)")
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"model.layer_norm_epsilon {self.layer_norm_epsilon!r} must be > 0 (GPT-2: 1e-5)")

    @nn.compact
    def __call__(self, tokens: jnp.ndarray, *, train: bool = False) -> jnp.ndarray:
        self._check_layers()
        dense_paths = ["head", "embed_proj", "head_proj"] + [
            f"block_{i}/{name}" for i in range(len(self.num_heads))
            for name in ("attn/query", "attn/key", "attn/value", "attn/out", "ffn_in", "ffn_out")]
        _check_low_rank(self.low_rank, dense_paths, "CharTransformer")
        if tokens.shape[-1] > self.max_len:
            raise ValueError(f"sequence length {tokens.shape[-1]} exceeds max_len {self.max_len}")
        embed_dim = self.embed_dim or self.width
        embed = nn.Embed(self.vocab_size, embed_dim, name="embed", dtype=self.dtype)
        x = embed(tokens)
        if embed_dim != self.width:
            x = _dense(self.width, "embed_proj", self.dtype, self.low_rank, use_bias=False)(x)
        positions = self.param("pos_embed", nn.initializers.normal(0.02), (self.max_len, self.width))
        x = x + positions[: tokens.shape[-1]].astype(self.dtype)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        self.sow("intermediates", "embedding", x)
        block = nn.remat(DecoderBlock, static_argnums=(2,)) if self.remat else DecoderBlock
        for i, (heads, ffn) in enumerate(zip(self.num_heads, self.ffn_dims)):
            y = block(heads, self.head_dim, ffn, self.dropout_rate, self.dtype,
                      _sub_ranks(self.low_rank, f"block_{i}"), self.layer_norm_epsilon, name=f"block_{i}")(x, train)
            if train and self.layer_drop_rate:
                # One draw per batch; a skipped block passes x on and gets no gradient this step.
                y = jnp.where(jax.random.bernoulli(self.make_rng("dropout"), 1.0 - self.layer_drop_rate), y, x)
            x = y
            self.sow("intermediates", f"hidden_{i}", x)
        x = nn.LayerNorm(epsilon=self.layer_norm_epsilon, name="ln_final", dtype=self.dtype)(x)
        if self.tie_embeddings:
            if embed_dim != self.width:  # ALBERT's tied, factorized output: width -> E, then the embedding
                x = _dense(embed_dim, "head_proj", self.dtype, self.low_rank, use_bias=False)(x)
            return _logits(embed.attend(x))
        return _logits(_dense(self.vocab_size, "head", self.dtype, self.low_rank)(x))


def _per_layer(value: Any, num_layers: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * num_layers
    value = tuple(int(v) for v in value)
    if len(value) != num_layers:
        raise ValueError(f"model.{name} has {len(value)} entries but model.num_layers is {num_layers}")
    return value


def _char_transformer(num_classes: int, *, num_layers: int, num_heads: Any, ffn_dim: Any,
                      **kwargs: Any) -> nn.Module:
    return CharTransformer(vocab_size=num_classes, num_heads=_per_layer(num_heads, num_layers, "num_heads"),
                           ffn_dims=_per_layer(ffn_dim, num_layers, "ffn_dim"), **kwargs)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
    "lenet5": lambda num_classes, **kw: LeNet5(num_classes=num_classes, **kw),
    "vgg": lambda num_classes, **kw: VGG(num_classes=num_classes, **kw),
    "mobilenet_cnn": lambda num_classes, **kw: MobileNetCNN(num_classes=num_classes, **kw),
    "char_transformer": _char_transformer,
}


def build_model(model_config: Any, num_classes: int, compute: str = "float32") -> nn.Module:
    """Builds the model named by `model_config.name` with the config's other fields as settings.

    `compute` is the precision policy's compute dtype (`compute_dtype`); it is
    not a model setting, so an export's header (its model config) reads back
    as a float32 model whatever dtype trained it.
    """
    settings = dict(model_config)
    name = settings.pop("name", None)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available models: {sorted(MODELS)}")
    if "dtype" in settings:
        raise ValueError("model.dtype is not a model setting: set precision.compute (float32 or bfloat16)")
    if compute_dtype(compute) != jnp.float32:  # a model registered without a dtype field still runs float32
        settings["dtype"] = compute_dtype(compute)
    for key, value in list(settings.items()):
        if hasattr(value, "items"):  # a mapping (low_rank's {path: rank}) as hashable sorted pairs
            settings[key] = tuple(sorted((str(k), v) for k, v in value.items()))
        elif isinstance(value, list):
            settings[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    try:
        return MODELS[name](num_classes, **settings)
    except TypeError as e:
        if "dtype" in settings and "dtype" in str(e):
            raise ValueError(f"model {name!r} has no `dtype` field, so it cannot compute in {compute}: give its "
                             f"module a compute dtype field, or set precision.compute = 'float32'") from e
        raise ValueError(f"model {name!r} does not accept settings {sorted(settings)}: {e}") from e


def apply_model(model: nn.Module, params: Any, *args: Any, model_state: Optional[dict] = None,
                **kwargs: Any) -> Any:
    """model.apply on params that may carry input hooks (`compression.intercept`).

    The hooks' entry is taken out of the params, and each hooked module's
    first positional input goes through its hooks before the module runs,
    via flax.linen.intercept_methods: activation techniques reach the
    unedited model this way. `model_state` holds the collections besides
    params ({"batch_stats": ...} for BatchNorm models); `mutable` (a list of
    collection names, passed through to `model.apply`) returns (output,
    updated collections), e.g. ["batch_stats", "intermediates"] in training.
    """
    return _apply_with_hooks(model, params, args, kwargs, model_state=model_state)


def init_variables(model: nn.Module, key: Any, example: Any) -> tuple[Any, dict]:
    """(params, model_state) of a freshly initialized model; model_state holds STATE_COLLECTIONS only."""
    variables = model.init(key, example)
    return variables["params"], {k: v for k, v in variables.items() if k in STATE_COLLECTIONS}


def _features_last(module: nn.Module, x: Any) -> Any:
    # A module that contracts several trailing axes (attention's output projection, axis
    # (-2, -1)) sees them as one feature axis, so its input's rows match its kernel as a
    # (d_in, d_out) matrix: X^T X is (heads * head_dim) square, not head_dim square.
    axis = getattr(module, "axis", -1)
    if isinstance(axis, (tuple, list)) and len(axis) > 1 and hasattr(x, "shape"):
        return x.reshape(x.shape[:x.ndim - len(axis)] + (-1,))
    return x


def _apply_with_hooks(model, params, args, kwargs, observe=None, replace=None, model_state=None):
    # `observe(module path, input)` sees each module's input after its hooks ran, with the
    # axes a DenseGeneral contracts flattened into one (`_features_last`);
    # `replace(module, input)` may return a module call's output in place of running it (None: run it).
    model_params, hooks = intercept.split_params(params)
    variables = {"params": model_params, **(model_state or {})}
    if not hooks and observe is None and replace is None:
        return model.apply(variables, *args, **kwargs)

    def interceptor(next_fun, call_args, call_kwargs, context):
        if context.method_name == "__call__" and call_args:
            path = tuple(context.module.path)
            site = hooks.get(path)
            if site is not None:
                call_args = (intercept.run_hooks(site, call_args[0]),) + tuple(call_args[1:])
            if observe is not None:
                observe(path, _features_last(context.module, call_args[0]))
            if replace is not None:
                out = replace(context.module, call_args[0])
                if out is not None:
                    return out
        return next_fun(*call_args, **call_kwargs)

    with nn.intercept_methods(interceptor):
        return model.apply(variables, *args, **kwargs)


def capture_module_inputs(model: nn.Module, params: Any, inputs: Sequence[Any],
                          module_paths: Sequence[str], model_state: Optional[dict] = None) -> dict[str, np.ndarray]:
    """{module path: the inputs it received, flattened to (-1, features)}, over the `inputs` batches.

    Runs in eval mode after the params' own input hooks, so a later stage
    calibrates on what it will really see.
    """
    wanted = {tuple(p.split("/")): p for p in module_paths}
    seen: dict[str, list[np.ndarray]] = {p: [] for p in module_paths}

    def observe(path, x):
        if path in wanted:
            seen[wanted[path]].append(np.asarray(x))

    for x in inputs:
        _apply_with_hooks(model, params, (x,), {"train": False}, observe, model_state=model_state)
    missing = sorted(p for p, got in seen.items() if not got)
    if missing:
        raise ValueError(f"modules {missing} were never called with an input; check the paths")
    return {p: np.concatenate([a.reshape((-1,) + a.shape[-1:]) for a in got]) for p, got in seen.items()}


def module_statistics(model: nn.Module, params: Any, module_paths: Sequence[str], kinds: Sequence[str] = ("xtx",),
                      *, inputs: Sequence[Any], model_state: Optional[dict] = None,
                      put: Callable[[Any], Any] = lambda x: x, one_at_a_time: bool = False) -> Any:
    """Calibration statistics (`compression.calibration`) of each named module's input over the batches.

    Returns {module path: {kind: array}}; with `one_at_a_time`, an iterator of
    (path, statistics) that computes one module's statistics per pass over
    the batches, so only one is in memory (a d x d X^T X per layer adds up).
    The moments are computed inside one jitted function per batch from the
    inputs the model really passes each module (after the params' own input
    hooks, in eval mode); `put` places each batch (the driver shards it over
    the mesh's data axis, so XLA reduces the sums across devices). The
    `inputs` kind returns the raw rows, gathered on the host as
    `capture_module_inputs` does.
    """
    from compression import calibration

    kinds = calibration.check_kinds(kinds)
    paths = list(module_paths)
    if one_at_a_time:
        return ((p, module_statistics(model, params, [p], kinds, inputs=inputs, model_state=model_state,
                                      put=put)[p]) for p in paths)
    moments = tuple(k for k in kinds if k in calibration.MOMENTS)
    out: dict[str, dict] = {p: {} for p in paths}
    if moments:
        wanted = {tuple(p.split("/")): p for p in paths}

        def batch_moments(params, model_state, x):
            found: dict[str, dict] = {}

            def observe(path, value):
                if path in wanted:
                    stats = calibration.batch_statistics(value, moments)
                    name = wanted[path]
                    found[name] = calibration.merge(found[name], stats) if name in found else stats

            _apply_with_hooks(model, params, (x,), {"train": False}, observe, model_state=model_state)
            return found

        step = jax.jit(batch_moments)
        totals = None
        for x in inputs:
            got = step(params, model_state or {}, put(x))
            missing = sorted(set(paths) - set(got))
            if missing:
                raise ValueError(f"modules {missing} were never called with an input; check the paths")
            totals = got if totals is None else {p: calibration.merge(totals[p], got[p]) for p in paths}
        for p in paths:
            out[p].update(totals[p])
    if "inputs" in kinds:
        for p, rows in capture_module_inputs(model, params, inputs, paths, model_state).items():
            out[p]["inputs"] = rows
    return out


def apply_model_replacing_dense(model: nn.Module, params: Any, x: Any, dense_fn: Callable[..., Any]) -> Any:
    """The model in eval mode with every nn.Dense call replaced by `dense_fn(x, w_codes, w_scale, bias)`.

    w_codes, w_scale: the Dense kernel quantized symmetrically to int8 per
    output channel (`int8_inference.quantize_symmetric_int8(kernel, axis=-1)`),
    read from the module's own params through flax.linen.intercept_methods;
    bias is None for a Dense without one. Input hooks carried in the params
    run first, as in `apply_model`. Other modules run unchanged.
    """
    from compression import int8_inference

    def replace(module, x):
        if not isinstance(module, nn.Dense):
            return None
        variables = module.variables["params"]
        w_codes, w_scale = int8_inference.quantize_symmetric_int8(variables["kernel"], axis=-1)
        return dense_fn(x, w_codes, w_scale, variables.get("bias"))

    return _apply_with_hooks(model, params, (x,), {"train": False}, replace=replace)


def apply_model_int8(model: nn.Module, params: Any, x: Any) -> Any:
    """The model in eval mode with every nn.Dense run on int8 codes with int32 accumulation.

    Each Dense kernel is quantized symmetrically to int8 per output channel
    (from that Dense's own params, read through flax.linen.intercept_methods)
    and each Dense input per tensor with a dynamic scale max|x| / 127;
    `compression.int8_inference.int8_dense` does the rest (Jacob et al.
    2018). Only nn.Dense is handled: every other module (Conv, DenseGeneral,
    Embed, LayerNorm, ...) and everything between layers runs in float32.
    Input hooks carried in the params run before the quantization, as in
    `apply_model`.
    """
    from compression import int8_inference

    return apply_model_replacing_dense(model, params, x, int8_inference.int8_dense)


def apply_model_dequantized(model: nn.Module, params: Any, x: Any) -> Any:
    """`apply_model_int8`'s reference: the same int8 codes and scales, dequantized and multiplied in float32.

    Only nn.Dense is handled; other modules run in float32, as in `apply_model_int8`.
    """
    from compression import int8_inference

    return apply_model_replacing_dense(model, params, x, int8_inference.dequantized_dense)
