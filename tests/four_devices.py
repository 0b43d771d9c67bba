"""Checks that need four JAX CPU devices, each run in a process of its own:
`python -m tests.four_devices CHECK [WORKDIR]` (tests/test_data_parallel.py starts them).

XLA fixes a process's device count when it starts, so the test processes themselves
(one device) cannot run these.
"""

import sys

import jax
import numpy as np

from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import factory
from ntm_jax.training import loop
from ntm_jax.training import optim
from ntm_jax.training import population
from ntm_jax.training import run
from ntm_jax.training import train_state

TASK = CopyTask(bits=3, max_length=3, eval_lengths=(4,))


def single_run_splits(workdir: str) -> None:
  """Data-parallel and micro-batched steps equal one device's, and resume from Orbax."""
  task = TASK
  # SGD: Adam's first steps turn float-rounding noise in near-zero gradients into
  # updates of the full learning rate, which would hide what the splits compute. A
  # learned memory for the same reason: over the constant one every row is alike, so the
  # keys' gradients are rounding noise amplified (3e-5 apart between splits after three
  # steps with remat_chunk=1); over distinct rows the splits agree to 2e-7.
  config = ExperimentConfig(
      workdir='/unused',
      batch_size=8,
      memory_size=8,
      word_size=4,
      controller_features=16,
      optimizer='sgd',
      learning_rate=0.1,
      memory_init='learned',
  )
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  keys = train_state.Keys(0)
  results = []
  # (mesh, micro_batch_size): one device whole, one device in micro-batches of 2, four
  # devices of 2 sequences, four devices of 2 sequences in micro-batches of 1.
  four_devices = train_state.make_mesh(8)
  splits = ((None, 0), (None, 2), (four_devices, 0), (four_devices, 1))
  for mesh, micro_batch_size in splits:
    state = train_state.create_train_state(model, optimizer, task, keys)
    step = train_state.make_train_step(
        model, optimizer, task, 8, keys.data, mesh, micro_batch_size
    )
    costs = []
    for _ in range(3):
      state, metrics = step(state)
      costs.append([float(metrics[name]) for name in ('cost', 'bit_errors', 'grad_norm')])
    results.append((costs, jax.device_get(state.params)))
  single, p1 = results[0]
  for split, (costs, params) in zip(splits[1:], results[1:]):
    np.testing.assert_allclose(costs, single, rtol=1e-5, err_msg=str(split))
    # Sums in another order: float32 rounding.
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6), p1, params
    )
  try:
    train_state.make_train_step(
        model, optimizer, task, 8, keys.data, train_state.make_mesh(8), 4
    )
    raise AssertionError('no error for micro-batches that do not split a device batch')
  except ValueError as error:
    assert 'micro_batch_size=4 must divide the batch on each device' in str(error)
  # The runner end to end: sharded state saved by Orbax, restored and resumed.
  tiny = dict(
      batch_size=8,
      memory_size=8,
      word_size=4,
      controller_features=16,
      eval_batch_size=4,
      plots=False,
      eval_every=2,
      checkpoint_every=2,
      data_parallel=True,
      micro_batch_size=1,
  )
  run(ExperimentConfig(workdir=workdir, train_steps=2, **tiny), task)
  report = run(ExperimentConfig(workdir=workdir, train_steps=4, **tiny), task)
  assert report['step'] == 4
  try:
    train_state.make_mesh(6)
    raise AssertionError('no error for a batch that does not split')
  except ValueError as error:
    assert 'batch_size=6 must be divisible by the number of devices (4)' in str(error)


def population_splits(workdir: str) -> None:
  """A population split over the devices equals it on one device, member by member."""
  task = TASK
  tiny = dict(
      batch_size=2,
      memory_size=8,
      word_size=4,
      controller_features=16,
      eval_batch_size=4,
      plots=False,
      eval_every=3,
      checkpoint_every=3,
      seeds=(0, 1, 2, 3, 4, 5, 6, 7),
      optimizer='sgd',
      learning_rate=0.1,
      memory_init='learned',
  )  # SGD, learned memory: as in single_run_splits, and why
  one, four = workdir + '/one', workdir + '/four'
  run(ExperimentConfig(workdir=one, train_steps=6, **tiny), task)
  # Split over the four devices (two members each), saved sharded at step 3, resumed.
  run(ExperimentConfig(workdir=four, train_steps=3, data_parallel=True, **tiny), task)
  report = run(
      ExperimentConfig(workdir=four, train_steps=6, data_parallel=True, **tiny), task
  )
  assert report['step'] == 6
  for seed in tiny['seeds']:
    a = loop.restore_evaluated_params(ExperimentConfig.load(one)[0], task, member=seed)
    b = loop.restore_evaluated_params(ExperimentConfig.load(four)[0], task, member=seed)
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=2e-6), a[1], b[1]
    )
  try:
    run(
        ExperimentConfig(
            workdir=workdir + '/odd',
            train_steps=1,
            data_parallel=True,
            **dict(tiny, seeds=(0, 1, 2)),
        ),
        task,
    )
    raise AssertionError('no error for a population that does not split')
  except ValueError as error:
    assert 'gives 3 members, which must be divisible by the number of devices (4)' in str(
        error
    ), error


def repeated_steps() -> None:
  """Several steps in one call equal as many calls, and keep the state's placement."""
  task = TASK
  seeds = (0, 1, 2, 3, 4, 5, 6, 7)
  config = ExperimentConfig(
      workdir='/unused', batch_size=2, memory_size=8, word_size=4, controller_features=16
  )
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  mesh = population.make_population_mesh(len(seeds))

  def start():
    members = train_state.create_population_state(model, optimizer, task, seeds)
    return population.shard_members(population.Population.start(members), mesh)

  step = population.make_population_step(model, optimizer, task, 2, seeds, mesh)
  one_at_a_time, per_step = start(), []
  for _ in range(5):
    one_at_a_time, metrics = step(one_at_a_time)
    per_step.append(metrics)
  steps = train_state.repeated_steps(step, 8)
  state, first = steps(start(), 3)  # 3 + 2 steps, as the loop splits at a boundary
  state, second = steps(state, 2)
  # The same states bit for bit, and each step's metrics in its row.
  jax.tree.map(np.testing.assert_array_equal, one_at_a_time, state)
  for name in per_step[0]:
    repeated = np.concatenate([first[name][:3], second[name][:2]])
    np.testing.assert_array_equal(np.stack([m[name] for m in per_step]), repeated)
  # Still split over the devices as the step splits it: the next call takes it as is.
  for x, y in zip(jax.tree.leaves(state), jax.tree.leaves(one_at_a_time)):
    assert x.sharding.is_equivalent_to(y.sharding, x.ndim), (x.sharding, y.sharding)


CHECKS = dict(
    single_run_splits=single_run_splits,
    population_splits=population_splits,
    repeated_steps=repeated_steps,
)

if __name__ == '__main__':
  assert jax.device_count() == 4, jax.devices()
  CHECKS[sys.argv[1]](*sys.argv[2:])
  print(f'{sys.argv[1]}: OK')
