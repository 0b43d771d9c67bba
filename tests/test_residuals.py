"""Packed residuals: the same values and gradients, one buffer per dtype saved per step."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntm_jax import NTMCell
from ntm_jax import residuals
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import factory
from ntm_jax.training import optim
from ntm_jax.training import train_state
from tests.test_cell import CONFIGS


def _step(params, carry, x):
  """A small recurrent step with many residuals, one of them from the parameters alone."""
  w, gain = params
  h, count = carry
  gate = jax.nn.sigmoid(jnp.sum(h) * gain)
  scaled = jnp.tanh(gain) * w.T  # depends on the parameters only
  h = gate * jnp.tanh(w @ h + x) + (1 - gate) * jnp.sin(scaled @ h)
  return (jax.nn.softmax(h), count + 1), jnp.cos(h)


def _scan_loss(step, params, xs):
  carry = (jnp.ones(4) / 4, jnp.int32(0))
  (h, _), ys = jax.lax.scan(lambda c, x: step(params, c, x), carry, xs)
  return jnp.sum(ys**2) + jnp.sum(h)


def _params():
  return jax.random.normal(jax.random.key(0), (4, 4)), jnp.float32(0.7)


def test_packed_residuals_give_the_same_values_and_gradients():
  xs = jax.random.normal(jax.random.key(1), (6, 4))
  for step in (_step, residuals.pack_residuals(_step, invariant_argnums=(0,))):
    grad = jax.value_and_grad(functools.partial(_scan_loss, step), argnums=(0, 1))
    got = jax.jit(grad)(_params(), xs), jax.jit(jax.vmap(grad, in_axes=(None, 0)))(
        _params(), jnp.stack([xs, -xs])
    )
    if step is _step:
      expected = got
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), got, expected
  )


def test_a_scan_saves_one_buffer_per_step_and_keeps_parameter_residuals_outside():
  xs = jnp.zeros((6, 4))

  def forward_scan_outputs(step):
    jaxpr = jax.make_jaxpr(jax.grad(functools.partial(_scan_loss, step)))(_params(), xs)
    scans = [eqn for eqn in jaxpr.jaxpr.eqns if eqn.primitive.name == 'scan']
    forward = scans[0]  # the backward scan comes after it
    stacked = [v.aval for v in forward.outvars[forward.params['num_carry'] :]]
    return [aval for aval in stacked if aval.shape[:1] == (6,)]

  plain = forward_scan_outputs(_step)
  packed = forward_scan_outputs(residuals.pack_residuals(_step, invariant_argnums=(0,)))
  # The step's own output ys (6, 4) and one float32 buffer; JAX alone stacks each value.
  assert sorted(str(a.dtype) for a in packed) == ['float32', 'float32']
  assert len(plain) > 4
  # The (4, 4) residual computed from the parameters alone is not stacked per step.
  assert all(aval.shape[1:] != (4, 4) for aval in packed)
  # Declared varying, the parameters' residual is packed into the per-step buffer.
  everything = forward_scan_outputs(residuals.pack_residuals(_step))
  assert max(a.size for a in everything) > max(a.size for a in packed) + 15


@pytest.mark.parametrize(
    'config',
    CONFIGS,
    ids=lambda c: ','.join(f'{k}={v}' for k, v in c.items()) or 'defaults',
)
def test_the_cells_packed_step_has_the_plain_steps_gradients(config):
  cell = NTMCell(
      features=4,
      memory_size=16,
      word_size=6,
      controller_features=12,
      residual_packing='always',
      **config,
  )
  xs = jax.random.normal(jax.random.key(0), (3, 5, 7))
  params = nn.RNN(cell).init(jax.random.key(1), xs)

  def loss(cell, params):
    return jnp.sum(jnp.sin(nn.RNN(cell).apply(params, xs)))

  expected = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(
      cell.clone(residual_packing='never'), params
  )
  got = jax.jit(jax.value_and_grad(loss, argnums=1), static_argnums=0)(cell, params)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), got, expected
  )


@pytest.mark.slow
def test_three_hundred_copy_steps_with_packed_residuals_follow_the_plain_ones():
  # The copy experiment's recipe, storing every intermediate (its remat_chunk).
  config = ExperimentConfig(
      workdir='/unused',
      batch_size=1,
      learning_rate=1e-4,
      optimizer='rmsprop',
      clip=10.0,
      clip_mode='elementwise',
      controller='lstm',
      memory_init='random',
      memory_stddev=0.3,
      entropy_penalty=0.005,
      remat_chunk=0,
  )
  task = CopyTask(max_length=20)
  keys = train_state.Keys(3)
  optimizer = optim.make_optimizer(config)
  states = {}
  for name, packing in (('plain', 'never'), ('packed', 'always')):
    model = factory.build_model(config, task)
    model = model.clone(cell=model.cell.clone(residual_packing=packing))
    state = train_state.create_train_state(model, optimizer, task, keys)
    step = train_state.make_train_step(
        model, optimizer, task, 1, keys.data, entropy_penalty=config.entropy_penalty
    )
    for _ in range(300):
      state, metrics = step(state)
    states[name] = state
  assert float(metrics['cost']) < 60  # it has learned something in 300 steps
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4),
      states['packed'].params,
      states['plain'].params,
  )


@pytest.mark.parametrize(
    'backend, packs', [('cpu', False), ('tpu', False), ('gpu', True)]
)
def test_automatic_packing_packs_where_the_step_is_traced_for_a_gpu(
    monkeypatch, backend, packs
):
  # 'auto' decides at trace time, so a CPU compile traces the plain step alone.
  monkeypatch.setattr(jax, 'default_backend', lambda: backend)
  xs = jnp.ones((1, 9, 5))
  model = nn.RNN(NTMCell(features=4, memory_size=16, word_size=6, controller_features=12))
  params = model.init(jax.random.key(0), xs)
  jaxpr = jax.make_jaxpr(model.apply)(params, xs)
  assert ('custom_vjp_call' in str(jaxpr)) == packs


def test_one_packed_function_used_at_two_shapes_in_one_gradient():
  # Both forward passes are traced before either backward pass: each keeps its layout.
  def step(gain, h):
    return jnp.tanh(gain * h) * jax.nn.softmax(h)

  def loss(step, gain, a, b):
    return jnp.sum(step(gain, a) ** 2) + jnp.sum(step(gain, b) ** 3)

  args = (
      jnp.float32(0.7),
      jax.random.normal(jax.random.key(1), (4,)),
      jax.random.normal(jax.random.key(2), (7,)),
  )
  grad = lambda step: jax.grad(functools.partial(loss, step), argnums=(0, 1, 2))(*args)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
      grad(residuals.pack_residuals(step, invariant_argnums=(0,))),
      grad(step),
  )
