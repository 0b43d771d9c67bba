"""`NTMCell` inside a Flax NNX model, through `flax.nnx.bridge`, trained by a jitted step."""

from flax import nnx
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from ntm_jax import NTMCell


class Tagger(nnx.Module):
  """An NNX model whose recurrent layer is the (linen) NTM cell under `nn.RNN`."""

  def __init__(self, features: int, rngs: nnx.Rngs):
    rnn = nn.RNN(
        NTMCell(features=16, memory_size=16, word_size=6, controller_features=16)
    )
    self.rnn = nnx.bridge.ToNNX(rnn, rngs=rngs)
    self.out = nnx.Linear(16, features, rngs=rngs)

  def __call__(self, xs):
    return self.out(nnx.relu(self.rnn(xs)))


def test_the_cell_trains_inside_an_nnx_model():
  xs = jax.random.normal(jax.random.key(0), (4, 7, 5))
  targets = jnp.roll(xs[..., :3], 1, axis=1)  # something to learn: a delayed copy
  model = Tagger(3, nnx.Rngs(0))
  nnx.bridge.lazy_init(model, xs)  # creates the linen cell's parameters
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  before = jax.tree.map(jnp.copy, nnx.state(model.rnn, nnx.Param))
  assert any('cell' in str(path) for path, _ in nnx.to_flat_state(before))

  @nnx.jit
  def train_step(model, optimizer, xs, targets):
    loss_fn = lambda model: jnp.mean((model(xs) - targets) ** 2)
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss

  losses = [float(train_step(model, optimizer, xs, targets)) for _ in range(30)]
  assert losses[-1] < 0.8 * losses[0], losses
  after = nnx.state(model.rnn, nnx.Param)
  # The NTM cell's own parameters were trained, not only the NNX layer around it.
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), before, after)
  assert all(jax.tree.leaves(changed))
