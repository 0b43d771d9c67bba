"""Whether a run fits its device: an estimate of its memory, checked before any allocation.

An NTM's size is dominated by its memory matrix, N x M per sequence and time step held
for the backward pass. Sizes far beyond the device would otherwise fail deep inside XLA
(RESOURCE_EXHAUSTED) after minutes of compiling; this says so in one line first.
"""

import os

import flax.linen as nn
import jax
import numpy as np

from ntm_jax.tasks.base import Task
from ntm_jax.training.config import ExperimentConfig

# Memory-sized arrays an NTM time step keeps for its backward pass (the memory itself,
# the erase and add products, the similarities' normalised rows, their gradients): an
# upper estimate, so that only sizes well beyond the device are refused.
MEMORY_COPIES_PER_STEP = 6
# Parameters, their gradients and two optimiser moments (Adam, RMSProp), and an average.
PARAMETER_COPIES = 5


class DoesNotFitError(ValueError):
  """The run's estimated memory exceeds the device's."""


def estimate_bytes(
    config: ExperimentConfig, task: Task, model: nn.Module
) -> tuple[int, int]:
  """The estimated peak bytes of the training step and of an evaluation (a batch of eval
  sequences: nothing kept for a backward pass), over all of a run's members."""
  sample = jax.eval_shape(lambda: task.sample_train(jax.random.key(0), 1))
  steps = sample.inputs.shape[1]
  params = jax.eval_shape(
      lambda inputs: model.init(jax.random.key(0), inputs), sample.inputs
  )
  parameter_bytes = sum(
      int(np.prod(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(params)
  )
  training = evaluation = 0
  if config.model == 'ntm':
    memory = config.memory_size * config.word_size * 4
    if config.remat_chunk == 0:
      kept = steps * MEMORY_COPIES_PER_STEP
    else:  # the saved carries plus one recomputed chunk
      chunk = config.remat_chunk
      kept = -(-steps // chunk) + chunk * MEMORY_COPIES_PER_STEP
    training = memory * kept * config.batch_size
    evaluation = (
        memory
        * MEMORY_COPIES_PER_STEP
        * max(config.eval_batch_size, config.difficulty_batch_size)
    )
  members = max(1, len(config.seeds))
  return (
      members * (PARAMETER_COPIES * parameter_bytes + training),
      members * (parameter_bytes + evaluation),
  )


def device_bytes(device: jax.Device) -> int | None:
  """What the device can hold: an accelerator's allocator limit, or the host's memory."""
  stats = device.memory_stats() if device.platform != 'cpu' else None
  if stats and 'bytes_limit' in stats:
    return int(stats['bytes_limit'])
  try:
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError, AttributeError):  # not POSIX
    return None


def check_fits(
    config: ExperimentConfig,
    task: Task,
    model: nn.Module,
    device: jax.Device | None = None,
) -> None:
  """Raises DoesNotFitError, naming the flags, if the run cannot fit on `device`."""
  device = device or jax.devices()[0]
  available = device_bytes(device)
  training, evaluation = estimate_bytes(config, task, model)
  needed = max(training, evaluation)
  if available is None or needed <= available:
    return
  sizes = (
      f'--memory_size={config.memory_size} --word_size={config.word_size} '
      if config.model == 'ntm'
      else f'--lstm_features={config.lstm_features} --lstm_layers={config.lstm_layers} '
  )
  sizes += f'--batch_size={config.batch_size}'
  if evaluation > training:  # the evaluation's batch, which remat does not shrink
    sizes += (
        f' --generalisation_batch_size={config.generalisation_batch_size}'
        if config.difficulty_batch_size > config.eval_batch_size
        else f' --eval_batch_size={config.eval_batch_size}'
    )
    remedy = 'smaller sizes or evaluation batches'
  else:
    remedy = 'smaller sizes or batch' + (
        ', or --remat_chunk=16' if config.model == 'ntm' else ''
    )
  raise DoesNotFitError(
      f'{sizes}{f" with {len(config.seeds)} members" if config.seeds else ""} need '
      f'about {needed / 2**30:.1f} GiB, more than the {available / 2**30:.1f} GiB of '
      f'this {device.platform} device; choose {remedy}.'
  )
