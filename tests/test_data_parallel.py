"""Data-parallel training over 4 simulated CPU devices equals one device."""

import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent('''
    import jax, numpy as np
    from ntm_jax.tasks import CopyTask
    from ntm_jax.training import ExperimentConfig, loop, run
    assert jax.device_count() == 4, jax.devices()
    task = CopyTask(bits=3, max_length=3, eval_lengths=(4,))
    config = ExperimentConfig(workdir='/unused', batch_size=8, memory_size=8, word_size=4,
                              controller_features=16)
    model = loop.build_model(config, task)
    optimizer = loop.make_optimizer(config)
    keys = loop.Keys(0)
    results = []
    for mesh in (None, loop.make_mesh(8)):
      state = loop.create_train_state(model, optimizer, task, keys)
      step = loop.make_train_step(model, optimizer, task, 8, keys.data, mesh)
      costs = []
      for _ in range(3):
        state, metrics = step(state)
        costs.append(float(metrics['cost']))
      results.append((costs, jax.device_get(state['params'])))
    (single, p1), (parallel, p4) = results
    np.testing.assert_allclose(parallel, single, rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                                   atol=1e-6), p1, p4)
    # The runner end to end: sharded state saved by Orbax, restored and resumed.
    import sys
    workdir = sys.argv[1]
    tiny = dict(batch_size=8, memory_size=8, word_size=4, controller_features=16,
                eval_batch_size=4, plots=False, eval_every=2, checkpoint_every=2,
                data_parallel=True)
    run(ExperimentConfig(workdir=workdir, train_steps=2, **tiny), task)
    report = run(ExperimentConfig(workdir=workdir, train_steps=4, **tiny), task)
    assert report['step'] == 4
    try:
      loop.make_mesh(6)
      raise AssertionError('no error for a batch that does not split')
    except ValueError as error:
      assert 'batch_size=6 must be divisible by the number of devices (4)' in str(error)
    print('DATA PARALLEL OK')
''')


def test_data_parallel_gives_the_single_device_result(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=4')
  result = subprocess.run([sys.executable, '-c', SCRIPT, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'DATA PARALLEL OK' in result.stdout
