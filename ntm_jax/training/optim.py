"""The optimiser: optax clipping chained with the chosen update rule."""

import jax
import jax.numpy as jnp
import optax

from ntm_jax.training.config import ExperimentConfig
from ntm_jax.training.config import OptimizerConfig  # noqa: F401 - re-exported


def make_optimizer(
    config: OptimizerConfig | ExperimentConfig,
) -> optax.GradientTransformation:
  """Gradient clipping followed by Adam, Graves' RMSProp or SGD, at the scheduled rate.

  `config` is an OptimizerConfig, or an ExperimentConfig, whose `optimiser` is taken.
  """
  if isinstance(config, ExperimentConfig):
    config = config.optimiser
  if config.clip_mode == 'global_norm':
    clip = optax.clip_by_global_norm(config.clip)
  elif config.clip_mode == 'elementwise':
    clip = optax.clip(config.clip)  # the paper: each gradient entry into [-10, 10]
  else:
    clip = optax.identity()
  learning_rate = config.learning_rate
  if config.lr_schedule == 'cosine':
    learning_rate = optax.cosine_decay_schedule(
        config.learning_rate, config.train_steps, alpha=0.1
    )
  if config.name == 'adam':
    update = optax.adam(learning_rate)
  elif config.name == 'rmsprop':
    # Graves (2013), as in the paper: centered, decay 0.95, momentum 0.9, eps 1e-4 inside
    # the square root.
    update = optax.rmsprop(
        learning_rate, decay=0.95, eps=1e-4, centered=True, momentum=0.9, eps_in_sqrt=True
    )
  else:
    update = optax.sgd(learning_rate)
  optimizer = optax.chain(clip, update)
  if config.skip_grad_norm:
    optimizer = skip_large_gradients(optimizer, config.skip_grad_norm)
  return optimizer


def skip_large_gradients(
    inner: optax.GradientTransformation, max_norm: float
) -> optax.GradientTransformation:
  """`inner`, except that a gradient of global norm above `max_norm` (or not finite)
  gives a zero update and leaves `inner`'s state as it was.

  Stateless, so the optimiser's state has the same structure with the guard as without:
  a checkpoint saved without it restores with it. (optax.MultiSteps with
  `should_skip_update_fn` does the same but wraps the state in its own.)
  """

  def update(grads, state, params=None):
    keep = optax.global_norm(grads) <= max_norm  # False for NaN and inf too
    updates, new_state = inner.update(grads, state, params)
    # Selecting, not multiplying by 0: a NaN in the rejected branch must not leak.
    updates = jax.tree.map(lambda u: jnp.where(keep, u, jnp.zeros_like(u)), updates)
    new_state = jax.tree.map(lambda new, old: jnp.where(keep, new, old), new_state, state)
    return updates, new_state

  return optax.GradientTransformation(inner.init, update)
