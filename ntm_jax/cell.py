"""`NTMCell`: the Neural Turing Machine as a Flax linen recurrent cell (paper Sec. 3).

The cell follows Flax's own cell contract (`nn.RNNCellBase`): `__call__(carry, x)`
returns `(carry, y)`, `initialize_carry(rng, input_shape)` builds the first carry, and
`num_feature_axes == 1`, so `nn.RNN(NTMCell(features=8))(xs)` unrolls it over time with
`jax.lax.scan` exactly like `nn.OptimizedLSTMCell`.

Notation: b = batch, N = memory slots (`memory_size`), M = slot width (`word_size`),
R = read heads, W = write heads, S = 2 * shift_range + 1 shift offsets.
"""

from collections.abc import Callable
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ntm_jax import addressing
from ntm_jax import heads
from ntm_jax import memory as memory_ops
from ntm_jax import residuals

CONTROLLERS = ('lstm', 'feedforward')
MEMORY_INITS = ('constant', 'learned', 'random')
RESIDUAL_PACKINGS = ('auto', 'always', 'never')
# Collier & Beel (2018): a small constant memory converges about 2x faster than a learned
# or random one.
CONSTANT_MEMORY_VALUE = 1e-6
# The learned initial weightings start focused on slot 0: logit log(N) + 3 there and 0
# elsewhere puts N e^3 / (N e^3 + N - 1), about 95%, of the weight on slot 0 for any N. A uniform
# initial weighting over a constant memory makes every slot look alike and learning stalls.
INITIAL_FOCUS_MARGIN = 3.0


class NTMState(NamedTuple):
  """The carry of `NTMCell`; every leaf has the batch axes first.

  Attributes:
    memory: (b, N, M) memory matrix M_t.
    read_weights: (b, R, N) read weightings w_t of the read heads.
    write_weights: (b, W, N) write weightings w_t of the write heads.
    reads: (b, R, M) read vectors r_t, fed to the controller at the next step.
    controller: the controller's state: for an LSTM controller a tuple with one
      (c, h) pair of (b, controller_features) arrays per layer; () for feed-forward.
    is_initial: (b,) bool, True until the cell's first step. On that step the cell
      replaces the weightings, reads, controller state (and memory, when it is learned)
      by its learned initial values, the paper's per-sequence reset to learned biases.
  """

  memory: jax.Array
  read_weights: jax.Array
  write_weights: jax.Array
  reads: jax.Array
  controller: Any
  is_initial: jax.Array


def _initial_focus(key, shape, dtype=jnp.float32):
  """Logits whose softmax puts about 95% of each head's weight on slot 0 (see above)."""
  del key
  num_slots = shape[-1]
  margin = jnp.log(num_slots) + INITIAL_FOCUS_MARGIN
  return jnp.zeros(shape, dtype).at[..., 0].set(margin)


class NTMCell(nn.RNNCellBase):
  r"""A Neural Turing Machine cell: a controller with read and write heads on a memory.

  One step, for input x_t and the carry of step t - 1 (the read/write order, documented
  in BUILD_NOTES.md):

  1. controller: h_t = controller([x_t, r_{t-1}]) (an LSTM stack or a feed-forward net);
  2. one fused dense layer maps h_t to every head's parameters (k, beta, g, s, gamma and,
     for write heads, e and a);
  3. write heads address M_{t-1} (Eq. 5-9) and write it: erases multiply, adds sum
     (Eq. 3-4), giving M_t;
  4. read heads address M_t (Eq. 5-9) and read r_t (Eq. 2), so what was written at step t
     can be read at step t;
  5. output y_t = Dense([h_t, r_t]): unnormalised (logits; apply a sigmoid or softmax).

  Example usage::

    >>> import flax.linen as nn, jax, jax.numpy as jnp
    >>> from ntm_jax import NTMCell
    >>> xs = jnp.ones((4, 12, 9))  # (batch, time, input features)
    >>> model = nn.RNN(NTMCell(features=8, memory_size=32))
    >>> params = model.init(jax.random.key(0), xs)
    >>> model.apply(params, xs).shape
    (4, 12, 8)

  Attributes:
    features: size of the output y_t.
    memory_size: N, the number of memory slots.
    word_size: M, the width of a slot.
    num_read_heads: number of read heads.
    num_write_heads: number of write heads.
    controller: 'lstm' (stacked `nn.OptimizedLSTMCell`) or 'feedforward' (dense + tanh).
    controller_features: width of each controller layer.
    controller_layers: number of controller layers.
    shift_range: R, the largest shift offset; 2R + 1 <= memory_size.
    memory_init: 'constant' (1e-6 everywhere, Collier & Beel 2018), 'learned' (a
      parameter, reset to at the start of each sequence) or 'random' (drawn per sequence
      in `initialize_carry` from its rng, normal with stddev `memory_stddev`;
      `models.NTM` takes that rng from its 'memory' rng stream, which the training step
      sets per step).
    memory_stddev: the scale of the random memory, and of the learned memory's starting
      value.
    head_bias_init: initializer of the fused head layer's bias, a vector laid out as
      `self.head_layout` says (zero by default). `head_bias_init(layout, read=...,
      write=...)` starts chosen head parameters elsewhere, e.g. write heads that start
      by writing one slot after another.
    dtype: dtype of the dense computations (e.g. jnp.bfloat16 on accelerators). The
      carry, including the memory and the addressing, stays float32.
    param_dtype: dtype of the parameters.
    residual_packing: the backward pass's saved values as one buffer per dtype
      ('always', `residuals.pack_residuals`: one write per time step on a GPU, not about
      a hundred), as JAX saves them ('never'), or 'auto': packed where the step is traced
      for a GPU backend (docs/BENCHMARKS.md); a deviceless GPU compile needs 'always'.
    address_fn, read_fn, write_fn: the equations, as pure single-example functions with
      the signatures of `addressing.address` (Eq. 5-9), `memory.read` (Eq. 2) and
      `memory.write_heads` (Eq. 3-4), which the cell vmaps over heads and the batch.
      Pass a variant to study it (an ablation, or a deliberately broken equation in a
      test) without patching the library.
  """

  features: int
  memory_size: int = 128
  word_size: int = 20
  num_read_heads: int = 1
  num_write_heads: int = 1
  controller: str = 'lstm'
  controller_features: int = 100
  controller_layers: int = 1
  shift_range: int = 1
  memory_init: str = 'constant'
  memory_stddev: float = 0.01
  head_bias_init: Callable[..., jax.Array] = nn.initializers.zeros_init()
  dtype: Any = None
  param_dtype: Any = jnp.float32
  residual_packing: str = 'auto'
  address_fn: Callable[..., jax.Array] = addressing.address
  read_fn: Callable[..., jax.Array] = memory_ops.read
  write_fn: Callable[..., jax.Array] = memory_ops.write_heads

  def __post_init__(self):
    positive = (
        'features',
        'memory_size',
        'word_size',
        'num_read_heads',
        'num_write_heads',
        'controller_features',
        'controller_layers',
    )
    for name in positive:
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'NTMCell.{name} must be a positive integer, got {value!r}.')
    if not isinstance(self.shift_range, int) or self.shift_range < 0:
      raise ValueError(
          f'NTMCell.shift_range must be a non-negative integer, got {self.shift_range!r}.'
      )
    if 2 * self.shift_range + 1 > self.memory_size:
      raise ValueError(
          f'NTMCell.shift_range={self.shift_range} needs 2 * shift_range + 1 <= '
          f'memory_size={self.memory_size}.'
      )
    if self.controller not in CONTROLLERS:
      raise ValueError(
          f'NTMCell.controller must be one of {CONTROLLERS}, got {self.controller!r}.'
      )
    if not 0 <= self.memory_stddev < float('inf'):
      raise ValueError(
          f'NTMCell.memory_stddev must be a finite number >= 0, got '
          f'{self.memory_stddev!r}.'
      )
    if self.memory_init not in MEMORY_INITS:
      raise ValueError(
          f'NTMCell.memory_init must be one of {MEMORY_INITS}, got {self.memory_init!r}.'
      )
    if self.residual_packing not in RESIDUAL_PACKINGS:
      raise ValueError(
          f'NTMCell.residual_packing must be one of {RESIDUAL_PACKINGS}, got '
          f'{self.residual_packing!r}.'
      )
    super().__post_init__()

  @property
  def num_feature_axes(self) -> int:
    return 1

  @property
  def head_layout(self) -> heads.HeadLayout:
    """Where each head parameter sits in the fused head layer's output."""
    return heads.HeadLayout(
        self.num_read_heads,
        self.num_write_heads,
        self.word_size,
        2 * self.shift_range + 1,
    )

  @nn.nowrap
  def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> NTMState:
    """The carry before the first step, for inputs of shape (*batch, input_size).

    Everything but the memory is a placeholder that the first step replaces by the
    learned initial values (see `NTMState.is_initial`). The memory is the constant 1e-6
    (or, for memory_init='random', drawn from `rng`).
    """
    batch = tuple(input_shape[:-1])
    n, m = self.memory_size, self.word_size
    if self.memory_init == 'random':
      memory = self.memory_stddev * jax.random.normal(rng, batch + (n, m), jnp.float32)
    else:
      memory = jnp.full(batch + (n, m), CONSTANT_MEMORY_VALUE, jnp.float32)
    if self.controller == 'lstm':
      zeros = jnp.zeros(batch + (self.controller_features,), jnp.float32)
      controller = tuple((zeros, zeros) for _ in range(self.controller_layers))
    else:
      controller = ()
    return NTMState(
        memory=memory,
        read_weights=jnp.zeros(batch + (self.num_read_heads, n), jnp.float32),
        write_weights=jnp.zeros(batch + (self.num_write_heads, n), jnp.float32),
        reads=jnp.zeros(batch + (self.num_read_heads, m), jnp.float32),
        controller=controller,
        is_initial=jnp.ones(batch, jnp.bool_),
    )

  def __call__(self, carry: NTMState, x: jax.Array) -> tuple[NTMState, jax.Array]:
    """One step of the machine for inputs x of shape (*batch, input_size)."""
    if self.is_initializing() or not self._packs_residuals():
      new_carry, y = self._step(carry, x)  # initialising creates the parameters here
    else:
      new_carry, y = self._packed_step(carry, x)
    if self.is_mutable_collection('intermediates'):
      # Only when asked (mutable=['intermediates']): for the entropy penalty and figures.
      self.sow('intermediates', 'read_weights', new_carry.read_weights)
      self.sow('intermediates', 'write_weights', new_carry.write_weights)
    return new_carry, y

  def _packs_residuals(self) -> bool:
    if self.residual_packing == 'auto':
      # At trace time: `lax.platform_dependent` would trace both steps in every compile.
      return jax.default_backend() in ('gpu', 'cuda', 'rocm')
    return self.residual_packing == 'always'

  def _packed_step(self, carry: NTMState, x: jax.Array) -> tuple[NTMState, jax.Array]:
    """`_step` as a pure function of the parameters, its residuals packed."""
    cell = self.clone(parent=None)
    step = lambda params, carry, x: cell.apply(
        {'params': params}, carry, x, method=NTMCell._step
    )
    packed = residuals.pack_residuals(step, invariant_argnums=(0,))
    return packed(self.variables['params'], carry, x)

  @nn.compact
  def _step(self, carry: NTMState, x: jax.Array) -> tuple[NTMState, jax.Array]:
    """`__call__`'s step as written: the parameters are created here."""
    batch = x.shape[:-1]
    # The pure functions are vmapped over one batch axis: flatten any others.
    flat = lambda a: a.reshape((-1,) + a.shape[len(batch) :])
    unflat = lambda a: a.reshape(batch + a.shape[1:])
    carry = self._reset_to_learned_initial_state(jax.tree_util.tree_map(flat, carry))
    x = flat(x)

    controller_input = jnp.concatenate(
        [x, carry.reads.reshape(x.shape[0], -1).astype(x.dtype)], axis=-1
    )
    controller_state, h = self._controller(carry.controller, controller_input)

    read_params, write_params = self._head_parameters(h)
    # The single-example equations, over heads (which share the memory), then the batch.
    address = jax.vmap(jax.vmap(self.address_fn, in_axes=(None, 0, 0, 0, 0, 0, 0)))
    write_weights = address(carry.memory, carry.write_weights, *write_params[:5])
    memory = jax.vmap(self.write_fn)(
        carry.memory, write_weights, write_params.erase, write_params.add
    )
    read_weights = address(memory, carry.read_weights, *read_params[:5])
    reads = jax.vmap(jax.vmap(self.read_fn, in_axes=(None, 0)))(memory, read_weights)

    y = nn.Dense(
        self.features, dtype=self.dtype, param_dtype=self.param_dtype, name='output'
    )(jnp.concatenate([h, reads.reshape(x.shape[0], -1).astype(h.dtype)], axis=-1))
    new_carry = NTMState(
        memory=memory,
        read_weights=read_weights,
        write_weights=write_weights,
        reads=reads,
        controller=controller_state,
        is_initial=jnp.zeros_like(carry.is_initial),
    )
    return jax.tree_util.tree_map(unflat, new_carry), unflat(y)

  def _reset_to_learned_initial_state(self, carry: NTMState) -> NTMState:
    """Where `is_initial`, swaps in the learned initial values (paper Sec. 4)."""
    n, m = self.memory_size, self.word_size
    fresh = carry.is_initial
    select = lambda learned, current: jnp.where(
        fresh.reshape((-1,) + (1,) * (current.ndim - 1)),
        learned.astype(current.dtype),
        current,
    )
    read_logits = self.param(
        'initial_read_weight_logits',
        _initial_focus,
        (self.num_read_heads, n),
        self.param_dtype,
    )
    write_logits = self.param(
        'initial_write_weight_logits',
        _initial_focus,
        (self.num_write_heads, n),
        self.param_dtype,
    )
    reads = self.param(
        'initial_reads', nn.initializers.zeros, (self.num_read_heads, m), self.param_dtype
    )
    memory = carry.memory
    if self.memory_init == 'learned':
      learned_memory = self.param(
          'initial_memory',
          lambda k, s, d: CONSTANT_MEMORY_VALUE
          + self.memory_stddev * jax.random.normal(k, s, d),
          (n, m),
          self.param_dtype,
      )
      memory = select(learned_memory, memory)
    controller = tuple(
        (
            select(
                self.param(
                    f'initial_controller_c_{layer}',
                    nn.initializers.zeros,
                    (self.controller_features,),
                    self.param_dtype,
                ),
                c,
            ),
            select(
                self.param(
                    f'initial_controller_h_{layer}',
                    nn.initializers.zeros,
                    (self.controller_features,),
                    self.param_dtype,
                ),
                h,
            ),
        )
        for layer, (c, h) in enumerate(carry.controller)
    )
    return carry._replace(
        memory=memory,
        read_weights=select(jax.nn.softmax(read_logits, axis=-1), carry.read_weights),
        write_weights=select(jax.nn.softmax(write_logits, axis=-1), carry.write_weights),
        reads=select(reads, carry.reads),
        controller=controller,
    )

  def _controller(self, state, inputs: jax.Array):
    """Runs the controller; returns its new (float32) state and its output h_t."""
    dense = functools.partial(
        nn.Dense, self.controller_features, dtype=self.dtype, param_dtype=self.param_dtype
    )
    if self.controller == 'feedforward':
      h = inputs
      for layer in range(self.controller_layers):
        h = jnp.tanh(dense(name=f'controller_{layer}')(h))
      return (), h
    new_state, h = [], inputs
    for layer, (c, h_prev) in enumerate(state):
      (c, h_prev), h = nn.OptimizedLSTMCell(
          self.controller_features,
          dtype=self.dtype,
          param_dtype=self.param_dtype,
          name=f'controller_{layer}',
      )((c, h_prev), h)
      # The carry stays float32 so that its dtype is the same at every step of a scan.
      new_state.append((c.astype(jnp.float32), h_prev.astype(jnp.float32)))
    return tuple(new_state), h

  def _head_parameters(
      self, h: jax.Array
  ) -> tuple[heads.HeadParameters, heads.HeadParameters]:
    """One fused dense layer for all heads (one matmul instead of one per parameter)."""
    layout = self.head_layout
    raw = nn.Dense(
        layout.size,
        dtype=self.dtype,
        param_dtype=self.param_dtype,
        bias_init=self.head_bias_init,
        name='heads',
    )(h).astype(jnp.float32)
    raw_read, raw_write = layout.split(raw)
    return (
        heads.split_head_parameters(raw_read, layout, is_write=False),
        heads.split_head_parameters(raw_write, layout, is_write=True),
    )
