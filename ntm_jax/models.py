"""Sequence models built from cells: the NTM and the paper's LSTM baseline.

Both map inputs (b, T, I) to output logits (b, T, O) and are unrolled with `nn.RNN`
(a `jax.lax.scan` over time).
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ntm_jax import addressing
from ntm_jax.cell import NTMCell
from ntm_jax.cell import NTMState


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _clip_gradient(bound: float, tree: Any) -> Any:
  """The identity, whose gradient has each entry clipped into [-bound, bound]."""
  return tree


_clip_gradient.defvjp(
    lambda bound, tree: (tree, None),
    lambda bound, _, cotangent: (
        jax.tree_util.tree_map(lambda g: jnp.clip(g, -bound, bound), cotangent),
    ),
)


def clip_carry_gradient(bound: float, carry: NTMState) -> NTMState:
  """`carry` unchanged, with each entry of its gradient clipped into [-bound, bound].

  For a cell's new carry: the gradient entering a step from later steps is bounded before
  it meets the step's own. `is_initial` is a bool with no gradient and bypasses it.
  """
  clipped = _clip_gradient(bound, carry._replace(is_initial=None))
  return clipped._replace(is_initial=carry.is_initial)


def weighting_entropy(weights: jax.Array, mask: jax.Array) -> jax.Array:
  """(b,) entropy in bits of head weightings (b, T, H, N), summed over the heads and the
  steps of each sequence up to its last scored step (`mask` (b, T) is 1 on scored steps;
  the steps after the last one are padding)."""
  # The sharpening's floor under log(w) keeps it finite where a weight underflowed to 0.
  bits = -jnp.sum(weights * jnp.log2(weights + addressing.SHARPEN_EPSILON), axis=(2, 3))
  # 1 up to the last scored step: a reversed cumulative sum of the mask is > 0 there.
  steps = jnp.flip(jnp.cumsum(jnp.flip(mask, 1), 1), 1) > 0
  return jnp.sum(bits * steps, axis=1)


class NTM(nn.Module):
  """An `NTMCell` unrolled over time: (b, T, I) -> logits (b, T, O).

  With `memory_init='random'` the starting memory is drawn from the 'memory' rng stream
  when `apply` is given one (`rngs={'memory': key}`; the training step passes a fresh key
  per step), and from a fixed key otherwise, so that evaluation is deterministic.

  Applied with `mutable=['intermediates']`, it also returns every step's weightings,
  `variables['intermediates']['cell']['read_weights'][0]` of shape (b, T, R, N)
  and likewise 'write_weights' (b, T, W, N), as the training's entropy penalty uses them.

  Attributes:
    cell: the NTMCell.
    remat_chunk: what the backward pass keeps of the forward pass.
      1 (the default): only each step's carry; the backward pass recomputes each step
        from it (`nn.remat` around the step). On a CPU it is as fast at batch 1 and
        faster at larger batches; on a GPU it launches about half as many kernels
        again as 0 (docs/BENCHMARKS.md).
      0: every intermediate of every step (a plain scan, as `nn.RNN` does).
      K > 1: only the carry at every K-th step. Time is cut into chunks of K steps,
        scanned by an outer scan whose body (an inner scan over one chunk) is
        rematerialised: about T / K copies of the (b, N, M) memory instead of T, for long
        sequences and big memories. The backward pass recomputes each chunk, again
        keeping only each step's carry.
      The weightings are recorded (mutable=['intermediates']) only with 0 or 1.
    carry_grad_clip: 0, or clip each entry of the gradient that reaches a step through
      its carry (memory, weightings, reads, controller state) into [-carry_grad_clip,
      carry_grad_clip] (`clip_carry_gradient`); the forward pass is unchanged. It bounds
      gradients that grow through time, as Graves (2013) clipped an LSTM's
      derivatives.
    unroll: time steps per iteration of the time scan's loop (`jax.lax.scan`'s
      `unroll`). On a GPU each loop iteration launches its kernels separately; unrolling
      lets XLA fuse across steps and launch fewer, larger kernels, at the price of compile
      time. The results are those of `unroll=1` up to float rounding.
  """

  cell: NTMCell
  remat_chunk: int = 1
  carry_grad_clip: float = 0.0
  unroll: int = 1

  def __post_init__(self):
    for name, least in (('remat_chunk', 0), ('unroll', 1)):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f'NTM.{name} must be an integer >= {least}, got {value!r}.')
    if not 0 <= self.carry_grad_clip < float('inf'):
      raise ValueError(
          f'NTM.carry_grad_clip must be a finite number >= 0 (0: off), got '
          f'{self.carry_grad_clip!r}.'
      )
    super().__post_init__()

  @nn.nowrap
  def recorded_weighting_entropy(self, intermediates: dict, mask: jax.Array) -> jax.Array:
    """(b,) entropy in bits of the weightings an `apply(..., mutable=['intermediates'])`
    recorded, every head's, summed over heads and the steps up to each sequence's last
    scored step: what a loss on sharp addressing penalises."""
    return sum(
        weighting_entropy(weights, mask) for (weights,) in intermediates['cell'].values()
    )

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    init_key = self.make_rng('memory') if self.has_rng('memory') else jax.random.key(0)
    carry = self.cell.initialize_carry(init_key, inputs[:, 0].shape)
    bound = self.carry_grad_clip

    def step(cell, carry, x):
      carry, y = cell(carry, x)
      return (clip_carry_gradient(bound, carry) if bound else carry), y

    scan = functools.partial(
        nn.scan,
        variable_broadcast='params',
        split_rngs={'params': False},
        unroll=self.unroll,
    )
    if self.remat_chunk <= 1:
      if self.remat_chunk == 1:
        # prevent_cse=False is safe inside a scan (see jax.checkpoint) and lets XLA fuse.
        step = nn.remat(step, prevent_cse=False)
      # variable_axes: the cell's recorded weightings are stacked along time (axis 1).
      _, ys = scan(step, variable_axes={'intermediates': 1}, in_axes=1, out_axes=1)(
          self.cell, carry, inputs
      )
      return ys
    if self.is_mutable_collection('intermediates'):
      raise ValueError(
          'NTM: the weightings are recorded (mutable=["intermediates"]) '
          'only with remat_chunk=0 or 1.'
      )
    batch, num_steps, _ = inputs.shape
    chunk = self.remat_chunk
    num_chunks = -(-num_steps // chunk)
    # Padding at the end changes nothing before it: the outputs there are dropped.
    padded = jnp.pad(inputs, ((0, 0), (0, num_chunks * chunk - num_steps), (0, 0)))
    xs = padded.reshape(batch, num_chunks, chunk, -1).transpose(1, 2, 0, 3)

    def run_chunk(cell, carry, chunk_inputs):
      return scan(step)(cell, carry, chunk_inputs)

    _, ys = scan(nn.remat(run_chunk, prevent_cse=False))(self.cell, carry, xs)
    ys = ys.transpose(2, 0, 1, 3).reshape(batch, num_chunks * chunk, -1)
    return ys[:, :num_steps]


class LSTMBaseline(nn.Module):
  """The paper's baseline: stacked LSTM layers and a dense output layer."""

  features: int
  hidden_features: int = 256
  num_layers: int = 3
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:
    h = inputs
    for layer in range(self.num_layers):
      h = nn.RNN(
          nn.OptimizedLSTMCell(
              self.hidden_features, dtype=self.dtype, param_dtype=self.param_dtype
          ),
          name=f'lstm_{layer}',
      )(h)
    return nn.Dense(
        self.features, dtype=self.dtype, param_dtype=self.param_dtype, name='output'
    )(h).astype(jnp.float32)


def trace_ntm(model: NTM, params, inputs: jax.Array) -> tuple[jax.Array, NTMState]:
  """Runs an `NTM` step by step and returns its logits and the carry after every step.

  Used for the paper's memory/weighting figures: the returned `NTMState` has a time axis
  after the batch axes, e.g. `write_weights` of shape (b, T, W, N).
  """
  cell = model.cell
  cell_params = {'params': params['params']['cell']}
  carry = cell.initialize_carry(jax.random.key(0), inputs[:, 0].shape)

  def step(carry, x):
    carry, y = cell.apply(cell_params, carry, x)
    return carry, (y, carry)

  _, (logits, states) = jax.lax.scan(step, carry, jnp.swapaxes(inputs, 0, 1))
  to_batch_major = lambda a: jnp.swapaxes(a, 0, 1)
  return to_batch_major(logits), jax.tree_util.tree_map(to_batch_major, states)
