"""Addressing: how a head turns controller outputs into a weighting over memory.

Paper Sec. 3.3 and Fig. 2: content focus (Eq. 5-6), interpolation with the previous
weighting (Eq. 7), a circular convolutional shift (Eq. 8) and sharpening (Eq. 9).

Every function is written for a single example (no batch axis) and is pure, so it can be
`jax.jit`-ed, `jax.vmap`-ed over a batch and differentiated.

Notation (the paper's letters):
  N   number of memory slots (rows);  M  width of a slot (the word size);
  R   shift range: offsets -R..R are allowed, so `shift_weights` has 2R+1 entries.
  memory (N, M); weightings w, w_prev, w_content (N,); key (M,);
  beta, gate, gamma are scalars.

Numerical guards (see BUILD_NOTES.md, "Epsilons"):
  * `NORM_EPSILON` keeps the cosine similarity (Eq. 6) and its gradient finite for an
    all-zero memory row or key: norms are computed as sqrt(|x|^2 + eps^2).
  * `PRECISION`: the memory's contractions ask for full float32 products. By default a
    GPU computes float32 dots in TensorFloat32 (10-bit mantissa) and a TPU in bfloat16;
    a similarity rounded to ~1e-3 and multiplied by a key strength beta of tens moves
    the content weights by percent. The contractions are (N, M) x (M,): precision costs
    nothing measurable at these sizes.
  * `SHARPEN_EPSILON` keeps Eq. 9 finite for large gamma: it is evaluated in log space,
    softmax(gamma * log(w + eps)), which is w^gamma / sum_j w^gamma without the underflow
    of w^gamma to 0 (and the 0/0 that follows) when gamma is large.
"""

import jax
import jax.numpy as jnp

NORM_EPSILON = 1e-8
SHARPEN_EPSILON = 1e-12
PRECISION = jax.lax.Precision.HIGHEST


def _safe_norm(x: jax.Array, axis: int = -1) -> jax.Array:
  """Euclidean norm sqrt(|x|^2 + eps^2): finite, with a finite gradient, at x = 0."""
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=axis) + NORM_EPSILON**2)


def cosine_similarity(memory: jax.Array, key: jax.Array) -> jax.Array:
  """K[k, M(i)] = k . M(i) / (|k| |M(i)|) for every slot i (Eq. 6).

  Args:
    memory: (N, M) memory matrix M.
    key: (M,) key vector k.

  Returns:
    (N,) similarities in [-1, 1]; 0 for an all-zero row or key.
  """
  dots = jnp.matmul(memory, key, precision=PRECISION)
  return dots / (_safe_norm(memory) * _safe_norm(key))


def content_weights(memory: jax.Array, key: jax.Array, beta: jax.Array) -> jax.Array:
  """Content focus: w_c(i) = softmax_i(beta * K[k, M(i)]) (Eq. 5-6).

  Args:
    memory: (N, M) memory matrix M.
    key: (M,) key vector k.
    beta: scalar key strength beta >= 0.

  Returns:
    (N,) weighting w_c, a distribution over the N slots.
  """
  return jax.nn.softmax(beta * cosine_similarity(memory, key))


def interpolate(w_content: jax.Array, w_prev: jax.Array, gate: jax.Array) -> jax.Array:
  """Interpolation gate: w_g = g w_c + (1 - g) w_prev (Eq. 7).

  Args:
    w_content: (N,) content weighting w_c.
    w_prev: (N,) the head's weighting at the previous step, w_{t-1}.
    gate: scalar interpolation gate g in (0, 1).

  Returns:
    (N,) gated weighting w_g.
  """
  return gate * w_content + (1.0 - gate) * w_prev


def shift(w: jax.Array, shift_weights: jax.Array) -> jax.Array:
  """Circular convolutional shift: w~(i) = sum_j w(j) s(i - j), indices mod N (Eq. 8).

  `shift_weights[k]` weighs the offset `k - R`. A positive offset moves the focus to the
  next slot: a one-hot focus on slot i with all weight on offset +1 lands on i + 1, and
  slot N - 1 wraps to slot 0. Any R with 2R + 1 <= N is allowed.

  Args:
    w: (N,) gated weighting w_g.
    shift_weights: (2R+1,) shift distribution s over offsets -R..R.

  Returns:
    (N,) shifted weighting w~; its total mass equals that of `w`.
  """
  num_slots = w.shape[-1]
  num_offsets = shift_weights.shape[-1]
  if num_offsets % 2 != 1 or num_offsets > num_slots:
    raise ValueError(
        f'shift_weights must have 2R+1 <= N entries (N={num_slots}), got {num_offsets}.'
    )
  shift_range = num_offsets // 2
  # jnp.roll(w, k)[i] = w[i - k]: the sum over the 2R+1 offsets is Eq. 8 exactly, and for
  # the small R used in practice it is cheaper than building an (N, N) circulant matrix.
  return sum(
      shift_weights[k + shift_range] * jnp.roll(w, k)
      for k in range(-shift_range, shift_range + 1)
  )


def sharpen(w: jax.Array, gamma: jax.Array) -> jax.Array:
  """Sharpening: w(i) = w~(i)^gamma / sum_j w~(j)^gamma (Eq. 9).

  Computed as softmax(gamma * log(w~ + eps)) so that it stays finite when w~^gamma would
  underflow (gamma up to 100 and beyond); `sharpen(w, 1)` equals `w` to within eps.

  Args:
    w: (N,) shifted weighting w~ (non-negative).
    gamma: scalar sharpening exponent gamma >= 1.

  Returns:
    (N,) final weighting w_t.
  """
  return jax.nn.softmax(gamma * jnp.log(w + SHARPEN_EPSILON))


def address(
    memory: jax.Array,
    w_prev: jax.Array,
    key: jax.Array,
    beta: jax.Array,
    gate: jax.Array,
    shift_weights: jax.Array,
    gamma: jax.Array,
) -> jax.Array:
  """The whole addressing pipeline of Fig. 2: Eq. 5-6, then 7, 8 and 9.

  Args:
    memory: (N, M) memory matrix M_t.
    w_prev: (N,) previous weighting w_{t-1}.
    key: (M,) key vector k_t.
    beta: scalar key strength beta_t >= 0.
    gate: scalar interpolation gate g_t in (0, 1).
    shift_weights: (2R+1,) shift distribution s_t over offsets -R..R.
    gamma: scalar sharpening exponent gamma_t >= 1.

  Returns:
    (N,) the head's weighting w_t.
  """
  w_content = content_weights(memory, key, beta)
  w_gated = interpolate(w_content, w_prev, gate)
  return sharpen(shift(w_gated, shift_weights), gamma)
