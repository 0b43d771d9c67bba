"""The priority sort task (paper Sec. 4.5).

`num_inputs` (20) random 8-bit vectors, each with a priority drawn uniformly from [-1, 1]
on an extra input channel; then a delimiter; then the network must output the
`num_outputs` (16) highest-priority vectors in order of decreasing priority:

  t = 0 .. n-1        input: bits and priority
  t = n               input: delimiter
  t = n+1 .. n+k      target: the k highest-priority vectors, highest first (scored)

A difficulty is the number of inputs n; the number of outputs keeps the training ratio,
k = n * num_outputs // num_inputs.

With `min_priority_span` below 2 (an option of this project, not the paper's) each
training sequence draws its priorities from its own interval inside [-1, 1], of a width
between that and 2 (log-uniform) at a uniform place; evaluation keeps [-1, 1]. A write
head that lays the inputs out at slots set by the priority (the paper's Fig. 17) crowds a
narrow interval onto a few slots, where an NTM that compares priorities is not hurt: the
aim is to make the second kind of solution more likely (docs/history, "Priority sort:
which algorithm a run starts with").
"""

import math

import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class PrioritySortTask(Task):
  """Output the highest-priority inputs in decreasing order of priority."""

  name = 'priority_sort'
  judged_by = 'cost'

  def __init__(
      self,
      bits: int = 8,
      num_inputs: int = 20,
      num_outputs: int = 16,
      eval_inputs: tuple[int, ...] = (20,),
      min_priority_span: float = 2.0,
  ):
    if bits < 1:
      raise ValueError(f'bits must be >= 1, got {bits}.')
    if not 1 <= num_outputs <= num_inputs:
      raise ValueError(
          f'need 1 <= num_outputs <= num_inputs, got {num_outputs}, ' f'{num_inputs}.'
      )
    if not eval_inputs or min(eval_inputs) < 1:
      raise ValueError(f'eval_inputs must be positive, got {eval_inputs}.')
    if not 0 < min_priority_span <= 2:
      raise ValueError(
          f'min_priority_span must be in (0, 2] (2: every priority in '
          f'[-1, 1], as the paper), got {min_priority_span}.'
      )
    self.bits, self.num_inputs, self.num_outputs = bits, num_inputs, num_outputs
    self.min_priority_span = min_priority_span
    self._eval_inputs = tuple(eval_inputs)

  @property
  def input_size(self) -> int:
    return self.bits + 2  # bits, priority, delimiter

  @property
  def output_size(self) -> int:
    return self.bits

  @property
  def eval_difficulties(self):
    return self._eval_inputs

  @property
  def difficulty_name(self) -> str:
    return 'inputs'

  def example_difficulties(self):
    return (self._eval_inputs[0],)

  def num_outputs_for(self, num_inputs: int) -> int:
    return max(1, num_inputs * self.num_outputs // self.num_inputs)

  def _sample(self, key, batch_size, num_inputs, min_span=2.0) -> Batch:
    bits_key, priority_key = jax.random.split(key)
    num_outputs = self.num_outputs_for(num_inputs)
    bits = jax.random.bernoulli(bits_key, 0.5, (batch_size, num_inputs, self.bits))
    bits = bits.astype(jnp.float32)
    priority = jax.random.uniform(
        priority_key, (batch_size, num_inputs), minval=-1.0, maxval=1.0
    )
    if min_span < 2:  # each sequence's priorities in an interval of its own
      # A stream of its own (`fold_in`), so that the bits and the paper's priorities
      # stay those of the same key and the interval is an affine map of them.
      width_key, centre_key = jax.random.split(jax.random.fold_in(key, 7))
      half_width = jnp.exp(
          jax.random.uniform(
              width_key, (batch_size, 1), minval=math.log(min_span / 2), maxval=0.0
          )
      )
      centre = jax.random.uniform(
          centre_key, (batch_size, 1), minval=-1.0, maxval=1.0
      ) * (1 - half_width)
      priority = centre + half_width * priority
    order = jnp.argsort(-priority, axis=1)[:, :num_outputs]
    sorted_bits = jnp.take_along_axis(bits, order[..., None], axis=1)
    batch_zeros = lambda steps, width: jnp.zeros((batch_size, steps, width))
    inputs = jnp.concatenate(
        [
            jnp.concatenate([bits, priority[..., None], batch_zeros(num_inputs, 1)], -1),
            jnp.concatenate(
                [batch_zeros(1, self.bits + 1), jnp.ones((batch_size, 1, 1))], -1
            ),
            batch_zeros(num_outputs, self.bits + 2),
        ],
        axis=1,
    )
    targets = jnp.concatenate([batch_zeros(num_inputs + 1, self.bits), sorted_bits], 1)
    mask = jnp.concatenate(
        [jnp.zeros((batch_size, num_inputs + 1)), jnp.ones((batch_size, num_outputs))],
        axis=1,
    )
    return Batch(inputs=inputs, targets=targets, mask=mask)

  def sample_train(self, key, batch_size) -> Batch:
    return self._sample(key, batch_size, self.num_inputs, self.min_priority_span)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    return self._sample(key, batch_size, difficulty)
