"""The heads' parameters: one fused dense layer's output, laid out and activated.

`NTMCell` maps its controller's output h_t to every head's parameters with one dense
layer; `HeadLayout` says where each parameter sits in that layer's output,
`head_bias_init` starts chosen parameters elsewhere, and `split_head_parameters` applies
the activations that keep each in its range (paper Sec. 3.3, Fig. 2).
"""

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class HeadParameters(NamedTuple):
  """Addressing (and, for write heads, writing) parameters for a group of heads.

  Shapes for b examples and H heads: key (b, H, M); beta, gate, gamma (b, H);
  shift_weights (b, H, S); erase and add (b, H, M) for write heads, None for read heads.
  """

  key: jax.Array
  beta: jax.Array
  gate: jax.Array
  shift_weights: jax.Array
  gamma: jax.Array
  erase: jax.Array | None = None
  add: jax.Array | None = None


class HeadLayout(NamedTuple):
  """Where each head parameter sits in the output of the cell's fused head layer.

  One vector per example: the read heads' raw parameters, then the write heads'. Within
  a head: key (M), beta, gate, shift logits (S = 2R + 1, offsets -R..R), gamma, and for
  a write head erase (M) and add (M). The cell, its initializers and the benchmarks all
  read the layout from here.
  """

  num_read_heads: int
  num_write_heads: int
  word_size: int
  num_shifts: int

  @property
  def read_size(self) -> int:
    return self.word_size + self.num_shifts + 3

  @property
  def write_size(self) -> int:
    return 3 * self.word_size + self.num_shifts + 3

  @property
  def size(self) -> int:
    return self.num_read_heads * self.read_size + self.num_write_heads * self.write_size

  def field_sizes(self, is_write: bool) -> dict[str, int]:
    """{field: width} of one head's raw parameters, in their order."""
    m = self.word_size
    sizes = dict(key=m, beta=1, gate=1, shift=self.num_shifts, gamma=1)
    return dict(sizes, erase=m, add=m) if is_write else sizes

  def indices(self, field: str, is_write: bool, offset: int | None = None) -> jax.Array:
    """The positions of `field` in the layer's output, for every head of one kind.

    `offset` picks one entry: a shift offset in -R..R for 'shift', an index into the
    field otherwise. Returns integers of shape (heads,) with an `offset`, else
    (heads, width).
    """
    sizes = self.field_sizes(is_write)
    if field not in sizes:
      raise ValueError(f'HeadLayout: unknown field {field!r}; one of {", ".join(sizes)}.')
    names = list(sizes)
    start = sum(sizes[name] for name in names[: names.index(field)])
    if is_write:
      first = self.num_read_heads * self.read_size + self.write_size * jnp.arange(
          self.num_write_heads
      )
    else:
      first = self.read_size * jnp.arange(self.num_read_heads)
    if offset is None:
      return first[:, None] + start + jnp.arange(sizes[field])
    if field == 'shift':
      offset += self.num_shifts // 2  # offsets -R..R are entries 0..2R
    if not 0 <= offset < sizes[field]:
      raise ValueError(f'HeadLayout: offset out of range for {field!r}.')
    return first + start + offset

  def split(self, raw: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(b, size) -> raw read (b, R, read size) and write (b, W, write size) parameters."""
    cut = self.num_read_heads * self.read_size
    batch = raw.shape[:-1]
    return (
        raw[..., :cut].reshape(batch + (self.num_read_heads, self.read_size)),
        raw[..., cut:].reshape(batch + (self.num_write_heads, self.write_size)),
    )


def head_bias_init(
    layout: HeadLayout, read: dict | None = None, write: dict | None = None
):
  """An initializer for `NTMCell.head_bias_init`: chosen starting biases, zero elsewhere.

  `read` and `write` map a `HeadLayout` field, or a (field, offset) pair such as
  ('shift', 1) for the logit of moving one slot on, to the bias every head of that kind
  starts with. Write heads that start by keeping their focus and moving it one slot per
  step, as a list is written: `head_bias_init(layout, write={'gate': -4.0, ('shift', 1):
  4.0})` (Eq. 7: g = sigmoid(-4) = 0.02; Eq. 8: s(+1) = e^4 / (e^4 + 2R)).
  """
  settings = []
  for is_write, fields in ((False, read or {}), (True, write or {})):
    for name, value in fields.items():
      field, offset = name if isinstance(name, tuple) else (name, None)
      settings.append((layout.indices(field, is_write, offset), value))  # checks now

  def init(key, shape, dtype=jnp.float32):
    del key
    if tuple(shape) != (layout.size,):
      raise ValueError(
          f'head_bias_init: the layer has {tuple(shape)} biases, the layout '
          f"{layout.size}: build the layout from the cell's sizes."
      )
    bias = jnp.zeros(shape, dtype)
    for indices, value in settings:
      bias = bias.at[indices].set(value)
    return bias

  return init


def split_head_parameters(
    raw: jax.Array, layout: HeadLayout, is_write: bool
) -> HeadParameters:
  """Applies the activations that keep each head parameter in its range.

  beta = softplus >= 0; gate = sigmoid in (0, 1); shift = softmax over offsets;
  gamma = 1 + softplus >= 1; erase = sigmoid in [0, 1]; add = tanh; the key is linear
  (the cosine similarity of Eq. 6 ignores its scale).
  """
  sizes = list(layout.field_sizes(is_write).values())
  parts = jnp.split(raw, list(itertools.accumulate(sizes[:-1])), axis=-1)
  key, beta, gate, shift_logits, gamma = parts[:5]
  params = dict(
      key=key,
      beta=jax.nn.softplus(beta[..., 0]),
      gate=jax.nn.sigmoid(gate[..., 0]),
      shift_weights=jax.nn.softmax(shift_logits, axis=-1),
      gamma=1.0 + jax.nn.softplus(gamma[..., 0]),
  )
  if is_write:
    params.update(erase=jax.nn.sigmoid(parts[5]), add=jnp.tanh(parts[6]))
  return HeadParameters(**params)
