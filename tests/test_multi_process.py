"""A real two-process run (jax.distributed over localhost, CPU collectives) equals one
process with as many devices: a single run and a population."""

import json
import os
import socket
import subprocess

import numpy as np
import pytest

from tests.commands import copy_command

# Slow: three fresh processes per run. The runner makes Orbax's barriers go through the
# coordination service (experiments/common.py): as device collectives they could
# interleave with the training step's collectives and abort gloo under load.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
    '--train_steps=6',
    '--eval_every=3',
    '--checkpoint_every=3',
    '--log_every=3',
    '--memory_size=8',
    '--word_size=4',
    '--controller_features=8',
    '--eval_batch_size=4',
    '--max_length=3',
    '--eval_lengths=4',
    '--restart_after=0',
]


def _command(workdir, *args):
  return copy_command(f'--workdir={workdir}', *TINY, *args)


def _env(devices):
  return dict(
      os.environ,
      PYTHONPATH=ROOT,
      XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
  )


def _one_process(workdir, *args):
  """The run on one process with two CPU devices."""
  result = subprocess.run(
      _command(workdir, '--data_parallel', *args),
      cwd=ROOT,
      env=_env(2),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def _two_processes(workdir, *args):
  """The run on two processes of one CPU device each, sharing `workdir` (several
  processes always split the work over their devices: no --data_parallel needed)."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  processes = [
      subprocess.Popen(
          _command(
              workdir,
              *args,
              f'--coordinator_address=localhost:{port}',
              '--num_processes=2',
              f'--process_id={index}',
          ),
          cwd=ROOT,
          env=_env(1),
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for index in range(2)
  ]
  outputs = []
  try:
    for process in processes:
      stdout, stderr = process.communicate(timeout=600)
      assert process.returncode == 0, stderr[-3000:]
      outputs.append(stdout)
  finally:
    for process in processes:
      process.kill()
  return outputs


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [
        {k: v for k, v in json.loads(line).items() if k != 'sequences_per_second'}
        for line in f
    ]


def _report(workdir):
  with open(os.path.join(workdir, 'report.json')) as f:
    return json.load(f)


def _assert_close(a, b):
  """Equal structures; numbers equal to float32 rounding (sums over devices in
  another order)."""
  if isinstance(a, dict):
    assert a.keys() == b.keys()
    for key in a:
      _assert_close(a[key], b[key])
  elif isinstance(a, list):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_close(x, y)
  elif isinstance(a, float):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  else:
    assert a == b


def _params(workdir, member=None):
  from ntm_jax.training import ExperimentConfig
  from ntm_jax.training import loop

  config, task = ExperimentConfig.load(workdir)
  return loop.restore_evaluated_params(config, task, member=member)[1:]


@pytest.mark.parametrize(
    'run',
    [['--batch_size=4'], ['--seeds=3-4', '--batch_size=2']],
    ids=['single run', 'population'],
)
def test_two_processes_train_as_one_process_with_their_devices(tmp_path, run):
  import jax

  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  _one_process(one, *run)
  first, second = _two_processes(two, *run)
  assert 'on cpu (2 device(s))' in first and 'Report:' in first
  assert second == ''  # process 0 speaks for both
  # Process 0 alone writes the log, the report and the figures: each record once.
  _assert_close(_records(two), _records(one))
  reference, report = _report(one), _report(two)
  for volatile in ('wall_seconds',):
    reference.pop(volatile), report.pop(volatile)
  _assert_close(report, reference)
  assert os.path.exists(os.path.join(two, 'learning_curve.png'))
  # The checkpoint both processes saved restores as the one process's.
  for member in ((3, 4) if '--seeds=3-4' in run else (None,)):
    (params_one, step_one), (params_two, step_two) = _params(one, member), _params(
        two, member
    )
    assert step_one == step_two == 6
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        params_one,
        params_two,
    )
  # Rerunning the two processes resumes (nothing left to train) and reports the same.
  first, _ = _two_processes(two, *run)
  assert 'Resumed from the checkpoint at step 6' in first
  _assert_close(_records(two), _records(one))
