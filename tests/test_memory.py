"""Eq. 2-4: reads and writes against NumPy loops, and what a write may touch."""

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import ntm_jax
from tests import reference

N, M = 8, 5


def _case(seed):
  rng = np.random.default_rng(seed)
  w = rng.random(N)
  return (rng.normal(size=(N, M)), w / w.sum(), rng.random(M), rng.normal(size=M))


@pytest.mark.parametrize('seed', range(4))
def test_read_and_write_match_numpy_loops(seed):
  memory, w, erase, add = _case(seed)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  np.testing.assert_allclose(
      ntm_jax.read(f32(memory), f32(w)), reference.read(memory, w), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      ntm_jax.write(f32(memory), f32(w), f32(erase), f32(add)),
      reference.write(memory, w, erase, add),
      rtol=1e-5,
      atol=1e-6,
  )


def test_read_by_hand():
  memory = jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
  np.testing.assert_allclose(ntm_jax.read(memory, jnp.array([0.5, 0.5, 0.0])), [2.0, 3.0])


def test_full_erase_with_one_hot_weighting_clears_exactly_that_row():
  memory = jnp.asarray(np.random.default_rng(0).normal(size=(N, M)), jnp.float32)
  out = ntm_jax.write(memory, jax.nn.one_hot(3, N), jnp.ones(M), jnp.zeros(M))
  np.testing.assert_array_equal(out[3], np.zeros(M))
  np.testing.assert_array_equal(np.delete(out, 3, axis=0), np.delete(memory, 3, axis=0))


def test_write_changes_memory_only_where_the_weighting_is_nonzero():
  memory, _, erase, add = _case(1)
  w = np.zeros(N)
  w[[1, 6]] = [0.3, 0.7]
  out = np.asarray(
      ntm_jax.write(
          jnp.asarray(memory, jnp.float32),
          jnp.asarray(w, jnp.float32),
          jnp.asarray(erase, jnp.float32),
          jnp.asarray(add, jnp.float32),
      )
  )
  changed = np.any(np.abs(out - memory) > 1e-6, axis=1)
  np.testing.assert_array_equal(changed, w > 0)


def test_write_heads_multiplies_erases_and_sums_adds():
  rng = np.random.default_rng(2)
  memory = rng.normal(size=(N, M))
  weights = rng.dirichlet(np.ones(N), size=3)
  erases, adds = rng.random((3, M)), rng.normal(size=(3, M))
  expected = np.array(memory)
  for i in range(N):
    for j in range(M):
      keep = np.prod([1 - weights[h, i] * erases[h, j] for h in range(3)])
      expected[i, j] = memory[i, j] * keep + sum(
          weights[h, i] * adds[h, j] for h in range(3)
      )
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  out = ntm_jax.write_heads(f32(memory), f32(weights), f32(erases), f32(adds))
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  # The order of the heads does not matter, and one head is `write`.
  np.testing.assert_allclose(
      ntm_jax.write_heads(
          f32(memory), f32(weights[::-1]), f32(erases[::-1]), f32(adds[::-1])
      ),
      out,
      rtol=1e-5,
      atol=1e-6,
  )
  np.testing.assert_allclose(
      ntm_jax.write_heads(f32(memory), f32(weights[:1]), f32(erases[:1]), f32(adds[:1])),
      ntm_jax.write(f32(memory), f32(weights[0]), f32(erases[0]), f32(adds[0])),
      rtol=1e-6,
      atol=1e-6,
  )


def test_gradients_match_finite_differences_and_jit_vmap_agree():
  memory, w, erase, add = _case(3)
  with jax.enable_x64(True):
    args = tuple(jnp.asarray(a, jnp.float64) for a in (memory, w, erase, add))
    check_grads(ntm_jax.write, args, order=2, modes=('fwd', 'rev'))
    check_grads(ntm_jax.read, args[:2], order=2, modes=('fwd', 'rev'))
  cases = [_case(s) for s in range(3)]
  stacked = [jnp.asarray(np.stack(parts), jnp.float32) for parts in zip(*cases)]
  plain = np.stack(
      [ntm_jax.write(*(jnp.asarray(a, jnp.float32) for a in c)) for c in cases]
  )
  np.testing.assert_allclose(
      jax.jit(jax.vmap(ntm_jax.write))(*stacked), plain, rtol=1e-5, atol=1e-6
  )
  np.testing.assert_allclose(
      jax.vmap(ntm_jax.read)(stacked[0], stacked[1]),
      np.stack(
          [ntm_jax.read(*(jnp.asarray(a, jnp.float32) for a in c[:2])) for c in cases]
      ),
      rtol=1e-5,
      atol=1e-6,
  )


def _dot_precisions(jaxpr) -> list:
  """The precision of every dot_general in a jaxpr, nested calls included."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      found.append(eqn.params['precision'])
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', None)
      if inner is not None:
        found += _dot_precisions(getattr(inner, 'jaxpr', inner))
  return found


@pytest.mark.parametrize('name', ['address', 'read', 'write', 'write_heads'])
def test_the_memory_contractions_ask_for_full_float32_precision(name):
  # A GPU computes default-precision float32 dots in TensorFloat32, a TPU in bfloat16:
  # the equations must not depend on the backend's default (addressing.PRECISION).
  memory, w, erase, add = (jnp.asarray(a, jnp.float32) for a in _case(0))
  args = dict(
      address=(memory, w, add, 2.0, 0.5, jnp.array([0.2, 0.6, 0.2]), 1.5),
      read=(memory, w),
      write=(memory, w, erase, add),
      write_heads=(memory, w[None], erase[None], add[None]),
  )[name]
  precisions = _dot_precisions(jax.make_jaxpr(getattr(ntm_jax, name))(*args).jaxpr)
  highest = jax.lax.Precision.HIGHEST
  if name == 'write':  # outer products: no contraction to round
    assert precisions == []
    return
  assert precisions and all(p == (highest, highest) for p in precisions), precisions
