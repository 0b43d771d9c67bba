"""The repeat copy task (paper Sec. 4.2).

A sequence of L random 8-bit vectors, then, on its own input channel, the number of copies
wanted R, normalised to mean 0 and variance 1 over the training range (a delimiter flag
marks the same step). The target is the sequence repeated R times, then an end marker on
an extra output channel. Time line:

  t = 0 .. L-1                input: the bits
  t = L                       input: delimiter and the normalised R
  t = L+1 .. L+L*R            target: bits[(t - L - 1) mod L]      (scored)
  t = L+1+L*R                 target: the end marker               (scored)

Every output step scores all channels, so the end marker must also stay 0 until the end.
"""

import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class RepeatCopyTask(Task):
  """Copy a random binary sequence R times, then signal the end."""

  name = 'repeat_copy'

  def __init__(
      self,
      bits: int = 8,
      min_length: int = 1,
      max_length: int = 10,
      min_repeats: int = 1,
      max_repeats: int = 10,
      eval_difficulties: tuple[tuple[int, int], ...] = (
          (10, 10),
          (10, 20),
          (20, 10),
          (20, 20),
      ),
  ):
    if bits < 1:
      raise ValueError(f'bits must be >= 1, got {bits}.')
    if not 1 <= min_length <= max_length:
      raise ValueError(
          f'need 1 <= min_length <= max_length, got {min_length}, ' f'{max_length}.'
      )
    if not 1 <= min_repeats <= max_repeats:
      raise ValueError(
          f'need 1 <= min_repeats <= max_repeats, got {min_repeats}, ' f'{max_repeats}.'
      )
    if not eval_difficulties or any(len(d) != 2 or min(d) < 1 for d in eval_difficulties):
      raise ValueError(
          'eval_difficulties must be (length, repeats) pairs of positive '
          f'integers, got {eval_difficulties}.'
      )
    self.bits = bits
    self.min_length, self.max_length = min_length, max_length
    self.min_repeats, self.max_repeats = min_repeats, max_repeats
    self._eval_difficulties = tuple(tuple(d) for d in eval_difficulties)
    # Mean and standard deviation of R uniform over the training range.
    self.repeats_mean = (min_repeats + max_repeats) / 2
    count = max_repeats - min_repeats + 1
    self.repeats_std = ((count**2 - 1) / 12) ** 0.5 if count > 1 else 1.0

  @property
  def input_size(self) -> int:
    return self.bits + 2  # bits, delimiter, normalised repeat count

  @property
  def output_size(self) -> int:
    return self.bits + 1  # bits, end marker

  @property
  def eval_difficulties(self):
    return self._eval_difficulties

  @property
  def difficulty_name(self) -> str:
    return 'length x repeats'

  def difficulty_label(self, difficulty) -> str:
    return f'{difficulty[0]}x{difficulty[1]}'

  def normalise_repeats(self, repeats):
    return (repeats - self.repeats_mean) / self.repeats_std

  def _sample(self, key, lengths, repeats, max_length, num_steps) -> Batch:
    batch_size = lengths.shape[0]
    bits = jax.random.bernoulli(key, 0.5, (batch_size, max_length, self.bits))
    bits = bits.astype(jnp.float32)
    t = jnp.arange(num_steps)[None, :]
    length, repeat = lengths[:, None], repeats[:, None]
    source = jnp.clip(t, 0, max_length - 1)
    in_bits = (
        jnp.take_along_axis(bits, source[..., None], axis=1) * (t < length)[..., None]
    )
    marker = (t == length).astype(jnp.float32)
    inputs = jnp.concatenate(
        [
            in_bits,
            marker[..., None],
            (marker * self.normalise_repeats(repeat.astype(jnp.float32)))[..., None],
        ],
        axis=-1,
    )
    end = length + 1 + length * repeat
    copying = (t > length) & (t < end)
    source = jnp.mod(t - length - 1, length)
    out_bits = jnp.take_along_axis(bits, source[..., None], axis=1) * copying[..., None]
    targets = jnp.concatenate([out_bits, (t == end).astype(jnp.float32)[..., None]], -1)
    mask = ((t > length) & (t <= end)).astype(jnp.float32)
    return Batch(inputs=inputs, targets=targets, mask=mask)

  def sample_train(self, key, batch_size) -> Batch:
    length_key, repeat_key, bits_key = jax.random.split(key, 3)
    lengths = jax.random.randint(
        length_key, (batch_size,), self.min_length, self.max_length + 1
    )
    repeats = jax.random.randint(
        repeat_key, (batch_size,), self.min_repeats, self.max_repeats + 1
    )
    num_steps = self.max_length * (self.max_repeats + 1) + 2
    return self._sample(bits_key, lengths, repeats, self.max_length, num_steps)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    length, repeats = difficulty
    return self._sample(
        key,
        jnp.full((batch_size,), length),
        jnp.full((batch_size,), repeats),
        length,
        length * (repeats + 1) + 2,
    )
