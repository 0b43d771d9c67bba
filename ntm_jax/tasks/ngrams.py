"""The dynamic N-grams task (paper Sec. 4.4), with the optimal Bayesian estimator.

Each sequence has its own 6-gram table: for each of the 2^5 = 32 five-bit contexts, a
probability that the next bit is 1, drawn from Beta(1/2, 1/2). The first 5 bits are
uniform; every later bit is drawn from the table given the 5 bits before it. The network
reads one bit per step and predicts the next; the `length` (200) predictions that have a
full context are scored:

  t = 0 .. length+3   input: bit t;  target: bit t+1  (scored from t = 4 on)

The optimal estimator predicts P(1 | context) = (N1 + 1/2) / (N1 + N0 + 1), where N1 and
N0 count the ones and zeros seen so far after that context in the same sequence.
"""

import math

import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class DynamicNGramsTask(Task):
  """Predict the next bit of a sequence drawn from a random 6-gram model."""

  name = 'ngrams'
  judged_by = 'cost'

  def __init__(
      self, context: int = 5, length: int = 200, eval_lengths: tuple[int, ...] = (200,)
  ):
    if context < 1 or context > 16:
      raise ValueError(f'context must be between 1 and 16 bits, got {context}.')
    if length < 1 or not eval_lengths or min(eval_lengths) < 1:
      raise ValueError(f'lengths must be positive, got {length} and {eval_lengths}.')
    self.context, self.length = context, length
    self._eval_lengths = tuple(eval_lengths)

  @property
  def input_size(self) -> int:
    return 1

  @property
  def output_size(self) -> int:
    return 1

  @property
  def eval_difficulties(self):
    return self._eval_lengths

  def example_difficulties(self):
    return (self._eval_lengths[0],)

  def _sample(self, key, batch_size, length) -> Batch:
    table_key, start_key, bits_key = jax.random.split(key, 3)
    num_contexts = 2**self.context
    tables = jax.random.beta(table_key, 0.5, 0.5, (batch_size, num_contexts))
    start = jax.random.bernoulli(start_key, 0.5, (batch_size, self.context))
    start = start.astype(jnp.int32)
    weights = 2 ** jnp.arange(self.context - 1, -1, -1)

    def next_bit(context_bits, key_t):
      index = context_bits @ weights  # (b,)
      p = jnp.take_along_axis(tables, index[:, None], axis=1)[:, 0]
      bit = jax.random.bernoulli(key_t, p).astype(jnp.int32)
      return jnp.concatenate([context_bits[:, 1:], bit[:, None]], axis=1), bit

    _, later = jax.lax.scan(next_bit, start, jax.random.split(bits_key, length))
    bits = jnp.concatenate([start, later.T], axis=1).astype(jnp.float32)  # (b, ctx+len)
    t = jnp.arange(self.context + length - 1)[None, :]
    mask = jnp.broadcast_to(
        (t >= self.context - 1).astype(jnp.float32), (batch_size, t.shape[1])
    )
    return Batch(inputs=bits[:, :-1, None], targets=bits[:, 1:, None], mask=mask)

  def sample_train(self, key, batch_size) -> Batch:
    return self._sample(key, batch_size, self.length)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    return self._sample(key, batch_size, difficulty)

  def reference_cost(self, batch: Batch) -> jax.Array:
    """(b,) cost in bits per sequence of the optimal Bayesian estimator."""
    inputs = batch.inputs[..., 0].astype(jnp.int32)  # (b, T)
    targets = batch.targets[..., 0].astype(jnp.int32)
    batch_size, num_steps = inputs.shape
    weights = 2 ** jnp.arange(self.context - 1, -1, -1)
    # The context of the prediction at step t is inputs[t - context + 1 .. t].
    padded = jnp.pad(inputs, ((0, 0), (self.context - 1, 0)))
    windows = jnp.stack([padded[:, i : i + num_steps] for i in range(self.context)], -1)
    contexts = windows @ weights  # (b, T)

    def predict(counts, step):
      context, bit, scored = step  # (b,) each
      ones = jnp.take_along_axis(counts[..., 1], context[:, None], 1)[:, 0]
      zeros = jnp.take_along_axis(counts[..., 0], context[:, None], 1)[:, 0]
      p_one = (ones + 0.5) / (ones + zeros + 1.0)
      nats = -jnp.log(jnp.where(bit == 1, p_one, 1.0 - p_one)) * scored
      update = (
          jax.nn.one_hot(context, 2**self.context)[..., None]
          * jax.nn.one_hot(bit, 2)[:, None, :]
          * scored[:, None, None]
      )
      return counts + update, nats

    counts = jnp.zeros((batch_size, 2**self.context, 2))
    _, nats = jax.lax.scan(predict, counts, (contexts.T, targets.T, batch.mask.T))
    return jnp.sum(nats, axis=0) / math.log(2.0)
