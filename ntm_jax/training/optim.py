"""The optimiser: optax clipping chained with the chosen update rule."""

import optax

from ntm_jax.training.config import ExperimentConfig


def make_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
  """Gradient clipping followed by Adam, Graves' RMSProp or SGD, at the scheduled rate."""
  if config.clip_mode == 'global_norm':
    clip = optax.clip_by_global_norm(config.clip)
  elif config.clip_mode == 'elementwise':
    clip = optax.clip(config.clip)  # the paper: each gradient entry into [-10, 10]
  else:
    clip = optax.identity()
  learning_rate = config.learning_rate
  if config.lr_schedule == 'cosine':
    learning_rate = optax.cosine_decay_schedule(config.learning_rate, config.train_steps,
                                                alpha=0.1)
  if config.optimizer == 'adam':
    update = optax.adam(learning_rate)
  elif config.optimizer == 'rmsprop':
    # Graves (2013), as in the paper: centered, decay 0.95, momentum 0.9, eps 1e-4 inside
    # the square root.
    update = optax.rmsprop(learning_rate, decay=0.95, eps=1e-4, centered=True,
                           momentum=0.9, eps_in_sqrt=True)
  else:
    update = optax.sgd(learning_rate)
  return optax.chain(clip, update)
