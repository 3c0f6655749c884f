"""The Scaled QL network: ResNet torso, spatial embedding, feature norm, per-game C51 heads.

    obs uint8 [B, 84, 84, 4] -> /255 -> torso (ResNet with GroupNorm | Nature CNN)
      -> [B, H, W, C] -> learned spatial embedding (or global mean pool) -> [B, C * F]
      -> projection Dense(D) + ReLU -> feature normalization = representation [B, D]
      -> per-game linear head, stacked [G, D, A_max * N], selected by game_id -> logits

This is the only module that imports haiku. Everything is configured by a plain
`NetworkConfig`; `make_network` is the one `hk.transform` site.

Sizes. The paper reports about 31M / 60M / 79M parameters for its ResNet-34 / 50 / 101
configurations with 40 games (DESIGN.md section 4); the appendix details of its spatial
embedding and projection were not retrievable here, so the defaults below are chosen to
land on those totals with standard ResNet widths (64..512 basic, 256..2048 bottleneck):
  * basic-block torsos (resnet18/34, final C=512): F=16 embedding features per channel,
    projection D=256 -> resnet34 ~30M (trunk 21.3M, projection 2.1M, heads 6.6M).
  * bottleneck torsos (resnet50/101, final C=2048): F=32, D=384 -> resnet50 ~59M,
    resnet101 ~78M (trunk 23.5M / 42.5M, projection 25.2M, heads 9.8M).
Head counts use each game's own |A_game| x 51 outputs (what the paper's per-game heads
hold); the stacked implementation also allocates unused slots up to A_max, which
`count_params` reports separately as `heads_allocated`.

`python -m scaled_ql.count_params --gin_file=pretrain_near_optimal.gin` (or `--model=resnet101`)
prints the breakdown for the 40 training games without compiling anything (shapes only).
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from scaled_ql import compute

# Q-value given to action slots a game does not have: never the argmax, exp() == 0 in
# a logsumexp, and finite so that arithmetic on it stays NaN-free.
ILLEGAL_ACTION_VALUE = -1e9

# Per torso: block kind, blocks per stage, stage widths, default embedding features F,
# default projection dim D. Stage widths are the standard ResNet ones (bottleneck blocks
# output 4x the listed width).
_TORSOS = {
  "resnet18": ("basic", (2, 2, 2, 2), (64, 128, 256, 512), 16, 256),
  "resnet34": ("basic", (3, 4, 6, 3), (64, 128, 256, 512), 16, 256),
  "resnet50": ("bottleneck", (3, 4, 6, 3), (64, 128, 256, 512), 32, 384),
  "resnet101": ("bottleneck", (3, 4, 23, 3), (64, 128, 256, 512), 32, 384),
  # A CPU-sized ResNet (the embedded default's network, tests): one basic block per stage.
  "small": ("basic", (1, 1, 1, 1), (16, 32, 64, 64), 8, 128),
  # Mnih et al. (2015): conv 32x8x8/4, 64x4x4/2, 64x3x3/1 (widths are the conv widths).
  "nature_cnn": ("nature", (), (32, 64, 64), 8, 256),
  # The embedded default's behaviour agent: 2x2 average pooling to 42x42, then convs 16 4x4/2,
  # 32 4x4/2, 32 3x3/1. About 4x cheaper than the Nature CNN; measured to learn on uniform-
  # random Assault data in about 4 minutes on 2 cores.
  "tiny": ("pooled_nature", (), (16, 32, 32), 8, 256),
}

# Conv kernels and strides of the Nature-style torsos.
_NATURE_CONVS = {"nature": ((8, 4, 3), (4, 2, 1)), "pooled_nature": ((4, 4, 3), (2, 2, 1))}


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
  """Plain-value network configuration (gin binds its fields; the network never reads gin).

  `None` fields take the torso's default from `_TORSOS`; `resolved()` fills them in.
  """

  torso: str = "resnet101"
  widths: tuple[int, ...] | None = None
  num_groups: int = 32  # GroupNorm groups (Wu & He 2018 default); capped by the width.
  spatial_embedding: bool = True  # False: global mean pooling (the ablation).
  spatial_embedding_features: int | None = None  # F, features per channel.
  projection_dim: int | None = None  # D, size of the representation.
  feature_norm: bool = True  # Normalise the representation (the ablation switches it off).
  # Norm of the normalised representation; None: sqrt(D), i.e. unit RMS per feature, so the
  # fan-in-initialised heads start with O(1) logits and Adam moves them at the usual rate
  # (with norm 1, logits start at O(1/sqrt(D)) and learn about sqrt(D) times slower).
  # 1.0 is plain L2 normalisation. The paper's exact form is unverified.
  feature_norm_scale: float | None = None
  num_atoms: int = 51
  v_min: float = -10.0
  v_max: float = 10.0
  distributional: bool = True  # False: one scalar Q per action (the MSE ablation).

  def resolved(self) -> "NetworkConfig":
    if self.torso not in _TORSOS:
      raise ValueError(f"Unknown torso {self.torso!r}; expected one of {sorted(_TORSOS)}.")
    _, _, widths, features, dim = _TORSOS[self.torso]
    return dataclasses.replace(
      self,
      widths=tuple(self.widths or widths),
      spatial_embedding_features=self.spatial_embedding_features or features,
      projection_dim=self.projection_dim or dim,
    )

  @property
  def atoms_per_action(self) -> int:
    return self.num_atoms if self.distributional else 1


def support(config: NetworkConfig) -> jnp.ndarray:
  """The C51 support `[N]`, evenly spaced on [v_min, v_max]."""
  return jnp.linspace(config.v_min, config.v_max, config.num_atoms, dtype=jnp.float32)


class NetworkOutput(NamedTuple):
  """Network outputs for a batch of B observations and A_max action slots.

  Attributes:
    q_values: [B, A_max] expected Q; slots beyond the game's action count hold
      ILLEGAL_ACTION_VALUE.
    logits: [B, A_max, N] categorical logits over the support (N = 1 holding Q itself
      when the network is not distributional). Illegal slots are not masked here.
    representation: [B, D] the last shared layer (after feature normalization, if on).
    legal_actions: [B, A_max] bool, True for the game's own actions.
  """

  q_values: jnp.ndarray
  logits: jnp.ndarray
  representation: jnp.ndarray
  legal_actions: jnp.ndarray


# ----------------------------------------------------------------------------- torsos


class GroupNorm(hk.Module):
  """GroupNorm (Wu & He 2018) for [B, H, W, C], statistics via per-channel means.

  Same values as hk.GroupNorm (to float32 rounding), computed faster on XLA:CPU:
    * per-group statistics come from per-channel spatial means [B, C], grouped as
      [B, G, C/G], not from reductions over a reshaped [B, H, W, G, C/G] tensor (about
      10x slower);
    * one pass: var = E[y^2] - E[y]^2 (clipped at 0) with y = x - k, k a per-group shift
      (the group's mean at pixel (0, 0), held constant), so that a large mean next to a
      small spread does not cancel (flax's `use_fast_variance` is the unshifted form); the
      output is one fused x * a + b with a, b [B, C] (at mean/sd = 1000 it differs from
      (x - mean) * a by ~4e-4, a few float32 ulps of x * a; that form made the step 37% slower).
      This took the small torso's train step (batch 32, 2 cores) from 38 to 27 ms.
  """

  def __init__(self, channels, num_groups, scale_init=jnp.ones, eps=1e-5, name=None):
    super().__init__(name=name)
    self._num_groups = min(num_groups, channels)
    if channels % self._num_groups:
      raise ValueError(f"GroupNorm: {channels} channels not divisible into {num_groups} groups.")
    self._channels, self._scale_init, self._eps = channels, scale_init, eps

  def __call__(self, x):
    """[B, H, W, C] in any float dtype -> the same dtype; statistics and the affine map in
    float32 (a bfloat16 input is upcast: its mean of squares would lose the variance)."""
    scale = hk.get_parameter("scale", (self._channels,), jnp.float32, init=self._scale_init)
    offset = hk.get_parameter("offset", (self._channels,), jnp.float32, init=jnp.zeros)
    normalize = functools.partial(_group_norm, num_groups=self._num_groups, eps=self._eps)
    if x.dtype != jnp.float32:
      # Recompute the float32 statistics in the backward pass: kept, the upcast input and its
      # square were two float32 copies of each bfloat16 activation (more bytes than the rest of
      # a ResNet's saved activations together).
      normalize = jax.checkpoint(normalize)
    return normalize(x, scale.astype(jnp.float32), offset.astype(jnp.float32))


def _group_norm(x, scale, offset, num_groups: int, eps: float):
  """GroupNorm's computation: x [B, H, W, C], scale and offset float32 [C] -> x's dtype."""
  batch_size, channels = x.shape[0], x.shape[-1]
  x32 = x.astype(jnp.float32)

  def group_mean(per_channel):  # [B, C] -> the mean of each channel's group, [B, C]
    grouped = jnp.mean(per_channel.reshape(batch_size, num_groups, channels // num_groups), axis=-1)
    return jnp.repeat(grouped, channels // num_groups, axis=-1)

  shift = jax.lax.stop_gradient(group_mean(x32[:, 0, 0, :]))[:, None, None, :]  # [B, 1, 1, C]
  shifted = x32 - shift
  shifted_mean = group_mean(jnp.mean(shifted, axis=(1, 2)))  # [B, C]
  var = jnp.maximum(
    group_mean(jnp.mean(jnp.square(shifted), axis=(1, 2))) - jnp.square(shifted_mean), 0.0
  )
  mul = jax.lax.rsqrt(var + eps) * scale  # [B, C]
  bias = offset - (shifted_mean + shift[:, 0, 0, :]) * mul
  return (x32 * mul[:, None, None, :] + bias[:, None, None, :]).astype(x.dtype)


def _max_pool_3_stride2_1d(x, axis):
  """Max over windows of 3 with stride 2 along one axis, SAME padding (-inf)."""
  size = x.shape[axis]
  out_size = -(-size // 2)
  pad = max(2 * out_size + 1 - size, 0)
  pads = [(0, 0)] * x.ndim
  pads[axis] = (pad // 2, pad - pad // 2)
  x = jnp.pad(x, pads, constant_values=-jnp.inf)

  def window(offset):  # x[..., offset::2, ...], out_size long.
    start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
    start[axis], limit[axis], strides[axis] = offset, offset + 2 * out_size - 1, 2
    return jax.lax.slice(x, start, limit, strides)

  return jnp.maximum(jnp.maximum(window(0), window(1)), window(2))


def max_pool_3x3_stride2(x):
  """3x3 max pooling, stride 2, SAME padding, over [B, H, W, C] as two separable 1-D pools.

  Same values as hk.max_pool. Its gradient is elementwise selects instead of XLA's
  SelectAndScatter (5-7x slower on CPU), and the separable form needs 4 maxima instead
  of 8: the backward pass is about 2x cheaper than that of the max of 9 strided slices
  (the small torso's train step: 43 -> 38 ms).
  """
  return _max_pool_3_stride2_1d(_max_pool_3_stride2_1d(x, 1), 2)


class _Block(hk.Module):
  """Residual block (He et al. 2016, post-activation), basic or bottleneck, with GroupNorm."""

  def __init__(self, width, stride, bottleneck, num_groups, project, name=None):
    super().__init__(name=name)
    self._width, self._stride, self._bottleneck = width, stride, bottleneck
    self._num_groups, self._project = num_groups, project

  def __call__(self, x):
    out_channels = 4 * self._width if self._bottleneck else self._width
    shortcut = x
    if self._project:
      shortcut = hk.Conv2D(out_channels, 1, self._stride, with_bias=False, name="proj_conv")(x)
      shortcut = GroupNorm(out_channels, self._num_groups, name="proj_norm")(shortcut)
    if self._bottleneck:
      convs = [(self._width, 1, 1), (self._width, 3, self._stride), (out_channels, 1, 1)]
    else:
      convs = [(self._width, 3, self._stride), (out_channels, 3, 1)]
    for i, (channels, kernel, stride) in enumerate(convs):
      x = hk.Conv2D(channels, kernel, stride, with_bias=False, name=f"conv_{i}")(x)
      # Zero-init the last norm's scale so every block starts as the identity (Goyal et al.).
      scale_init = jnp.zeros if i == len(convs) - 1 else jnp.ones
      x = GroupNorm(channels, self._num_groups, scale_init, name=f"norm_{i}")(x)
      if i < len(convs) - 1:
        x = jax.nn.relu(x)
    return jax.nn.relu(x + shortcut)


class ResNetTorso(hk.Module):
  """ResNet-18/34/50/101 with GroupNorm, no pooling head: [B,84,84,4] -> [B,3,3,C].

  With `remat`, each residual block is recomputed in the backward pass (its input is kept).
  """

  def __init__(self, stage_sizes, widths, bottleneck, num_groups, remat=False, name=None):
    super().__init__(name=name)
    self._stage_sizes, self._widths = stage_sizes, widths
    self._bottleneck, self._num_groups, self._remat = bottleneck, num_groups, remat

  def __call__(self, x):
    x = hk.Conv2D(self._widths[0], 7, 2, with_bias=False, name="stem_conv")(x)
    x = jax.nn.relu(GroupNorm(self._widths[0], self._num_groups, name="stem_norm")(x))
    x = max_pool_3x3_stride2(x)
    in_channels = self._widths[0]
    for stage, (num_blocks, width) in enumerate(zip(self._stage_sizes, self._widths, strict=True)):
      out_channels = 4 * width if self._bottleneck else width
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        project = block == 0 and (stride != 1 or in_channels != out_channels)
        residual_block = _Block(
          width, stride, self._bottleneck, self._num_groups, project, f"stage{stage}_{block}"
        )
        x = compute.maybe_remat(residual_block, self._remat)(x)
        in_channels = out_channels
    return x


class NatureTorso(hk.Module):
  """The DQN torso (Mnih et al. 2015): [B,84,84,4] -> [B,7,7,64]; optionally pooled first.

  With `pool=2` (the "tiny" torso) the input is 2x2 average-pooled to [B,42,42,4] first.
  """

  def __init__(self, widths, kernels=(8, 4, 3), strides=(4, 2, 1), pool=1, name=None):
    super().__init__(name=name)
    self._widths, self._kernels, self._strides, self._pool = widths, kernels, strides, pool

  def __call__(self, x):
    if self._pool > 1:
      x = hk.avg_pool(x, self._pool, self._pool, padding="VALID")
    for i, (channels, kernel, stride) in enumerate(
      zip(self._widths, self._kernels, self._strides, strict=True)
    ):
      x = jax.nn.relu(hk.Conv2D(channels, kernel, stride, padding="VALID", name=f"conv_{i}")(x))
    return x


# ----------------------------------------------------------------------------- neck and heads


class SpatialEmbedding(hk.Module):
  """Learned spatial embedding: out[b, c, f] = sum_hw x[b, h, w, c] K[h, w, c, f].

  Replaces global pooling so that where a feature fires is kept (F weightings per channel).
  """

  def __init__(self, num_features, name=None):
    super().__init__(name=name)
    self._num_features = num_features

  def __call__(self, x):
    _, height, width, channels = x.shape
    kernel = hk.get_parameter(
      "kernel",
      (height, width, channels, self._num_features),
      init=hk.initializers.TruncatedNormal(1.0 / np.sqrt(height * width)),
    )
    return jnp.einsum("bhwc,hwcf->bcf", x, kernel).reshape(x.shape[0], -1)


class MultiGameHead(hk.Module):
  """One linear head per game, stacked as [G, D, K] and selected by game_id.

  The selection is a single matmul of the one-hot-expanded representation [B, G * D]
  with the flattened heads [G * D, K]: no Python loop over games, no per-example
  weight gather (which would materialise [B, D, K]).
  """

  def __init__(self, num_games, output_size, name=None):
    super().__init__(name=name)
    self._num_games, self._output_size = num_games, output_size

  def __call__(self, representation, game_id):
    batch_size, dim = representation.shape
    w = hk.get_parameter(
      "w",
      (self._num_games, dim, self._output_size),
      init=hk.initializers.TruncatedNormal(1.0 / np.sqrt(dim)),
    )
    b = hk.get_parameter("b", (self._num_games, self._output_size), init=jnp.zeros)
    one_hot = jax.nn.one_hot(game_id, self._num_games, dtype=representation.dtype)  # [B, G]
    expanded = (one_hot[:, :, None] * representation[:, None, :]).reshape(batch_size, -1)
    return expanded @ w.reshape(-1, self._output_size) + one_hot @ b


class ScaledQLNetwork(hk.Module):
  """Torso, spatial embedding, projection, feature norm and per-game heads.

  The torso, spatial embedding and projection compute in `compute.dtype`; the feature norm,
  the heads and everything after them in float32 (see `scaled_ql.compute`).
  """

  def __init__(
    self,
    config: NetworkConfig,
    num_actions: Sequence[int],
    compute_config: compute.ComputeConfig = compute.FLOAT32,
    name=None,
  ):
    super().__init__(name=name)
    self._config = config.resolved()
    self._num_actions = tuple(int(a) for a in num_actions)
    self._compute = compute_config

  def __call__(self, obs, game_id) -> NetworkOutput:
    config, num_atoms = self._config, self._config.atoms_per_action
    num_games, max_actions = len(self._num_actions), max(self._num_actions)
    kind, stage_sizes, _, _, _ = _TORSOS[config.torso]
    with compute.params_in(self._compute.dtype):
      x = obs.astype(self._compute.dtype) / 255.0
      if kind in _NATURE_CONVS:
        kernels, strides = _NATURE_CONVS[kind]
        pool = 2 if kind == "pooled_nature" else 1
        x = NatureTorso(config.widths, kernels, strides, pool, name="torso")(x)
      else:
        torso = ResNetTorso(stage_sizes, config.widths, kind == "bottleneck", config.num_groups,
                            self._compute.remat, name="torso")  # fmt: skip
        x = torso(x)
      if config.spatial_embedding:
        x = SpatialEmbedding(config.spatial_embedding_features, name="spatial_embedding")(x)
      else:
        x = jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)
      x = jax.nn.relu(hk.Linear(config.projection_dim, name="projection")(x))
    x = x.astype(jnp.float32)
    if config.feature_norm:
      scale = config.feature_norm_scale or np.sqrt(config.projection_dim)
      x = scale * x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + 1e-12)
    representation = x

    logits = MultiGameHead(num_games, max_actions * num_atoms, name="heads")(x, game_id)
    logits = logits.reshape(-1, max_actions, num_atoms)
    legal_table = np.arange(max_actions)[None, :] < np.asarray(self._num_actions)[:, None]
    legal_actions = jnp.asarray(legal_table)[game_id]  # [B, A_max]
    if config.distributional:
      q_values = jnp.sum(jax.nn.softmax(logits, axis=-1) * support(config), axis=-1)
    else:
      q_values = logits[..., 0]
    q_values = jnp.where(legal_actions, q_values, ILLEGAL_ACTION_VALUE)
    return NetworkOutput(q_values, logits, representation, legal_actions)


def make_network(
  config: NetworkConfig,
  num_actions: Sequence[int],
  compute_config: compute.ComputeConfig = compute.FLOAT32,
) -> hk.Transformed:
  """Builds the network; apply(params, obs, game_id) -> NetworkOutput (no rng).

  Args:
    config: the network configuration.
    num_actions: `num_actions[g]` is the minimal action-set size of game g.
    compute_config: precision and rematerialisation (the parameters do not depend on them).

  Returns:
    A haiku Transformed with init(rng, obs uint8 [B,84,84,4], game_id int32 [B]).
  """

  def forward(obs, game_id):
    return ScaledQLNetwork(config, num_actions, compute_config, name="scaled_ql")(obs, game_id)

  return hk.without_apply_rng(hk.transform(forward))


# ----------------------------------------------------------------------------- parameter counts

_PARAM_GROUPS = ("torso", "spatial_embedding", "projection", "heads")


def count_params(config: NetworkConfig, num_actions: Sequence[int]) -> dict[str, int]:
  """Parameter counts by part, from shapes only (`jax.eval_shape`: nothing is compiled).

  Args:
    config: the network configuration.
    num_actions: minimal action-set size per game.

  Returns:
    {"torso", "spatial_embedding", "projection", "heads", "total"} where heads and total
    count each game's own |A_game| x N outputs, plus "heads_allocated" and
    "total_allocated" including the stacked heads' unused slots up to A_max.
  """
  network = make_network(config, num_actions)
  obs = jax.ShapeDtypeStruct((1, 84, 84, 4), jnp.uint8)
  game_id = jax.ShapeDtypeStruct((1,), jnp.int32)
  shapes = jax.eval_shape(network.init, jax.random.PRNGKey(0), obs, game_id)
  counts = dict.fromkeys(_PARAM_GROUPS, 0)
  for module_name, module_params in shapes.items():
    group = next(g for g in _PARAM_GROUPS if g in module_name.split("/"))
    counts[group] += sum(int(np.prod(p.shape)) for p in module_params.values())
  counts["heads_allocated"] = counts["heads"]
  head_size = config.atoms_per_action * (config.resolved().projection_dim + 1)  # w and b
  counts["heads"] = sum(int(a) * head_size for a in num_actions)
  shared = counts["torso"] + counts["spatial_embedding"] + counts["projection"]
  counts["total"] = shared + counts["heads"]
  counts["total_allocated"] = shared + counts["heads_allocated"]
  return counts
