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
import numpy as np

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class PrioritySortTask(Task):
  """Output the highest-priority inputs in decreasing order of priority."""

  name = 'priority_sort'

  def __init__(self, bits: int = 8, num_inputs: int = 20, num_outputs: int = 16,
               eval_inputs: tuple[int, ...] = (20,), min_priority_span: float = 2.0):
    if bits < 1:
      raise ValueError(f'bits must be >= 1, got {bits}.')
    if not 1 <= num_outputs <= num_inputs:
      raise ValueError(f'need 1 <= num_outputs <= num_inputs, got {num_outputs}, '
                       f'{num_inputs}.')
    if not eval_inputs or min(eval_inputs) < 1:
      raise ValueError(f'eval_inputs must be positive, got {eval_inputs}.')
    if not 0 < min_priority_span <= 2:
      raise ValueError(f'min_priority_span must be in (0, 2] (2: every priority in '
                       f'[-1, 1], as the paper), got {min_priority_span}.')
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
    priority = jax.random.uniform(priority_key, (batch_size, num_inputs), minval=-1.0,
                                  maxval=1.0)
    if min_span < 2:  # each sequence's priorities in an interval of its own
      # A stream of its own (`fold_in`), so that the bits and the paper's priorities
      # stay those of the same key and the interval is an affine map of them.
      width_key, centre_key = jax.random.split(jax.random.fold_in(key, 7))
      half_width = jnp.exp(jax.random.uniform(
          width_key, (batch_size, 1), minval=math.log(min_span / 2), maxval=0.0))
      centre = jax.random.uniform(centre_key, (batch_size, 1), minval=-1.0,
                                  maxval=1.0) * (1 - half_width)
      priority = centre + half_width * priority
    order = jnp.argsort(-priority, axis=1)[:, :num_outputs]
    sorted_bits = jnp.take_along_axis(bits, order[..., None], axis=1)
    batch_zeros = lambda steps, width: jnp.zeros((batch_size, steps, width))
    inputs = jnp.concatenate([
        jnp.concatenate([bits, priority[..., None], batch_zeros(num_inputs, 1)], -1),
        jnp.concatenate([batch_zeros(1, self.bits + 1), jnp.ones((batch_size, 1, 1))], -1),
        batch_zeros(num_outputs, self.bits + 2)], axis=1)
    targets = jnp.concatenate([batch_zeros(num_inputs + 1, self.bits), sorted_bits], 1)
    mask = jnp.concatenate([jnp.zeros((batch_size, num_inputs + 1)),
                            jnp.ones((batch_size, num_outputs))], axis=1)
    return Batch(inputs=inputs, targets=targets, mask=mask)

  def sample_train(self, key, batch_size) -> Batch:
    return self._sample(key, batch_size, self.num_inputs, self.min_priority_span)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    return self._sample(key, batch_size, difficulty)


# How a trained NTM sorts: analysis of its traced weightings, on the host (numpy).


def write_placement(write_weights: np.ndarray,
                    priorities: np.ndarray) -> dict[str, np.ndarray]:
  """How each write head places the inputs, as means over a batch.

  Two algorithms sort the task (docs/RESULTS.md): the paper's layout (Fig. 17), where a
  write head puts each input at a slot set by its priority and the read heads walk those
  slots in order, and search, where a write head gives each input a slot of its own in
  no particular order and the read keys find the highest priority not yet output.

  Args:
    write_weights: (b, n, H, N) the H write weightings at the n input steps.
    priorities: (b, n) the inputs' priorities.

  Returns:
    (H,) arrays:
    peak: the largest entry of an input's weighting (1: one slot; 1/N: spread evenly).
    slots: how many distinct slots the n inputs' largest entries fall on.
    order: how consistently the slot moves one way around the memory as the priority
      rises: over the inputs taken in order of priority, |mean sign| of the circular
      step from one input's slot to the next one's (the shorter way round; steps that
      stay on a slot are left out). 1 for a layout by priority, in either direction and
      wrapping around the memory or not; about 0.2 for 20 inputs on random slots.
  """
  write_weights, priorities = np.asarray(write_weights), np.asarray(priorities)
  num_slots = write_weights.shape[-1]
  peak = write_weights.max(-1).mean((0, 1))
  slots = write_weights.argmax(-1)  # (b, n, H)
  distinct = np.mean([[len(np.unique(slots[b, :, h])) for h in range(slots.shape[2])]
                      for b in range(slots.shape[0])], axis=0)
  by_priority = np.take_along_axis(
      np.moveaxis(slots, 2, 1), np.argsort(priorities, -1)[:, None], -1)  # (b, H, n)
  steps = (np.diff(by_priority, axis=-1) + num_slots // 2) % num_slots - num_slots // 2
  signs = np.sign(steps)
  moves = np.count_nonzero(signs, axis=-1)
  order = np.where(moves > 0, np.abs(signs.sum(-1)) / np.maximum(moves, 1), 0.0).mean(0)
  return dict(peak=peak, slots=distinct, order=order)


# A write head places the inputs when their weightings peak above PLACING_PEAK on
# average. It lays them out by priority when its order is above LAYOUT_ORDER (inputs on
# random slots give about 0.2, the layouts measured so far 0.6-0.9 with their collisions
# and slips), and places them for search when its order is below SEARCH_ORDER with
# about one slot per input.
PLACING_PEAK, LAYOUT_ORDER, SEARCH_ORDER = 0.5, 0.5, 0.3


def sorting_algorithm(placement: dict[str, np.ndarray],
                      num_inputs: int) -> tuple[str | None, int | None]:
  """('layout' or 'search', the write head that shows it) from `write_placement`, or
  (None, None) when no write head places the inputs either way."""
  placing = [head for head, peak in enumerate(placement['peak']) if peak > PLACING_PEAK]
  for head in placing:
    if placement['order'][head] > LAYOUT_ORDER:
      return 'layout', head
  for head in placing:
    if (placement['order'][head] < SEARCH_ORDER and
        placement['slots'][head] >= 0.9 * num_inputs):
      return 'search', head
  return None, None


def bit_errors_by_priority_gap(logits: np.ndarray, batch: Batch, num_inputs: int,
                               edges=(0.0, 0.01, 0.03, 0.06, 0.1, np.inf)
                               ) -> dict[str, float]:
  """Bit errors per output vector, grouped by how close its priority is to another.

  The gap of an output is the distance from its input's priority to the nearest other
  input's priority: close priorities are where a sorting NTM goes wrong.

  Args:
    logits: (b, T, bits) the model's outputs on `batch`, a priority-sort batch of
      `num_inputs` inputs.
    edges: the gaps' bin edges; a bin holds gaps in [low, high).

  Returns:
    {'low-high': mean bit errors per output vector in that bin}, NaN for an empty bin.
  """
  inputs, targets, mask = (np.asarray(array) for array in batch)
  priorities = inputs[:, :num_inputs, -2]  # the channel before the delimiter
  distance = np.abs(priorities[:, :, None] - priorities[:, None, :])
  distance[:, np.arange(num_inputs), np.arange(num_inputs)] = np.inf
  gap = distance.min(-1)
  scored = mask > 0
  num_outputs = int(scored[0].sum())
  ranked = np.argsort(-priorities, axis=1)[:, :num_outputs]  # output k is input ranked[k]
  output_gaps = np.take_along_axis(gap, ranked, axis=1)
  errors = ((np.asarray(logits) > 0) != (targets > 0.5)).sum(-1)
  output_errors = errors[scored].reshape(len(errors), num_outputs)
  result = {}
  for low, high in zip(edges[:-1], edges[1:]):
    selected = (output_gaps >= low) & (output_gaps < high)
    result[f'{low:g}-{high:g}'] = (float(output_errors[selected].mean()) if selected.any()
                                   else float('nan'))
  return result
