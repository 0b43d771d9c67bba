"""Faults injected into real runs of `python -m experiments.copy`: kill -9, SIGTERM during
saves, bad workdirs and sizes. Each checks what is on disk afterwards, not only the exit
status. (A damaged newest checkpoint, a NaN in a step and two runs on one workdir are in
test_training.py; a half-written save in test_training.py too.)"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ntm_jax.training import ExperimentConfig
from ntm_jax.training import checkpointing
from ntm_jax.training import factory
from ntm_jax.training import optim
from ntm_jax.training import train_state
from tests.commands import copy_command

pytestmark = pytest.mark.slow  # command-line runs in fresh processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = [
    '--memory_size=8',
    '--word_size=4',
    '--controller_features=16',
    '--max_length=3',
    '--eval_lengths=2,5',
    '--eval_batch_size=4',
    '--plots=false',
    '--log_every=5',
    '--eval_every=50',
]


def _start(workdir, *flags):
  """The copy command; one run unless `flags` ask for a population."""
  return subprocess.Popen(
      copy_command(f'--workdir={workdir}', *TINY_FLAGS, *flags),
      cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def _wait_for_checkpoint(workdir, process, at_least=1, timeout=300):
  directory = os.path.join(workdir, 'checkpoints')
  deadline = time.time() + timeout
  while time.time() < deadline:
    if (
        os.path.isdir(directory)
        and len([d for d in os.listdir(directory) if d.isdigit()]) >= at_least
    ):
      return
    assert process.poll() is None, process.communicate()
    time.sleep(0.05)
  raise AssertionError('no checkpoint appeared')


def _restore_latest(workdir):
  """The latest checkpoint's step, restored into the tiny run's state (fails if it
  cannot be read)."""
  config, task = ExperimentConfig.load(workdir)
  model = factory.build_model(config, task)
  state = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(config.seed)
  )
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    restored = checkpointer.restore(state.to_checkpoint())
    return int(restored['step'])
  finally:
    checkpointer.close()


def _finish(workdir, *flags):
  process = _start(workdir, *flags)
  out, err = process.communicate(timeout=600)
  assert process.returncode == 0, err[-3000:]
  return out


def test_kill_9_during_training_leaves_a_checkpoint_that_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  process = _start(workdir, '--train_steps=100000', '--checkpoint_every=20')
  _wait_for_checkpoint(workdir, process, at_least=2)
  process.send_signal(signal.SIGKILL)
  process.wait()
  step = _restore_latest(workdir)
  assert step >= 20 and step % 20 == 0
  # The lock died with the process; rerunning resumes from that checkpoint.
  out = _finish(workdir, f'--train_steps={step + 20}', '--checkpoint_every=20')
  assert f'Resumed from the checkpoint at step {step} ' in out
  assert _restore_latest(workdir) == step + 20
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    steps = [r['step'] for r in map(json.loads, f) if r['kind'] == 'train']
  assert steps == sorted(set(steps))  # nothing logged twice


def test_sigterm_during_saves_saves_once_more_and_resumes(tmp_path):
  workdir = str(tmp_path / 'run')
  # A save at every step: the signal lands during or between saves.
  process = _start(workdir, '--train_steps=100000', '--checkpoint_every=1')
  _wait_for_checkpoint(workdir, process, at_least=3)
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 130
  assert 'Interrupted' in out
  step = _restore_latest(workdir)
  saved = sorted(
      int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit()
  )
  assert step == saved[-1] >= 3
  assert not os.path.exists(os.path.join(workdir, 'damaged'))
  out = _finish(workdir, f'--train_steps={step + 5}', '--checkpoint_every=1')
  assert f'Resumed from the checkpoint at step {step} ' in out


@pytest.mark.parametrize(
    'setup,flags,message',
    [
        ('file', [], 'is a file, not a directory'),
        ('under_a_file', [], 'cannot be created (Not a directory)'),
        ('read_only', [], 'cannot be written'),
        (
            None,
            ['--memory_size=100000', '--word_size=100000'],
            '--memory_size=100000 --word_size=100000 --batch_size=1',
        ),
        (
            None,
            ['--generalisation_batch_size=1000000000'],
            '--batch_size=1 --generalisation_batch_size=1000000000 need about',
        ),
        (None, ['--seeds=0-1', '--seed=3'], '--seed and --seeds exclude each other'),
        (None, ['--seeds=1-0'], '--seeds must be seeds like 0-9'),
        (None, ['--member=3'], '--member evaluates one member of a population'),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, setup, flags, message):
  workdir = tmp_path / 'run'
  if setup == 'file':
    workdir.write_text('not a directory')
  elif setup == 'under_a_file':  # nobody, root included, can create a path under a file
    workdir.write_text('not a directory')
    workdir = workdir / 'run'
  elif setup == 'read_only':
    if os.geteuid() == 0:
      pytest.skip('root can write to a read-only directory')
    workdir.mkdir()
    workdir.chmod(0o500)
  process = _start(str(workdir), '--train_steps=5', *flags)
  _, err = process.communicate(timeout=300)
  assert process.returncode != 0
  lines = [line for line in err.strip().splitlines() if not line.startswith('WARNING')]
  assert len(lines) == 1 and lines[0].startswith('error: ') and message in lines[0], err
  assert 'Traceback' not in err
  if setup is None:  # nothing trained, nothing saved
    assert not os.path.exists(workdir / 'checkpoints')


def test_eval_only_on_a_workdir_of_another_task_is_one_line(tmp_path):
  workdir = str(tmp_path / 'run')
  _finish(workdir, '--train_steps=5', '--checkpoint_every=5')
  process = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.repeat_copy',
          f'--workdir={workdir}',
          '--eval_only',
          '--memory_size=8',
          '--word_size=4',
          '--controller_features=16',
      ],
      cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert process.returncode != 0
  assert (
      'error: --workdir' in process.stderr
      and "task: 'copy' -> 'repeat_copy'" in process.stderr
  ), process.stderr[-2000:]
  assert 'Traceback' not in process.stderr
  assert _restore_latest(workdir) == 5  # untouched


def test_another_process_never_reads_a_half_written_config_or_log(tmp_path):
  # In a multi-process run process 0 rewrites config.json and metrics.jsonl while the
  # others read them on resuming; a half-written file stopped a rerun in CI.
  import threading

  from ntm_jax.tasks import CopyTask
  from ntm_jax.training import workdir as workdir_lib

  config, task = ExperimentConfig(workdir=str(tmp_path)), CopyTask()
  log = tmp_path / 'metrics.jsonl'
  log.write_text(''.join(json.dumps(dict(step=s, cost=1.0)) + '\n' for s in range(500)))
  workdir_lib.record_config(str(tmp_path), config, task, resuming=False)
  done, seen = threading.Event(), []

  def read():
    while not done.is_set():
      seen.append(json.loads((tmp_path / 'config.json').read_text())['task'])
      seen.append(len(workdir_lib.MetricsLog.read(str(tmp_path))))

  reader = threading.Thread(target=read)
  reader.start()
  try:
    for _ in range(300):
      workdir_lib.record_config(str(tmp_path), config, task, resuming=False)
      workdir_lib.MetricsLog(str(tmp_path), resume_step=1000)
  finally:
    done.set()
    reader.join()
  assert seen and set(seen) == {'copy', 500}
