"""The associative recall task (paper Sec. 4.3).

An item is `item_length` (3) random 6-bit vectors. An episode shows n items (2-6 in
training), each opened by a delimiter on channel `bits`; then a query item, framed on both
sides by a delimiter on channel `bits + 1`; the target is the item that followed the
query in the list. With 4 = item_length + 1 steps per item, the time line is:

  t = 4i, 4i+1 .. 4i+3        item i: delimiter A, its 3 vectors     (i < n)
  t = 4n, 4n+1 .. 4n+3, 4n+4  delimiter B, the query item, delimiter B
  t = 4n+5 .. 4n+7            target: the item after the query       (scored)

The query is drawn uniformly from items 0 .. n-2, so it always has a successor.
"""

import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class AssociativeRecallTask(Task):
  """Recall the item that followed a queried item."""

  name = 'associative_recall'

  def __init__(
      self,
      bits: int = 6,
      item_length: int = 3,
      min_items: int = 2,
      max_items: int = 6,
      eval_items: tuple[int, ...] = (6, 10, 15, 20),
  ):
    if bits < 1 or item_length < 1:
      raise ValueError(f'bits and item_length must be >= 1, got {bits}, {item_length}.')
    if not 2 <= min_items <= max_items:
      raise ValueError(f'need 2 <= min_items <= max_items, got {min_items}, {max_items}.')
    if not eval_items or min(eval_items) < 2:
      raise ValueError(f'eval_items must be item counts >= 2, got {eval_items}.')
    self.bits, self.item_length = bits, item_length
    self.min_items, self.max_items = min_items, max_items
    self._eval_items = tuple(eval_items)

  @property
  def input_size(self) -> int:
    return self.bits + 2  # bits, item delimiter, query delimiter

  @property
  def output_size(self) -> int:
    return self.bits

  @property
  def eval_difficulties(self):
    return self._eval_items

  @property
  def difficulty_name(self) -> str:
    return 'items'

  def _num_steps(self, num_items: int) -> int:
    span = self.item_length + 1
    return span * num_items + span + 1 + self.item_length

  def _sample(self, key, num_items, max_items) -> Batch:
    batch_size = num_items.shape[0]
    items_key, query_key = jax.random.split(key)
    span = self.item_length + 1
    items = jax.random.bernoulli(
        items_key, 0.5, (batch_size, max_items, self.item_length, self.bits)
    )
    items = items.astype(jnp.float32)
    query = jax.random.randint(query_key, (batch_size,), 0, num_items - 1)
    num_steps = self._num_steps(max_items)
    t = jnp.arange(num_steps)[None, :]
    n = num_items[:, None]
    query_start = span * n  # delimiter B before the query
    output_start = query_start + span + 1  # after the closing delimiter B

    def vectors_at(item_index, position):
      """(b, T, bits): items[b, item_index[b, t], position[b, t]]."""
      flat = items.reshape(batch_size, max_items * self.item_length, self.bits)
      index = jnp.clip(item_index, 0, max_items - 1) * self.item_length + jnp.clip(
          position, 0, self.item_length - 1
      )
      return jnp.take_along_axis(flat, index[..., None], axis=1)

    in_list = t < query_start
    list_position = t % span - 1
    list_vectors = (
        vectors_at(t // span, list_position) * (in_list & (list_position >= 0))[..., None]
    )
    query_position = t - query_start - 1
    in_query = (query_position >= 0) & (query_position < self.item_length)
    query_vectors = (
        vectors_at(jnp.broadcast_to(query[:, None], query_position.shape), query_position)
        * in_query[..., None]
    )
    delimiter_a = (in_list & (t % span == 0)).astype(jnp.float32)
    delimiter_b = ((t == query_start) | (t == query_start + span)).astype(jnp.float32)
    inputs = jnp.concatenate(
        [list_vectors + query_vectors, delimiter_a[..., None], delimiter_b[..., None]],
        axis=-1,
    )
    output_position = t - output_start
    scored = (output_position >= 0) & (output_position < self.item_length)
    targets = (
        vectors_at(
            jnp.broadcast_to(query[:, None] + 1, output_position.shape), output_position
        )
        * scored[..., None]
    )
    return Batch(inputs=inputs, targets=targets, mask=scored.astype(jnp.float32))

  def sample_train(self, key, batch_size) -> Batch:
    count_key, key = jax.random.split(key)
    num_items = jax.random.randint(
        count_key, (batch_size,), self.min_items, self.max_items + 1
    )
    return self._sample(key, num_items, self.max_items)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    return self._sample(key, jnp.full((batch_size,), difficulty), difficulty)
