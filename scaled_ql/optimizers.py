"""The optimizers: Adam (paper appendix B.3: learning rate 2e-4) with optional clipping and
warm-up; LAMB with warm-up for the Decision Transformer (MGDT)."""

import optax

# Adam epsilon of dopamine's JAX C51/Rainbow agents (0.01 / 32); the paper does not state
# its own (unverified), so this is the value its C51 lineage used.
DOPAMINE_ADAM_EPS = 0.0003125


def _warmup_schedule(learning_rate: float, warmup_steps: int):
  """The peak learning rate, reached linearly from 0 over `warmup_steps` (0: constant)."""
  if learning_rate <= 0:
    raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
  if warmup_steps > 0:
    return optax.linear_schedule(0.0, learning_rate, transition_steps=warmup_steps)
  return learning_rate


def make_optimizer(
  learning_rate: float = 2e-4,
  max_grad_norm: float | None = None,
  adam_eps: float = DOPAMINE_ADAM_EPS,
  adam_b1: float = 0.9,
  adam_b2: float = 0.999,
  warmup_steps: int = 0,
  weight_decay: float = 0.0,
) -> optax.GradientTransformation:
  """Builds Adam (AdamW when weight_decay > 0) with optional global-norm clipping.

  Args:
    learning_rate: peak learning rate (2e-4 pretraining; 1e-4 offline fine-tuning).
    max_grad_norm: clip gradients to this global norm first; None disables clipping.
    adam_eps: Adam's epsilon.
    adam_b1: Adam's first-moment decay.
    adam_b2: Adam's second-moment decay.
    warmup_steps: linear warm-up from 0 over this many gradient steps (0: none).
    weight_decay: decoupled weight decay (0: plain Adam).

  Returns:
    The optax gradient transformation.
  """
  schedule = _warmup_schedule(learning_rate, warmup_steps)
  if weight_decay:
    adam = optax.adamw(schedule, b1=adam_b1, b2=adam_b2, eps=adam_eps, weight_decay=weight_decay)
  else:
    adam = optax.adam(schedule, b1=adam_b1, b2=adam_b2, eps=adam_eps)
  if max_grad_norm is None:
    return adam
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), adam)


def make_lamb(
  learning_rate: float = 3e-4,
  warmup_steps: int = 4_000,
  weight_decay: float = 1e-4,
  max_grad_norm: float | None = 1.0,
) -> optax.GradientTransformation:
  """LAMB with a linear warm-up, as MGDT trained its Decision Transformers.

  MGDT reports LAMB, learning rate 3e-4 and 4k warm-up steps (DESIGN.md section 4); its weight
  decay and gradient clipping are not stated in what could be read here (unverified defaults).

  Args:
    learning_rate: peak learning rate.
    warmup_steps: linear warm-up from 0 over this many gradient steps (0: none).
    weight_decay: LAMB's decoupled weight decay.
    max_grad_norm: clip gradients to this global norm first; None disables clipping.
  """
  schedule = _warmup_schedule(learning_rate, warmup_steps)
  lamb = optax.lamb(schedule, weight_decay=weight_decay)
  return (
    lamb if max_grad_norm is None else optax.chain(optax.clip_by_global_norm(max_grad_norm), lamb)
  )
