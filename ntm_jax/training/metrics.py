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

from ntm_jax.tasks.base import Batch


def cost_per_sequence(logits: jax.Array, batch: Batch) -> jax.Array:
  """(b,) cross-entropy in bits per sequence."""
  nats = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), batch.targets)
  return jnp.sum(nats * batch.mask[..., None], axis=(1, 2)) / math.log(2.0)


def bit_errors_per_sequence(logits: jax.Array, batch: Batch) -> jax.Array:
  """(b,) number of wrong thresholded output bits per sequence."""
  wrong = (logits > 0) != (batch.targets > 0.5)
  return jnp.sum(wrong * batch.mask[..., None], axis=(1, 2))


def summarize(logits: jax.Array, batch: Batch) -> dict[str, jax.Array]:
  """Batch means of the cost and bit errors per sequence."""
  return dict(
      cost=jnp.mean(cost_per_sequence(logits, batch)),
      bit_errors=jnp.mean(bit_errors_per_sequence(logits, batch)),
  )


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
