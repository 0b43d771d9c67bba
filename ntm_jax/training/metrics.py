"""The paper's cost and the bit errors, from logits, targets and a mask.

cost: binary cross-entropy of sigmoid outputs, in bits, summed over a sequence's scored
steps and channels (the paper's "cost per sequence"). bit_errors: scored outputs whose
thresholded value (sigmoid > 0.5, i.e. logit > 0) differs from the target. The entropy of
the heads' weightings is the optional training penalty (ExperimentConfig.entropy_penalty).

A run logs them to `metrics.jsonl` in its workdir (`read_log` reads it back).
"""

import json
import math
import os

import jax
import jax.numpy as jnp
import optax

from ntm_jax import addressing
from ntm_jax.tasks.base import Batch


def cost_per_sequence(logits: jax.Array, batch: Batch) -> jax.Array:
  """(b,) cross-entropy in bits per sequence."""
  nats = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), batch.targets)
  return jnp.sum(nats * batch.mask[..., None], axis=(1, 2)) / math.log(2.0)


def bit_errors_per_sequence(logits: jax.Array, batch: Batch) -> jax.Array:
  """(b,) number of wrong thresholded output bits per sequence."""
  wrong = (logits > 0) != (batch.targets > 0.5)
  return jnp.sum(wrong * batch.mask[..., None], axis=(1, 2))


def weighting_entropy_per_sequence(weights: jax.Array, batch: Batch) -> jax.Array:
  """(b,) entropy in bits of head weightings (b, T, H, N), summed over the heads and the
  steps of each sequence up to its last scored step (the steps after it are padding)."""
  # The sharpening's floor under log(w) keeps it finite where a weight underflowed to 0.
  bits = -jnp.sum(weights * jnp.log2(weights + addressing.SHARPEN_EPSILON), axis=(2, 3))
  # 1 up to the last scored step: a reversed cumulative sum of the mask is > 0 there.
  steps = jnp.flip(jnp.cumsum(jnp.flip(batch.mask, 1), 1), 1) > 0
  return jnp.sum(bits * steps, axis=1)


def summarize(logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
  """Batch means of the cost and bit errors per sequence."""
  return dict(cost=jnp.mean(cost_per_sequence(logits, batch)),
              bit_errors=jnp.mean(bit_errors_per_sequence(logits, batch)))


LOG_NAME = 'metrics.jsonl'


def read_log(workdir: str) -> list[dict]:
  """The records of a run's metrics.jsonl; raises FileNotFoundError if it has none."""
  records = []
  with open(os.path.join(workdir, LOG_NAME)) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut short by a killed run
        pass
  return records
