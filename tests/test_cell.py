"""NTMCell: the Flax cell contract, shapes, the learned initial state and the step order."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntm_jax
from ntm_jax import NTMCell
from ntm_jax import head_bias_init
from ntm_jax import heads as heads_lib
from ntm_jax import models

B, T, I = 3, 5, 7  # noqa: E741 - the notation's batch, time and input width

CONFIGS = [
    dict(),
    dict(num_read_heads=2, num_write_heads=3),
    dict(shift_range=2),
    dict(controller='feedforward'),
    dict(
        controller='feedforward', controller_layers=2, num_read_heads=4, num_write_heads=4
    ),
    dict(controller_layers=2),
    dict(memory_init='learned'),
    dict(memory_init='random'),
]


@pytest.mark.parametrize(
    'config',
    CONFIGS,
    ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()) or 'defaults',
)
def test_shapes_for_several_configurations(config):
  cell = NTMCell(
      features=4, memory_size=16, word_size=6, controller_features=12, **config
  )
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  model = nn.RNN(cell, return_carry=True)
  params = model.init(jax.random.key(1), xs)
  carry, ys = jax.jit(model.apply)(params, xs)
  assert ys.shape == (B, T, 4)
  reads, writes = cell.num_read_heads, cell.num_write_heads
  assert carry.memory.shape == (B, 16, 6)
  assert carry.read_weights.shape == (B, reads, 16)
  assert carry.write_weights.shape == (B, writes, 16)
  assert carry.reads.shape == (B, reads, 6)
  if cell.controller == 'lstm':
    assert len(carry.controller) == cell.controller_layers
    assert carry.controller[0][0].shape == (B, 12)
  else:
    assert carry.controller == ()
  assert not bool(jnp.any(carry.is_initial))
  np.testing.assert_allclose(jnp.sum(carry.read_weights, -1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(jnp.sum(carry.write_weights, -1), 1.0, rtol=1e-5)
  assert bool(jnp.all(jnp.isfinite(ys)))


def test_rnn_equals_a_python_loop_of_cell_calls():
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  params = nn.RNN(cell).init(jax.random.key(1), xs)
  ys_rnn = nn.RNN(cell).apply(params, xs)
  carry = cell.initialize_carry(jax.random.key(0), (B, I))
  ys_loop = []
  for t in range(T):
    carry, y = cell.apply({'params': params['params']['cell']}, carry, xs[:, t])
    ys_loop.append(y)
  np.testing.assert_allclose(ys_rnn, jnp.stack(ys_loop, axis=1), rtol=1e-5, atol=1e-6)


def test_batch_axes_are_independent_and_vmap_matches():
  # Given a batch, when each example runs alone, then it gets the batched result.
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  model = nn.RNN(cell)
  params = model.init(jax.random.key(1), xs)
  batched = jax.jit(model.apply)(params, xs)
  for b in range(B):
    np.testing.assert_allclose(
        model.apply(params, xs[b : b + 1])[0], batched[b], rtol=1e-5, atol=1e-6
    )
  np.testing.assert_allclose(model.apply(params, xs[0]), batched[0], rtol=1e-5, atol=1e-6)
  two_batch_axes = xs.reshape(1, B, T, I).transpose(1, 0, 2, 3)  # (B, 1, T, I)
  np.testing.assert_allclose(
      model.apply(params, two_batch_axes)[:, 0], batched, rtol=1e-5, atol=1e-6
  )


def test_first_step_uses_the_learned_initial_state():
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  xs = jnp.zeros((2, 1, I))
  params = nn.RNN(cell).init(jax.random.key(1), xs)
  p = params['params']['cell']
  # The initial weightings are focused on slot 0, not uniform: N e^3 / (N e^3 + N - 1).
  w0 = jax.nn.softmax(p['initial_write_weight_logits'], axis=-1)
  assert float(w0[0, 0]) == pytest.approx(16 * np.e**3 / (16 * np.e**3 + 15), rel=1e-5)
  # Changing the learned initial reads changes the first output; a carry that is not
  # initial ignores them.
  p2 = jax.tree_util.tree_map(lambda a: a, p)
  p2['initial_reads'] = p['initial_reads'] + 1.0
  carry = cell.initialize_carry(jax.random.key(0), (2, I))
  _, y1 = cell.apply({'params': p}, carry, xs[:, 0])
  _, y2 = cell.apply({'params': p2}, carry, xs[:, 0])
  assert not np.allclose(y1, y2)
  later = carry._replace(is_initial=jnp.zeros_like(carry.is_initial))
  _, y3 = cell.apply({'params': p}, later, xs[:, 0])
  _, y4 = cell.apply({'params': p2}, later, xs[:, 0])
  np.testing.assert_allclose(y3, y4)


def test_learned_memory_is_a_parameter_and_random_memory_comes_from_the_rng():
  xs = jnp.zeros((2, 3, I))
  learned = NTMCell(features=4, memory_size=16, word_size=6, memory_init='learned')
  params = nn.RNN(learned).init(jax.random.key(1), xs)
  assert params['params']['cell']['initial_memory'].shape == (16, 6)
  random_cell = NTMCell(features=4, memory_size=16, word_size=6, memory_init='random')
  m1 = random_cell.initialize_carry(jax.random.key(1), (2, I)).memory
  m2 = random_cell.initialize_carry(jax.random.key(2), (2, I)).memory
  assert not np.allclose(m1, m2)
  # Its scale is memory_stddev (0.01 by default): 2 * 16 * 6 = 192 draws.
  assert 0.008 < float(jnp.std(m1)) < 0.012
  wide = NTMCell(
      features=4, memory_size=16, word_size=6, memory_init='random', memory_stddev=0.1
  )
  np.testing.assert_allclose(
      wide.initialize_carry(jax.random.key(1), (2, I)).memory, 10 * m1, rtol=1e-5
  )
  constant = NTMCell(features=4, memory_size=16, word_size=6)
  np.testing.assert_array_equal(
      constant.initialize_carry(jax.random.key(1), (2, I)).memory, np.float32(1e-6)
  )
  assert (
      'initial_memory'
      not in nn.RNN(constant).init(jax.random.key(1), xs)['params']['cell']
  )


def test_the_ntm_draws_a_random_memory_from_the_memory_rng_and_a_fixed_one_without():
  xs = jax.random.normal(jax.random.key(0), (2, 3, I))
  cell = NTMCell(features=4, memory_size=16, word_size=6, memory_init='random')
  model = models.NTM(cell)
  params = model.init(jax.random.key(1), xs)
  with_key = lambda k: model.apply(params, xs, rngs={'memory': jax.random.key(k)})
  np.testing.assert_array_equal(with_key(5), with_key(5))
  assert not np.allclose(with_key(5), with_key(6))
  # Without a 'memory' rng (evaluation, figures) the carry is initialize_carry(key(0))'s.
  np.testing.assert_array_equal(
      model.apply(params, xs), nn.RNN(cell).apply(params, xs, init_key=jax.random.key(0))
  )


def _rows_written(cell: NTMCell) -> tuple[np.ndarray, np.ndarray]:
  """(rows a step changed, rows its write weighting covers), each (B, N).

  The cell keeps each head's previous weighting instead of addressing: the paper's
  weightings are softmaxes, positive everywhere, so only an injected one has exact zeros.
  """
  keep_focus = lambda memory, w_prev, *head_parameters: w_prev
  cell = cell.clone(address_fn=keep_focus)
  x = jax.random.normal(jax.random.key(0), (B, I))
  carry = cell.initialize_carry(jax.random.key(0), (B, I))
  params = cell.init(jax.random.key(1), carry, x)
  w = np.zeros(carry.write_weights.shape, np.float32)  # (B, 1, N)
  w[0, 0, 5] = 1.0
  w[1, 0, [2, 9]] = 0.5
  w[2, 0, [0, 1, 14, 15]] = 0.25
  memory = jax.random.normal(jax.random.key(2), carry.memory.shape)
  carry = carry._replace(
      memory=memory,
      write_weights=jnp.asarray(w),
      is_initial=jnp.zeros_like(carry.is_initial),
  )
  new_carry, _ = cell.apply(params, carry, x)
  np.testing.assert_array_equal(new_carry.write_weights, w)  # the injected addressing
  return np.asarray(jnp.any(new_carry.memory != memory, axis=-1)), w[:, 0] > 0


def test_a_step_writes_memory_only_where_the_write_weighting_is_nonzero():
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  changed, written = _rows_written(cell)
  np.testing.assert_array_equal(changed, written)
  # The check fails for a write that leaks into rows its weighting leaves out.
  leaky = lambda memory, w, erase, add: ntm_jax.write_heads(memory, w + 1e-3, erase, add)
  changed, written = _rows_written(cell.clone(write_fn=leaky))
  assert (changed & ~written).any()


def test_reads_see_the_write_of_the_same_step():
  # Order within a step: write heads first, then the read heads read M_t.
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  x = jax.random.normal(jax.random.key(0), (1, I))
  carry = cell.initialize_carry(jax.random.key(0), (1, I))
  params = cell.init(jax.random.key(1), carry, x)
  new_carry, _ = cell.apply(params, carry, x)
  expected = jnp.einsum('bhn,bnm->bhm', new_carry.read_weights, new_carry.memory)
  np.testing.assert_allclose(new_carry.reads, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    'field,value,message',
    [
        ('memory_size', 0, 'memory_size must be a positive integer'),
        ('num_read_heads', -1, 'num_read_heads must be a positive integer'),
        ('controller', 'gru', "controller must be one of \\('lstm', 'feedforward'\\)"),
        ('memory_init', 'zeros', 'memory_init must be one of'),
        ('memory_stddev', -0.1, 'memory_stddev must be a finite number >= 0'),
        (
            'shift_range',
            8,
            'shift_range=8 needs 2 \\* shift_range \\+ 1 <= memory_size=16',
        ),
        ('residual_packing', 'sometimes', 'residual_packing must be one of'),
    ],
)
def test_bad_fields_raise_clear_errors(field, value, message):
  with pytest.raises(ValueError, match=message):
    NTMCell(features=4, **{'memory_size': 16, field: value})


def test_the_head_layout_names_every_entry_of_the_head_layer_once():
  layout = NTMCell(
      features=3,
      memory_size=16,
      word_size=6,
      num_read_heads=2,
      num_write_heads=3,
      shift_range=2,
  ).head_layout
  covered = []
  for is_write in (False, True):
    for field in layout.field_sizes(is_write):
      covered += np.ravel(layout.indices(field, is_write)).tolist()
  # Read heads of 6 + 5 + 3 entries, write heads of 3 * 6 + 5 + 3.
  assert sorted(covered) == list(range(layout.size)) == list(range(2 * 14 + 3 * 26))
  np.testing.assert_array_equal(
      layout.indices('shift', True, 1), 2 * 14 + np.array([0, 26, 52]) + 6 + 2 + 3
  )  # key, beta and gate, then offsets -2, -1, 0, +1
  with pytest.raises(ValueError, match='offset out of range'):
    layout.indices('shift', True, 3)
  with pytest.raises(ValueError, match="unknown field 'erase'"):
    head_bias_init(layout, read={'erase': 1.0})  # read heads have no erase vector


@pytest.mark.parametrize('shift_range', [1, 2])
def test_a_head_bias_starts_the_write_heads_writing_one_slot_after_another(shift_range):
  # The gate and the +1 shift of each write head start at -b and +b (worked out by hand:
  # sigmoid(-4) = 0.018, e^4 / (e^4 + 2R) = 0.965 for R = 1 and 0.932 for R = 2), every
  # other head parameter at zero; so, from the learned start on slot 0, the write heads'
  # focus moves on by one slot per step whatever the input, and the read heads'
  # parameters are untouched.
  b, n = 4.0, 32
  plain = NTMCell(
      features=3,
      memory_size=n,
      word_size=6,
      num_read_heads=2,
      num_write_heads=3,
      controller_features=12,
      shift_range=shift_range,
      memory_init='learned',
  )
  layout = plain.head_layout
  advancing = plain.clone(
      head_bias_init=head_bias_init(layout, write={'gate': -b, ('shift', 1): b})
  )
  xs = jax.random.normal(jax.random.key(2), (1, 12, I))
  carry = plain.initialize_carry(jax.random.key(0), (1, I))
  params = {
      cell: cell.init(jax.random.key(1), carry, xs[:, 0]) for cell in (plain, advancing)
  }

  def heads(p):  # the head parameters for a zero controller output: the biases alone
    raw_read, raw_write = layout.split(p['params']['heads']['bias'])
    return (
        heads_lib.split_head_parameters(raw_read, layout, False),
        heads_lib.split_head_parameters(raw_write, layout, True),
    )

  (read0, write0), (read, write) = heads(params[plain]), heads(params[advancing])
  np.testing.assert_allclose(write.gate, 1 / (1 + np.exp(b)), rtol=1e-6)
  forward = np.exp(b) / (np.exp(b) + 2 * shift_range)
  np.testing.assert_allclose(write.shift_weights[:, shift_range + 1], forward, rtol=1e-6)
  for name in ('key', 'beta', 'gamma', 'erase', 'add'):
    np.testing.assert_array_equal(getattr(write, name), getattr(write0, name))
  for name in ('key', 'beta', 'gate', 'shift_weights', 'gamma'):
    np.testing.assert_array_equal(getattr(read, name), getattr(read0, name))
  np.testing.assert_array_equal(write0.gate, 0.5)  # by default: all biases 0

  focus = []
  for t in range(xs.shape[1]):
    carry, _ = advancing.apply(params[advancing], carry, xs[:, t])
    focus.append(np.asarray(carry.write_weights[0]).argmax(-1))  # (W,) per step
  np.testing.assert_array_equal(np.stack(focus), np.arange(1, 13)[:, None] * [1, 1, 1])
  assert float(carry.write_weights.max(-1).min()) > 0.9  # still sharp after 12 steps


def test_bfloat16_computation_keeps_a_float32_carry_and_gradients():
  cell = NTMCell(
      features=4, memory_size=16, word_size=6, controller_features=12, dtype=jnp.bfloat16
  )
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  model = nn.RNN(cell, return_carry=True)
  params = model.init(jax.random.key(1), xs)
  carry, ys = model.apply(params, xs)
  assert carry.memory.dtype == jnp.float32 and ys.dtype == jnp.bfloat16
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
  grads = jax.grad(lambda p: jnp.sum(model.apply(p, xs)[1].astype(jnp.float32)))(params)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))


def test_trace_ntm_returns_the_states_of_every_step():
  model = models.NTM(NTMCell(features=4, memory_size=16, word_size=6))
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  params = model.init(jax.random.key(1), xs)
  logits, states = models.trace_ntm(model, params, xs)
  np.testing.assert_allclose(logits, model.apply(params, xs), rtol=1e-5, atol=1e-6)
  assert states.write_weights.shape == (B, T, 1, 16)
  assert states.memory.shape == (B, T, 16, 6)


@pytest.mark.parametrize('remat_chunk', [0, 1])
def test_the_ntm_records_every_steps_weightings_only_when_asked(remat_chunk):
  # Given an NTM with 2 read and 3 write heads, keeping every intermediate (0) or only the
  # carries (1), when applied with 'intermediates' mutable, then it returns the same
  # outputs and the weightings trace_ntm sees at every step; a plain apply records
  # nothing, and the chunked remat path refuses to record.
  cell = NTMCell(
      features=4, memory_size=16, word_size=6, num_read_heads=2, num_write_heads=3
  )
  model = models.NTM(cell, remat_chunk=remat_chunk)
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  params = model.init(jax.random.key(1), xs)
  assert set(params) == {'params'}
  logits, variables = model.apply(params, xs, mutable=['intermediates'])
  np.testing.assert_array_equal(logits, model.apply(params, xs))
  _, states = models.trace_ntm(model, params, xs)
  recorded = variables['intermediates']['cell']
  assert recorded['read_weights'][0].shape == (B, T, 2, 16)
  np.testing.assert_allclose(recorded['read_weights'][0], states.read_weights, atol=1e-6)
  np.testing.assert_allclose(
      recorded['write_weights'][0], states.write_weights, atol=1e-6
  )
  with pytest.raises(ValueError, match='only with remat_chunk=0 or 1'):
    models.NTM(cell, remat_chunk=2).apply(params, xs, mutable=['intermediates'])


def test_public_api():
  for name in (
      'NTMCell',
      'NTMState',
      'HeadLayout',
      'head_bias_init',
      'content_weights',
      'interpolate',
      'shift',
      'sharpen',
      'address',
      'read',
      'write',
      'write_heads',
  ):
    assert hasattr(ntm_jax, name)
  assert issubclass(ntm_jax.NTMCell, nn.RNNCellBase)
  assert NTMCell(features=3).num_feature_axes == 1


@pytest.mark.parametrize(
    'chunk', [1] + [pytest.param(k, marks=pytest.mark.slow) for k in (2, 4, 11, 16)]
)
def test_rematerialisation_equals_the_plain_scan(chunk):
  # Given the same parameters, when the backward pass recomputes each step (1) or time is
  # scanned in rematerialised chunks (including a chunk that does not divide T and one
  # longer than T), then outputs and gradients match the scan that keeps everything (0).
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  xs = jax.random.normal(jax.random.key(0), (B, 11, I))
  plain, chunked = models.NTM(cell, remat_chunk=0), models.NTM(cell, remat_chunk=chunk)
  params = plain.init(jax.random.key(1), xs)
  assert jax.tree_util.tree_structure(
      chunked.init(jax.random.key(1), xs)
  ) == jax.tree_util.tree_structure(params)
  np.testing.assert_allclose(
      chunked.apply(params, xs), plain.apply(params, xs), rtol=1e-5, atol=1e-6
  )
  loss = lambda model: lambda p: jnp.sum(jnp.square(model.apply(p, xs)))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      jax.grad(loss(plain))(params),
      jax.grad(loss(chunked))(params),
  )


@pytest.mark.parametrize('remat_chunk', [-1, 1.5, True])
def test_a_bad_remat_chunk_is_named_in_the_error(remat_chunk):
  with pytest.raises(ValueError, match='NTM.remat_chunk must be an integer >= 0'):
    models.NTM(NTMCell(features=3), remat_chunk=remat_chunk)


def test_a_rematerialised_cell_in_nn_rnn_gives_the_same_gradients():
  # Given the README's recipe for one's own models, nn.RNN(nn.remat(NTMCell)(...)), when
  # differentiated, then it has the plain cell's parameters and gradients.
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  plain = nn.RNN(NTMCell(features=3, memory_size=16, word_size=4))
  remat = nn.RNN(nn.remat(NTMCell)(features=3, memory_size=16, word_size=4))
  params = plain.init(jax.random.key(1), xs)
  assert jax.tree_util.tree_structure(
      remat.init(jax.random.key(1), xs)
  ) == jax.tree_util.tree_structure(params)
  loss = lambda model: lambda p: jnp.sum(jnp.square(model.apply(p, xs)))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
      jax.grad(loss(plain))(params),
      jax.grad(loss(remat))(params),
  )


def _loop_gradients(cell, params, xs, carry_gradient):
  """Gradients of a Python loop of cell steps, with `carry_gradient` applied to the
  gradient flowing back into each step through the carry (an independent unroll)."""

  @jax.custom_vjp
  def through(carry):
    return carry

  through.defvjp(
      lambda carry: (carry, None),
      lambda _, g: (jax.tree_util.tree_map(carry_gradient, g),),
  )

  def loss(cell_params):
    carry = cell.initialize_carry(jax.random.key(0), xs[:, 0].shape)
    total = 0.0
    for t in range(xs.shape[1]):
      carry, y = cell.apply({'params': cell_params}, carry, xs[:, t])
      flags = carry.is_initial
      carry = through(carry._replace(is_initial=None))._replace(is_initial=flags)
      total += jnp.sum(jnp.square(y))
    return total

  return jax.grad(loss)(params['params']['cell'])


@pytest.mark.parametrize('bound', [1e-3, 0.05])
def test_carry_grad_clip_clips_the_gradient_through_the_carry_and_nothing_else(bound):
  # Given the same parameters with and without the clip, then the outputs are the same,
  # and the gradients are those of an unroll whose carry gradient is clipped by hand,
  # which differ from the unclipped ones (the bounds are small enough to bite).
  cell = NTMCell(
      features=4,
      memory_size=16,
      word_size=6,
      controller_features=12,
      memory_init='learned',
  )
  plain = models.NTM(cell, remat_chunk=0)
  clipped = models.NTM(cell, remat_chunk=0, carry_grad_clip=bound)
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  params = plain.init(jax.random.key(1), xs)
  np.testing.assert_array_equal(plain.apply(params, xs), clipped.apply(params, xs))
  loss = lambda model: lambda p: jnp.sum(jnp.square(model.apply(p, xs)))
  got = jax.grad(loss(clipped))(params)['params']['cell']
  expected = _loop_gradients(cell, params, xs, lambda g: jnp.clip(g, -bound, bound))
  unclipped = jax.grad(loss(plain))(params)['params']['cell']
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7), got, expected
  )
  differs = jax.tree_util.tree_map(
      lambda a, b: bool(jnp.any(jnp.abs(a - b) > 1e-4)), got, unclipped
  )
  assert differs['initial_memory'] and differs['heads']['kernel']


def test_a_carry_grad_clip_above_every_gradient_changes_nothing():
  cell = NTMCell(features=4, memory_size=16, word_size=6, controller_features=12)
  xs = jax.random.normal(jax.random.key(0), (B, T, I))
  params = models.NTM(cell).init(jax.random.key(1), xs)
  loss = lambda model: lambda p: jnp.sum(jnp.square(model.apply(p, xs)))
  jax.tree_util.tree_map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8),
      jax.grad(loss(models.NTM(cell)))(params),
      jax.grad(loss(models.NTM(cell, carry_grad_clip=1e6)))(params),
  )


@pytest.mark.parametrize('bound', [-1.0, float('inf')])
def test_a_bad_carry_grad_clip_is_named_in_the_error(bound):
  with pytest.raises(
      ValueError, match='NTM.carry_grad_clip must be a finite number >= 0'
  ):
    models.NTM(NTMCell(features=3), carry_grad_clip=bound)
