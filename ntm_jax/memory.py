"""Reading from and writing to the memory matrix (paper Sec. 3.1-3.2, Eq. 2-4).

Single-example, pure functions: memory (N, M), weighting w (N,), erase e and add a (M,).
The contractions use full float32 precision (addressing.PRECISION says why).
"""

import jax
import jax.numpy as jnp

from ntm_jax.addressing import PRECISION


def read(memory: jax.Array, w: jax.Array) -> jax.Array:
  """Read vector r_t = sum_i w_t(i) M_t(i) (Eq. 2).

  Args:
    memory: (N, M) memory matrix M_t.
    w: (N,) read weighting w_t.

  Returns:
    (M,) read vector r_t.
  """
  return jnp.matmul(w, memory, precision=PRECISION)


def write(memory: jax.Array, w: jax.Array, erase: jax.Array, add: jax.Array) -> jax.Array:
  """Erase then add: M~(i) = M_{t-1}(i) (1 - w(i) e), M(i) = M~(i) + w(i) a (Eq. 3-4).

  Args:
    memory: (N, M) memory matrix M_{t-1}.
    w: (N,) write weighting w_t.
    erase: (M,) erase vector e_t, entries in [0, 1].
    add: (M,) add vector a_t.

  Returns:
    (N, M) updated memory M_t.
  """
  return memory * (1.0 - jnp.outer(w, erase)) + jnp.outer(w, add)


def write_heads(
    memory: jax.Array, weights: jax.Array, erases: jax.Array, adds: jax.Array
) -> jax.Array:
  """Eq. 3-4 for H write heads at once: erases multiply, then adds sum (Sec. 3.2).

  M~ = M_{t-1} prod_h (1 - w_h e_h^T);  M_t = M~ + sum_h w_h a_h^T. The order of the heads
  does not matter. With H = 1 this is `write`.

  Args:
    memory: (N, M) memory matrix M_{t-1}.
    weights: (H, N) write weightings.
    erases: (H, M) erase vectors.
    adds: (H, M) add vectors.

  Returns:
    (N, M) updated memory M_t.
  """
  keep = jnp.prod(1.0 - weights[:, :, None] * erases[:, None, :], axis=0)
  return memory * keep + jnp.matmul(weights.T, adds, precision=PRECISION)
