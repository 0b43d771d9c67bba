"""The copy task (paper Sec. 4.1).

A sequence of random 8-bit vectors is presented, followed by a delimiter on an extra input
channel; the network must then output the sequence with no further input. For a sequence
of length L the time line is:

  t = 0 .. L-1     input: the bits;   target: none (masked)
  t = L            input: delimiter;  target: none (masked)
  t = L+1 .. 2L    input: zeros;      target: the bits, in order (scored)

Training draws L uniformly from [min_length, max_length] per sequence and pads every
sequence to 2 * max_length + 1 steps; the padding is masked out.
"""

import jax
import jax.numpy as jnp

from ntm_jax.tasks.base import Batch
from ntm_jax.tasks.base import Task


class CopyTask(Task):
  """Copy a random binary sequence after a delimiter."""

  name = 'copy'

  def __init__(
      self,
      bits: int = 8,
      min_length: int = 1,
      max_length: int = 20,
      eval_lengths: tuple[int, ...] = (10, 20, 30, 50, 120),
  ):
    if bits < 1:
      raise ValueError(f'bits must be >= 1, got {bits}.')
    if not 1 <= min_length <= max_length:
      raise ValueError(
          f'need 1 <= min_length <= max_length, got min_length={min_length}, '
          f'max_length={max_length}.'
      )
    if not eval_lengths or min(eval_lengths) < 1:
      raise ValueError(f'eval_lengths must be positive lengths, got {eval_lengths}.')
    self.bits, self.min_length, self.max_length = bits, min_length, max_length
    self._eval_lengths = tuple(eval_lengths)

  @property
  def input_size(self) -> int:
    return self.bits + 1  # the bits and the delimiter channel

  @property
  def output_size(self) -> int:
    return self.bits

  @property
  def eval_difficulties(self) -> tuple[int, ...]:
    return self._eval_lengths

  def example_difficulties(self) -> tuple[int, ...]:
    # A trained length and the longest tested one: the paper's Fig. 4 and 6.
    return (self.max_length, max(self._eval_lengths))

  def _sample(self, key, lengths, max_length) -> Batch:
    """Sequences of the given lengths (b,), padded to 2 * max_length + 1 steps."""
    batch_size = lengths.shape[0]
    num_steps = 2 * max_length + 1
    bits = jax.random.bernoulli(key, 0.5, (batch_size, max_length, self.bits))
    bits = bits.astype(jnp.float32)
    t = jnp.arange(num_steps)[None, :]  # (1, T)
    length = lengths[:, None]  # (b, 1)
    # Input bits at t < L: bits[t]; the delimiter at t = L.
    in_bits = jnp.pad(bits, ((0, 0), (0, num_steps - max_length), (0, 0)))
    in_bits = in_bits * (t < length)[..., None]
    delimiter = (t == length).astype(jnp.float32)[..., None]
    inputs = jnp.concatenate([in_bits, delimiter], axis=-1)
    # Target bits at L < t <= 2L: bits[t - L - 1].
    mask = ((t > length) & (t <= 2 * length)).astype(jnp.float32)
    source = jnp.clip(t - length - 1, 0, max_length - 1)  # (b, T)
    targets = jnp.take_along_axis(bits, source[..., None], axis=1) * mask[..., None]
    return Batch(inputs=inputs, targets=targets, mask=mask)

  def sample_train(self, key, batch_size) -> Batch:
    length_key, bits_key = jax.random.split(key)
    lengths = jax.random.randint(
        length_key, (batch_size,), self.min_length, self.max_length + 1
    )
    return self._sample(bits_key, lengths, self.max_length)

  def sample_eval(self, key, batch_size, difficulty) -> Batch:
    lengths = jnp.full((batch_size,), difficulty, jnp.int32)
    return self._sample(key, lengths, difficulty)
