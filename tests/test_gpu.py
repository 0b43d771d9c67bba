"""The GPU computes what the CPU computes: the equations, a training step, a population's
step and a run.

Every test here is marked `gpu` and skipped without a GPU (conftest.py). They need both
backends in one process, `JAX_PLATFORMS=cuda,cpu`, as `benchmarks.gpu_smoke` runs them.
The rest of the suite runs on whatever backend JAX picks, so the smoke script also runs
a slice of it on the GPU.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ntm_jax
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import checkpointing
from ntm_jax.training import factory
from ntm_jax.training import optim
from ntm_jax.training import population
from ntm_jax.training import run
from ntm_jax.training import train_state

pytestmark = pytest.mark.gpu


def _on(platform: str, fn, *args):
  """`fn(*args)` jitted on the first device of `platform`, as NumPy."""
  device = jax.devices(platform)[0]
  with jax.default_device(device):
    return jax.device_get(jax.jit(fn)(*jax.device_put(args, device)))


def test_the_equations_on_the_gpu_match_the_cpu():
  batch, heads, n, m = 8, 2, 128, 20
  keys = jax.random.split(jax.random.key(0), 8)
  memory = jax.random.normal(keys[0], (batch, n, m))
  w_prev = jax.nn.softmax(jax.random.normal(keys[1], (batch, heads, n)))
  key = jax.random.normal(keys[2], (batch, heads, m))
  beta = 30.0 * jax.random.uniform(keys[3], (batch, heads))  # sharp: rounding shows
  gate = jax.random.uniform(keys[4], (batch, heads))
  shifts = jax.nn.softmax(jax.random.normal(keys[5], (batch, heads, 3)))
  gamma = 1.0 + 5.0 * jax.random.uniform(keys[6], (batch, heads))
  erase = jax.random.uniform(keys[7], (batch, heads, m))

  def step(memory, w_prev, key, beta, gate, shifts, gamma, erase):
    address = jax.vmap(jax.vmap(ntm_jax.address, (None, 0, 0, 0, 0, 0, 0)))
    w = address(memory, w_prev, key, beta, gate, shifts, gamma)
    memory = jax.vmap(ntm_jax.write_heads)(memory, w, erase, jnp.tanh(key))
    return w, memory, jax.vmap(jax.vmap(ntm_jax.read, (None, 0)))(memory, w)

  args = (memory, w_prev, key, beta, gate, shifts, gamma, erase)
  for gpu, cpu in zip(_on('gpu', step, *args), _on('cpu', step, *args)):
    np.testing.assert_allclose(gpu, cpu, rtol=2e-5, atol=2e-6)


def _copy_default(batch_size: int) -> ExperimentConfig:
  """The shipped copy run's recipe (the copy experiment's default) at `batch_size`."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  config, _ = ExperimentConfig.load(os.path.join(root, 'trained', 'copy_ntm'))
  return config.replace(workdir='/unused', batch_size=batch_size)


@pytest.mark.parametrize('batch_size', [1, 16])
def test_training_steps_on_the_gpu_match_the_cpu(batch_size):
  """The copy default's step (random memories, entropy penalty, RMSProp): same data,
  same updates. Full float32 matmuls on both, so that only rounding differs."""
  config, task = _copy_default(batch_size), CopyTask()
  model, optimizer, keys = (
      factory.build_model(config, task),
      optim.make_optimizer(config),
      train_state.Keys(3),
  )
  results = {}
  for platform in ('gpu', 'cpu'):
    with (
        jax.default_device(jax.devices(platform)[0]),
        jax.default_matmul_precision('highest'),
    ):
      state = train_state.create_train_state(model, optimizer, task, keys)
      step = train_state.make_train_step(
          model,
          optimizer,
          task,
          batch_size,
          keys.data,
          entropy_penalty=config.entropy_penalty,
      )
      costs = []
      for _ in range(5):
        state, metrics = step(state)
        costs.append(float(metrics['cost']))
      results[platform] = costs, jax.device_get(state.params)
  (gpu_costs, gpu_params), (cpu_costs, cpu_params) = results['gpu'], results['cpu']
  np.testing.assert_allclose(gpu_costs, cpu_costs, rtol=1e-4)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      gpu_params,
      cpu_params,
  )


def test_a_population_step_on_the_gpu_matches_the_cpu():
  """Four copy-default members stepped together (vmap) on each backend: the same
  updates, member by member."""
  config, task, seeds = _copy_default(1), CopyTask(), (0, 1, 2, 3)
  model, optimizer = factory.build_model(config, task), optim.make_optimizer(config)
  results = {}
  for platform in ('gpu', 'cpu'):
    with (
        jax.default_device(jax.devices(platform)[0]),
        jax.default_matmul_precision('highest'),
    ):
      state = population.Population.start(
          train_state.create_population_state(model, optimizer, task, seeds)
      )
      step = population.make_population_step(
          model, optimizer, task, 1, seeds, entropy_penalty=config.entropy_penalty
      )
      costs = []
      for _ in range(5):
        state, metrics = step(state)
        costs.append(np.asarray(metrics['cost']))
      results[platform] = costs, jax.device_get(state.members.params)
  (gpu_costs, gpu_params), (cpu_costs, cpu_params) = results['gpu'], results['cpu']
  np.testing.assert_allclose(gpu_costs, cpu_costs, rtol=1e-4)
  jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
      gpu_params,
      cpu_params,
  )


def test_bfloat16_training_steps_stay_finite_on_the_gpu():
  config, task = _copy_default(16).replace(dtype='bfloat16'), CopyTask()
  model, optimizer, keys = (
      factory.build_model(config, task),
      optim.make_optimizer(config),
      train_state.Keys(0),
  )
  state = train_state.create_train_state(model, optimizer, task, keys)
  step = train_state.make_train_step(model, optimizer, task, 16, keys.data)
  for _ in range(5):
    state, metrics = step(state)
  assert np.isfinite(float(metrics['cost']))
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))


def test_a_run_trains_checkpoints_and_resumes_on_the_gpu(tmp_path):
  tiny = dict(
      batch_size=4,
      memory_size=16,
      word_size=6,
      controller_features=32,
      eval_batch_size=8,
      log_every=2,
      eval_every=3,
      checkpoint_every=3,
      memory_init='random',
      entropy_penalty=0.005,
      ema_decay=0.9,
  )
  task = CopyTask(bits=3, max_length=4, eval_lengths=(6,))
  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  run(ExperimentConfig(workdir=whole, train_steps=6, **tiny), task)
  run(ExperimentConfig(workdir=parts, train_steps=3, **tiny), task)
  report = run(ExperimentConfig(workdir=parts, train_steps=6, **tiny), task)
  assert report['step'] == 6
  assert {'learning_curve.png', 'sequence_length_6.png'} <= set(
      p.name for p in (tmp_path / 'parts').iterdir()
  )
  restored = []
  for workdir in (whole, parts):
    config = ExperimentConfig(workdir=workdir, train_steps=6, **tiny)
    model = factory.build_model(config, task)
    like = train_state.create_train_state(
        model, optim.make_optimizer(config), task, train_state.Keys(0), ema=True
    ).to_checkpoint()
    checkpointer = checkpointing.Checkpointer(workdir)
    try:
      restored.append(checkpointer.restore(like))
    finally:
      checkpointer.close()
  assert all(
      leaf.devices() == {jax.devices('gpu')[0]} for leaf in jax.tree.leaves(restored[1])
  )
  # A resumed run sees the data an uninterrupted one sees: the same parameters.
  jax.tree.map(np.testing.assert_array_equal, restored[0], restored[1])
