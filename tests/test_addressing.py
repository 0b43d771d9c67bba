"""Eq. 5-9 against NumPy loops, worked examples, invariants, edge cases and gradients."""

import itertools

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import ntm_jax
from tests import reference

N, M = 10, 6


def _distribution(rng, n):
  w = rng.random(n) + 0.05
  return w / w.sum()


def _inputs(seed):
  rng = np.random.default_rng(seed)
  return dict(
      memory=rng.normal(size=(N, M)),
      w_prev=_distribution(rng, N),
      key=rng.normal(size=M),
      beta=float(rng.uniform(0.5, 10)),
      gate=float(rng.uniform(0.05, 0.95)),
      shift_weights=_distribution(rng, 3),
      gamma=float(rng.uniform(1, 5)),
  )


def _f32(x):
  return jnp.asarray(x, jnp.float32)


# Given random inputs, when each equation runs, then it matches the NumPy loop.
@pytest.mark.parametrize('seed', range(5))
def test_each_equation_matches_numpy_loop(seed):
  x = _inputs(seed)
  w_c = reference.content_weights(x['memory'], x['key'], x['beta'])
  np.testing.assert_allclose(
      ntm_jax.content_weights(_f32(x['memory']), _f32(x['key']), x['beta']),
      w_c,
      rtol=1e-5,
      atol=1e-6,
  )
  w_g = reference.interpolate(w_c, x['w_prev'], x['gate'])
  np.testing.assert_allclose(
      ntm_jax.interpolate(_f32(w_c), _f32(x['w_prev']), x['gate']),
      w_g,
      rtol=1e-5,
      atol=1e-7,
  )
  w_s = reference.shift(w_g, x['shift_weights'])
  np.testing.assert_allclose(
      ntm_jax.shift(_f32(w_g), _f32(x['shift_weights'])), w_s, rtol=1e-5, atol=1e-7
  )
  w = reference.sharpen(w_s, x['gamma'])
  np.testing.assert_allclose(
      ntm_jax.sharpen(_f32(w_s), x['gamma']), w, rtol=1e-4, atol=1e-7
  )
  full = ntm_jax.address(
      *(
          _f32(x[k])
          for k in ('memory', 'w_prev', 'key', 'beta', 'gate', 'shift_weights', 'gamma')
      )
  )
  np.testing.assert_allclose(full, w, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('shift_range', [0, 1, 2, 4])
def test_shift_matches_loop_for_every_range(shift_range):
  rng = np.random.default_rng(shift_range)
  w, s = _distribution(rng, N), _distribution(rng, 2 * shift_range + 1)
  np.testing.assert_allclose(
      ntm_jax.shift(_f32(w), _f32(s)), reference.shift(w, s), rtol=1e-5, atol=1e-7
  )


def test_worked_examples_by_hand():
  # Content focus: rows [1,0], [0,1], [-1,0]; key [2,0] -> cosines 1, 0, -1; beta = ln 2
  # gives weights proportional to 2, 1, 1/2: that is 4/7, 2/7, 1/7.
  memory = _f32([[1, 0], [0, 1], [-1, 0]])
  np.testing.assert_allclose(
      ntm_jax.content_weights(memory, _f32([2, 0]), np.log(2.0)),
      [4 / 7, 2 / 7, 1 / 7],
      rtol=1e-6,
  )
  # Interpolation: 0.25 * [1, 0] + 0.75 * [0, 1].
  np.testing.assert_allclose(
      ntm_jax.interpolate(_f32([1, 0]), _f32([0, 1]), 0.25), [0.25, 0.75]
  )
  # Shift of [0.5, 0.5, 0, 0] by s = (offset -1: 0.2, 0: 0.3, +1: 0.5):
  # w~(i) = 0.2 w(i+1) + 0.3 w(i) + 0.5 w(i-1).
  np.testing.assert_allclose(
      ntm_jax.shift(_f32([0.5, 0.5, 0, 0]), _f32([0.2, 0.3, 0.5])),
      [0.25, 0.4, 0.25, 0.1],
      rtol=1e-6,
  )
  # Sharpening [0.6, 0.2, 0.2] with gamma 2: [0.36, 0.04, 0.04] / 0.44.
  np.testing.assert_allclose(
      ntm_jax.sharpen(_f32([0.6, 0.2, 0.2]), 2.0), [9 / 11, 1 / 11, 1 / 11], rtol=1e-5
  )


@pytest.mark.parametrize('slot,offset', itertools.product([0, 3, N - 1], [-2, -1, 1, 2]))
def test_one_hot_focus_moves_by_the_offset_and_wraps(slot, offset):
  s = np.zeros(5)
  s[offset + 2] = 1.0
  w = ntm_jax.shift(jax.nn.one_hot(slot, N), _f32(s))
  np.testing.assert_allclose(w, jax.nn.one_hot((slot + offset) % N, N), atol=1e-7)


def test_positive_offset_moves_last_slot_to_first():
  w = ntm_jax.shift(jax.nn.one_hot(N - 1, N), _f32([0, 0, 1]))
  assert int(jnp.argmax(w)) == 0 and float(w[0]) == pytest.approx(1.0)


def test_shift_rejects_a_shift_wider_than_memory():
  with pytest.raises(ValueError, match='2R\\+1 <= N'):
    ntm_jax.shift(jnp.ones(3) / 3, jnp.ones(5) / 5)
  with pytest.raises(ValueError, match='2R\\+1'):
    ntm_jax.shift(jnp.ones(8) / 8, jnp.ones(4) / 4)


@pytest.mark.parametrize('seed', range(3))
def test_invariants(seed):
  x = _inputs(seed)
  w = ntm_jax.address(
      *(
          _f32(x[k])
          for k in ('memory', 'w_prev', 'key', 'beta', 'gate', 'shift_weights', 'gamma')
      )
  )
  assert float(jnp.sum(w)) == pytest.approx(1.0, abs=1e-6)
  assert float(jnp.min(w)) >= 0.0
  # Shifting preserves mass, even of a weighting that does not sum to 1.
  v = _f32(np.random.default_rng(seed).random(N))
  assert float(jnp.sum(ntm_jax.shift(v, _f32(x['shift_weights'])))) == pytest.approx(
      float(jnp.sum(v)), rel=1e-6
  )
  # Sharpening with gamma = 1 is the identity on a distribution.
  np.testing.assert_allclose(
      ntm_jax.sharpen(_f32(x['w_prev']), 1.0), x['w_prev'], rtol=1e-5, atol=1e-7
  )
  # The content weights are a distribution.
  w_c = ntm_jax.content_weights(_f32(x['memory']), _f32(x['key']), x['beta'])
  assert float(jnp.sum(w_c)) == pytest.approx(1.0, abs=1e-6)


def _edge_cases():
  one_hot = jax.nn.one_hot(2, N)
  near_one_hot = 0.999999 * one_hot + 1e-6 / N
  zero_row = jnp.asarray(np.random.default_rng(0).normal(size=(N, M)), jnp.float32)
  zero_row = zero_row.at[4].set(0.0)
  return [
      ('zero memory', jnp.zeros((N, M)), jnp.ones(M), one_hot, 1.0, 1.0),
      ('zero row', zero_row, jnp.ones(M), near_one_hot, 5.0, 2.0),
      ('zero key', zero_row, jnp.zeros(M), one_hot, 5.0, 2.0),
      ('beta 1e3', zero_row, jnp.ones(M), near_one_hot, 1e3, 1.0),
      ('gamma 100', zero_row, jnp.ones(M), one_hot, 1.0, 100.0),
      ('all extreme', jnp.zeros((N, M)), jnp.zeros(M), one_hot, 1e3, 100.0),
      ('constant memory', jnp.full((N, M), 1e-6), jnp.ones(M), near_one_hot, 1e3, 100.0),
  ]


@pytest.mark.parametrize('name,memory,key,w_prev,beta,gamma', _edge_cases())
def test_values_and_gradients_stay_finite(name, memory, key, w_prev, beta, gamma):
  shift_weights = _f32([0.1, 0.2, 0.7])

  def loss(memory, w_prev, key, beta, gate, shift_weights, gamma):
    w = ntm_jax.address(memory, w_prev, key, beta, gate, shift_weights, gamma)
    return jnp.sum(w * jnp.arange(N)) + jnp.sum(ntm_jax.read(memory, w))

  args = (
      memory,
      w_prev,
      key,
      jnp.float32(beta),
      jnp.float32(0.5),
      shift_weights,
      jnp.float32(gamma),
  )
  w = ntm_jax.address(*args)
  assert bool(jnp.all(jnp.isfinite(w))), name
  assert float(jnp.sum(w)) == pytest.approx(1.0, abs=1e-5), name
  grads = jax.grad(loss, argnums=tuple(range(7)))(*args)
  for g in grads:
    assert bool(jnp.all(jnp.isfinite(g))), name


def test_sharpen_with_large_gamma_focuses_instead_of_nan():
  # w^100 underflows float32 for every entry (0.3^100 ~ 5e-53); the log-space form does not.
  w = _f32([0.3, 0.2, 0.25, 0.25])
  out = ntm_jax.sharpen(w, 100.0)
  np.testing.assert_allclose(out, [1, 0, 0, 0], atol=1e-6)


@pytest.mark.parametrize('seed', range(2))
def test_gradients_match_finite_differences(seed):
  x = _inputs(seed)
  names = ('memory', 'w_prev', 'key', 'beta', 'gate', 'shift_weights', 'gamma')
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(x[k], jnp.float64) for k in names)
    check_grads(ntm_jax.address, args, order=1, modes=('rev',), atol=1e-4, rtol=1e-4)
    check_grads(
        ntm_jax.content_weights,
        args[:1] + args[2:4],
        order=2,
        modes=('fwd', 'rev'),
        atol=1e-4,
        rtol=1e-4,
    )
    check_grads(ntm_jax.shift, (args[1], args[5]), order=2, modes=('fwd', 'rev'))
    check_grads(
        ntm_jax.sharpen,
        (args[1], args[6]),
        order=2,
        modes=('fwd', 'rev'),
        atol=1e-4,
        rtol=1e-4,
    )


def test_jit_and_vmap_equal_plain_calls():
  batch = [_inputs(seed) for seed in range(4)]
  names = ('memory', 'w_prev', 'key', 'beta', 'gate', 'shift_weights', 'gamma')
  stacked = tuple(jnp.stack([_f32(x[k]) for x in batch]) for k in names)
  plain = jnp.stack([ntm_jax.address(*(_f32(x[k]) for k in names)) for x in batch])
  np.testing.assert_allclose(
      jax.vmap(ntm_jax.address)(*stacked), plain, rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(
      jax.jit(jax.vmap(ntm_jax.address))(*stacked), plain, rtol=1e-5, atol=1e-7
  )
  first = tuple(a[0] for a in stacked)
  np.testing.assert_allclose(
      jax.jit(ntm_jax.address)(*first), plain[0], rtol=1e-5, atol=1e-7
  )
