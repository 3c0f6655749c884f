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
from typing import NamedTuple

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from scaled_ql import games, types

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
    single_return_token: keep only the first step's return-to-go token (MGDT's released model);
      the later steps' return tokens are masked out.
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
  no token sees the return-to-go tokens of steps after the first (each still sees itself).
  """
  size = config.context_steps * config.tokens_per_step
  position = np.arange(size)
  step, slot = position // config.tokens_per_step, position % config.tokens_per_step
  is_patch = slot < config.num_patches
  mask = position[None, :] <= position[:, None]
  mask |= (step[:, None] == step[None, :]) & is_patch[:, None] & is_patch[None, :]
  if config.single_return_token:
    late_return = (slot == config.num_patches) & (step > 0)
    mask &= ~late_return[None, :] | (position[:, None] == position[None, :])
  return mask


class DecisionTransformer(hk.Module):
  """Token embeddings, the block-causal transformer and the three read-outs."""

  def __init__(self, config: TransformerConfig, name=None):
    super().__init__(name=name)
    self._config = config

  def _embed(self, obs, return_bins, actions, reward_classes):
    """-> tokens float32 [B, T * tokens_per_step, D]."""
    config = self._config
    batch, steps, width = obs.shape[0], config.context_steps, config.width
    frames = jnp.moveaxis(obs, -1, 1).reshape(batch * steps, FRAME_SIZE, FRAME_SIZE, 1)
    patches = hk.Conv2D(
      width, config.patch_size, stride=config.patch_size, padding="VALID", name="patch_embedding"
    )(frames.astype(jnp.float32) / 255.0)  # [B * T, P, P, D]
    patches = patches.reshape(batch, steps, config.num_patches, width)
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
    return tokens + hk.get_parameter("position", tokens.shape[1:], init=init)

  def __call__(self, obs, return_bins, actions, reward_classes, is_training: bool):
    """Args: obs uint8 [B, 84, 84, T]; return_bins, actions (full-set ids), reward_classes
    int32 [B, T]. Returns TransformerOutput."""
    config = self._config
    dropout = config.dropout_rate if is_training else 0.0
    h = self._embed(obs, return_bins, actions, reward_classes)
    mask = jnp.asarray(attention_mask(config))[None, None]  # [1, 1, S, S]
    init = hk.initializers.VarianceScaling(2.0 / config.num_layers)
    for i in range(config.num_layers):
      x = hk.LayerNorm(-1, True, True, name=f"block{i}_ln_attention")(h)
      x = hk.MultiHeadAttention(
        config.num_heads, config.width // config.num_heads, w_init=init, name=f"block{i}_attention"
      )(x, x, x, mask=mask)
      h += _dropout(x, dropout)
      x = hk.LayerNorm(-1, True, True, name=f"block{i}_ln_mlp")(h)
      x = hk.Linear(4 * config.width, w_init=init, name=f"block{i}_mlp_in")(x)
      x = hk.Linear(config.width, w_init=init, name=f"block{i}_mlp_out")(jax.nn.gelu(x))
      h += _dropout(x, dropout)
    h = hk.LayerNorm(-1, True, True, name="ln_final")(h)
    h = h.reshape(h.shape[0], config.context_steps, config.tokens_per_step, config.width)
    # Each read-out is the token before the one it predicts.
    last_patch, return_token, action_token = (config.num_patches + k for k in (-1, 0, 1))
    return TransformerOutput(
      return_logits=hk.Linear(config.num_returns, name="return_head")(h[:, :, last_patch]),
      action_logits=hk.Linear(games.MAX_NUM_ACTIONS, name="action_head")(h[:, :, return_token]),
      reward_logits=hk.Linear(NUM_REWARD_CLASSES, name="reward_head")(h[:, :, action_token]),
    )


def _dropout(x, rate: float):
  return hk.dropout(hk.next_rng_key(), rate, x) if rate > 0 else x


def make_network(config: TransformerConfig) -> hk.Transformed:
  """init(rng, obs, return_bins, actions, reward_classes, is_training) and apply(params, rng,
  ...) -> TransformerOutput (rng may be None when not training)."""

  def forward(obs, return_bins, actions, reward_classes, is_training=False):
    return DecisionTransformer(config, name="decision_transformer")(
      obs, return_bins, actions, reward_classes, is_training
    )

  return hk.transform(forward)
