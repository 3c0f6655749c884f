"""The Multi-Game Decision Transformer's network (Lee et al. 2022), in haiku.

    obs uint8 [B, 84, 84, T] -> T frames -> /255 -> 36 patches of 14x14 per frame, each a
      linear map to width D (a conv with kernel = stride = patch) + a learned patch position
    per step t the tokens [36 patches, return-to-go, action, reward] (each an embedding of
      its class), all 156 tokens + a learned position embedding
    -> pre-LayerNorm GPT blocks with a block-causal mask (a token sees the tokens before it;
      the patches of one frame also see each other) -> final LayerNorm
    -> return logits read at each step's last patch token, action logits at its
      return-to-go token, reward logits at its action token (each predicts the next token)

The layout follows MGDT's released evaluation notebook (google-research `multi_game_dt`): the
token order, the mask, the read-out positions, key size 64 per head in its configurations,
the GPT-2 initialisation scale 2 / num_layers, and `single_return_token` (its released model
keeps only the first step's return-to-go token). Like `networks.py` for the Q-network, this
is the DT's only haiku code; `make_network` is its one `hk.transform` site.
"""

import dataclasses
import functools
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from scaled_ql import compute, games, types

FRAME_SIZE = types.OBSERVATION_SHAPE[0]  # 84
NUM_REWARD_CLASSES = 4  # 0 none, 1 positive, 2 terminal, 3 negative (MGDT)


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """The DT's shape (gin: `transformer.TransformerConfig`; sizes in gin/models/dt_*.gin).

  Attributes:
    num_layers: transformer blocks.
    width: token width D.
    num_heads: attention heads (D / num_heads per head).
    patch_size: side of the square patches a frame is cut into (must divide 84).
    context_steps: steps per sequence: the observation's 4 frames are its 4 steps.
    return_range: (low, high) clipped-reward returns-to-go; one class per integer, values
      outside are clipped (MGDT: -20..100).
    dropout_rate: dropout after attention and MLP while training.
    single_return_token: keep only the first step's return-to-go token (MGDT's released model):
      the later steps' return tokens are zeroed before the first block (their position
      embedding included) and no token attends to them, themselves included, so nothing
      downstream depends on the later returns.
  """

  num_layers: int = 10
  width: int = 1280
  num_heads: int = 20
  patch_size: int = 14
  context_steps: int = 4
  return_range: tuple[int, int] = (-20, 100)
  dropout_rate: float = 0.1
  single_return_token: bool = True

  def __post_init__(self):
    if self.patch_size < 1 or FRAME_SIZE % self.patch_size:
      fits = [p for p in range(1, FRAME_SIZE + 1) if FRAME_SIZE % p == 0]
      raise ValueError(
        f"TransformerConfig.patch_size={self.patch_size} does not cut the {FRAME_SIZE}x"
        f"{FRAME_SIZE} frame into whole patches; use one of {fits}."
      )
    if self.context_steps != types.OBSERVATION_SHAPE[-1]:
      raise ValueError(
        f"TransformerConfig.context_steps={self.context_steps} does not fit the observation: "
        f"its {types.OBSERVATION_SHAPE[-1]} frames are the context's steps; use "
        f"{types.OBSERVATION_SHAPE[-1]}."
      )
    if self.num_layers < 1 or self.num_heads < 1:
      raise ValueError(
        f"TransformerConfig needs num_layers >= 1 and num_heads >= 1, got {self.num_layers} "
        f"and {self.num_heads}."
      )
    if self.width % self.num_heads:
      raise ValueError(
        f"TransformerConfig.width={self.width} must divide by num_heads={self.num_heads}."
      )
    low, high = self.return_range
    if not low < high:
      raise ValueError(f"TransformerConfig.return_range={self.return_range}: need low < high.")

  @property
  def num_patches(self) -> int:
    return (FRAME_SIZE // self.patch_size) ** 2

  @property
  def tokens_per_step(self) -> int:
    return self.num_patches + 3

  @property
  def num_returns(self) -> int:
    return self.return_range[1] - self.return_range[0] + 1


class TransformerOutput(NamedTuple):
  """Per step logits: return [B, T, R], action [B, T, 18] (full action set), reward [B, T, 4]."""

  return_logits: jnp.ndarray
  action_logits: jnp.ndarray
  reward_logits: jnp.ndarray


def attention_mask(config: TransformerConfig) -> np.ndarray:
  """bool [S, S], S = T * tokens_per_step: query i may attend to key j.

  Causal, except that the patches of one frame see each other; with `single_return_token`
  no token sees the return-to-go tokens of steps after the first, not even themselves (the
  notebook's padding mask hides a key from every query).
  """
  size = config.context_steps * config.tokens_per_step
  position = np.arange(size)
  step, slot = position // config.tokens_per_step, position % config.tokens_per_step
  is_patch = slot < config.num_patches
  mask = position[None, :] <= position[:, None]
  mask |= (step[:, None] == step[None, :]) & is_patch[:, None] & is_patch[None, :]
  if config.single_return_token:
    mask &= ~late_returns(config)[None, :]
  return mask


def late_returns(config: TransformerConfig) -> np.ndarray:
  """bool [S]: the return-to-go tokens that `single_return_token` removes (steps 1..T-1)."""
  position = np.arange(config.context_steps * config.tokens_per_step)
  step, slot = position // config.tokens_per_step, position % config.tokens_per_step
  return (slot == config.num_patches) & (step > 0) & config.single_return_token


class PatchEmbedding(hk.Module):
  """uint8 [B, 84, 84, T] -> float32 [B, T, N, D]: each frame /255 cut into N square patches,
  each mapped linearly to width D.

  The same map and parameters (w [p, p, 1, D], b [D]) as `hk.Conv2D` with kernel = stride =
  patch, written as one matmul of the flattened patches. With `SelfAttention`, the network at
  the CPU shape (D = 64, batch 32) ran 4% faster with its gradients (56.3 vs 58.4 ms; forward
  9.5 vs 10.7 ms) than with haiku's Conv2D and MultiHeadAttention.
  """

  def __init__(self, width: int, patch_size: int, name=None):
    super().__init__(name=name)
    self._width, self._patch = width, patch_size

  def __call__(self, obs):
    batch, steps, p = obs.shape[0], obs.shape[-1], self._patch
    side = FRAME_SIZE // p
    w = hk.get_parameter(
      "w",
      (p, p, 1, self._width),
      init=hk.initializers.VarianceScaling(1.0, "fan_in", "truncated_normal"),
    )
    b = hk.get_parameter("b", (self._width,), init=jnp.zeros)
    # [B, (side, p), (side, p), T] -> [B, T, side, side, p, p]: a patch's pixels in w's order.
    patches = obs.reshape(batch, side, p, side, p, steps).transpose(0, 5, 1, 3, 2, 4)
    patches = patches.reshape(batch, steps, side * side, p * p).astype(jnp.float32) / 255.0
    return patches @ w.reshape(p * p, self._width) + b  # [B, T, N, D]


class SelfAttention(hk.Module):
  """Multi-head self-attention: the parameters and the computation of `hk.MultiHeadAttention`
  (query, key, value and linear, each w [D, D] and b [D]) in fewer ops: the three input
  projections as one [D, 3D] matmul and the heads next to the batch axis (see
  `PatchEmbedding` for what the two gain on CPU).
  """

  def __init__(self, num_heads: int, w_init, name=None):
    super().__init__(name=name)
    self._num_heads, self._w_init = num_heads, w_init

  def __call__(self, x, mask, queries: np.ndarray | None = None):
    """x float32 [B, S, D], mask bool [S, S] (query i may see key j) -> [B, Q, D]: the
    outputs at the positions `queries` (int [Q], default all S)."""
    batch, size, width = x.shape
    heads = self._num_heads

    def linear(name: str):  # (w [D, D], b [D]), named as hk.MultiHeadAttention names them
      with hk.name_scope(name):
        w = hk.get_parameter("w", (width, width), init=self._w_init)
        return w, hk.get_parameter("b", (width,), init=jnp.zeros)

    projections = [linear(name) for name in ("query", "key", "value")]
    w = jnp.concatenate([w for w, _ in projections], axis=1)  # [D, 3D]
    b = jnp.concatenate([b for _, b in projections])
    qkv = (x @ w + b).reshape(batch, size, 3 * heads, width // heads)
    q, k, v = jnp.split(jnp.swapaxes(qkv, 1, 2), 3, axis=1)  # each [B, H, S, D / H]
    if queries is not None:
      q, mask = q[:, :, queries], mask[queries]  # [B, H, Q, D / H], [Q, S]
    q = q / np.sqrt(width // heads).astype(x.dtype)  # Less work than scaling the logits.
    logits = (q @ jnp.swapaxes(k, 2, 3)).astype(jnp.float32)  # [B, H, Q, S]: softmax in float32
    weights = jax.nn.softmax(jnp.where(mask, logits, -1e30), axis=-1).astype(x.dtype)
    out = jnp.swapaxes(weights @ v, 1, 2).reshape(batch, q.shape[2], width)  # [B, Q, D]
    w_out, b_out = linear("linear")
    return out @ w_out + b_out


class DecisionTransformer(hk.Module):
  """Token embeddings, the block-causal transformer and the three read-outs.

  The residual stream, its LayerNorms and the read-outs are float32; each block's attention
  and MLP compute in `compute_config.dtype` (see `scaled_ql.compute`), and with
  `compute_config.remat` each block is recomputed in the backward pass.
  """

  def __init__(
    self,
    config: TransformerConfig,
    compute_config: compute.ComputeConfig = compute.FLOAT32,
    name=None,
  ):
    super().__init__(name=name)
    self._config, self._compute = config, compute_config

  def _embed(self, obs, return_bins, actions, reward_classes):
    """-> tokens float32 [B, T * tokens_per_step, D]."""
    config = self._config
    batch, steps, width = obs.shape[0], config.context_steps, config.width
    patches = PatchEmbedding(width, config.patch_size, name="patch_embedding")(obs)
    init = hk.initializers.TruncatedNormal(0.02)
    patches += hk.get_parameter("patch_position", (config.num_patches, width), init=init)
    embed = {
      name: hk.Embed(size, width, w_init=init, name=f"{name}_embedding")
      for name, size in (("return", config.num_returns), ("action", games.MAX_NUM_ACTIONS),
                         ("reward", NUM_REWARD_CLASSES))
    }  # fmt: skip
    per_step = [
      embed["return"](return_bins),
      embed["action"](actions),
      embed["reward"](reward_classes),
    ]  # fmt: skip  each [B, T, D]
    tokens = jnp.concatenate([patches, *(x[:, :, None] for x in per_step)], axis=2)
    tokens = tokens.reshape(batch, steps * config.tokens_per_step, width)
    tokens += hk.get_parameter("position", tokens.shape[1:], init=init)
    # The removed return tokens carry nothing, not even their position (as in the notebook).
    return jnp.where(late_returns(config)[:, None], 0.0, tokens)

  def __call__(self, obs, return_bins, actions, reward_classes, is_training: bool):
    """Args: obs uint8 [B, 84, 84, T]; return_bins, actions (full-set ids), reward_classes
    int32 [B, T]. Returns TransformerOutput."""
    config = self._config
    dropout = config.dropout_rate if is_training else 0.0
    h = self._embed(obs, return_bins, actions, reward_classes)
    mask = jnp.asarray(attention_mask(config))  # [S, S]
    # Each read-out is the token before the one it predicts: per step the last patch (return),
    # the return (action) and the action (reward). The last block computes only these 3T
    # tokens, as nothing reads the others' outputs: at the CPU shape (2 layers, D = 64, batch
    # 32) the network with its gradients took 36.4 instead of 54.9 ms, the same outputs.
    read_outs = np.add.outer(
      np.arange(config.context_steps) * config.tokens_per_step,
      config.num_patches + np.arange(-1, 2),
    ).ravel()  # [3T] positions, by step then read-out
    for i in range(config.num_layers):
      queries = read_outs if i == config.num_layers - 1 else None
      block = functools.partial(self._block, i, mask=mask, queries=queries, dropout=dropout)
      h = compute.maybe_remat(block, self._compute.remat)(h)
    h = hk.LayerNorm(-1, True, True, name="ln_final")(h)
    h = h.reshape(h.shape[0], config.context_steps, 3, config.width)  # [B, T, 3, D]
    return TransformerOutput(
      return_logits=hk.Linear(config.num_returns, name="return_head")(h[:, :, 0]),
      action_logits=hk.Linear(games.MAX_NUM_ACTIONS, name="action_head")(h[:, :, 1]),
      reward_logits=hk.Linear(NUM_REWARD_CLASSES, name="reward_head")(h[:, :, 2]),
    )

  def _block(self, i: int, h, mask, queries, dropout: float):
    """Block i: float32 h [B, S, D] -> [B, S, D] (the last block: [B, Q, D], only `queries`)."""
    config, dtype = self._config, self._compute.dtype
    init = hk.initializers.VarianceScaling(2.0 / config.num_layers)
    x = hk.LayerNorm(-1, True, True, name=f"block{i}_ln_attention")(h)
    with compute.params_in(dtype):
      x = SelfAttention(config.num_heads, init, name=f"block{i}_attention")(
        x.astype(dtype), mask, queries
      )
    if queries is not None:
      h = h[:, queries]  # [B, 3T, D]
    h += _dropout(x, dropout)
    x = hk.LayerNorm(-1, True, True, name=f"block{i}_ln_mlp")(h)
    with compute.params_in(dtype):
      x = hk.Linear(4 * config.width, w_init=init, name=f"block{i}_mlp_in")(x.astype(dtype))
      x = hk.Linear(config.width, w_init=init, name=f"block{i}_mlp_out")(jax.nn.gelu(x))
    return h + _dropout(x, dropout)


def _dropout(x, rate: float):
  return hk.dropout(hk.next_rng_key(), rate, x) if rate > 0 else x


def make_network(
  config: TransformerConfig, compute_config: compute.ComputeConfig = compute.FLOAT32
) -> hk.Transformed:
  """init(rng, obs, return_bins, actions, reward_classes, is_training) and apply(params, rng,
  ...) -> TransformerOutput (rng may be None when not training). `compute_config`: precision
  and rematerialisation (the parameters do not depend on them)."""

  def forward(obs, return_bins, actions, reward_classes, is_training=False):
    return DecisionTransformer(config, compute_config, name="decision_transformer")(
      obs, return_bins, actions, reward_classes, is_training
    )

  return hk.transform(forward)
