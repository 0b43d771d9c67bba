"""`python -m experiments.copy` as a user runs it: clear errors for bad flags."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from ntm_jax.training import backend
from tests.commands import copy_command

# Slow: every test runs an experiment command in a fresh process.
pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, timeout=300):
  """The copy command; one run unless `args` asks for a population."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      copy_command(*args),
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
  )


@pytest.mark.parametrize(
    'args,message',
    [
        (['--batch_size=-2'], 'batch_size must be a positive integer, got -2'),
        (['--memory_size=0'], 'memory_size must be a positive integer'),
        (['--optimizer=adagrad'], 'optimizer must be one of adam, rmsprop, sgd'),
        (['--max_length=0'], 'min_length <= max_length'),
        (['--accelerator=quantum'], 'value should be one of <cpu|gpu|tpu>'),
        (['--eval_only'], '--eval_only needs a checkpoint'),
        (
            ['--coordinator_address=localhost:1'],
            '--coordinator_address needs --num_processes',
        ),
        (
            ['--micro_batch_size=3', '--batch_size=32'],
            'micro_batch_size=3 must divide batch_size=32',
        ),
        (['--micro_batch_size=-1'], 'micro_batch_size must be an integer >= 0'),
        (
            ['--model=lstm', '--entropy_penalty=0.01'],
            'entropy_penalty=0.01 needs model=ntm',
        ),
        (
            ['--model=lstm', '--carry_grad_clip=100'],
            'carry_grad_clip=100.0 needs model=ntm',
        ),
        (['--write_advance_bias=-4'], 'write_advance_bias must be a finite number >= 0'),
        (['--ema_decay=1'], 'ema_decay must be in [0, 1), got 1.0'),
        (
            ['--skip_grad_norm=-1'],
            'skip_grad_norm must be a finite number >= 0, got -1.0',
        ),
        (['--restart_after=-5'], 'restart_after must be an integer >= 0, got -5'),
        (
            ['--generalisation_batch_size=-1'],
            'generalisation_batch_size must be an integer >= 0, got -1',
        ),
        (['--checkpoint=best'], 'checkpoint=best (--checkpoint=best) needs eval_only'),
        (['--eval_only', '--checkpoint=best'], '--checkpoint=best needs'),
        (['--checkpoint=first'], 'value should be one of <latest|best>'),
        (
            [
                '--coordinator_address=localhost:1',
                '--num_processes=2',
                '--process_id=0',
                '--nodata_parallel',
            ],
            '--nodata_parallel: a run over several processes',
        ),
        (['--population=0'], '--population must be 1 (one run) or more; got 0'),
        (
            ['--population=2', '--seeds=0-1'],
            '--population and --seeds exclude each other',
        ),
    ],
)
def test_bad_flags_fail_with_a_message_naming_them(tmp_path, args, message):
  result = _run(f'--workdir={tmp_path}', *args)
  assert result.returncode != 0
  assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    'accelerator,device', [('gpu', '/dev/nvidia0'), ('tpu', '/dev/accel0')]
)
def test_a_missing_accelerator_is_one_line_that_says_what_to_do(
    tmp_path, accelerator, device
):
  # What to do depends on what is here: the plugin missing (install it) or the device.
  if os.path.exists(device):
    pytest.skip(f'this machine has a {accelerator.upper()}')
  installed = any(
      importlib.util.find_spec(name.split('.')[0]) and importlib.util.find_spec(name)
      for name in backend._PLUGINS[accelerator]
  )
  expected = backend._DEVICE_HINTS[accelerator] if installed else 'to use one, install'
  result = _run(f'--workdir={tmp_path}', f'--accelerator={accelerator}')
  assert result.returncode == 1
  lines = result.stderr.strip().splitlines()
  assert (
      len(lines) == 1
      and lines[0].startswith(
          f'error: --accelerator={accelerator}: no {accelerator.upper()} backend is available'
      )
      and expected in lines[0]
  ), result.stderr


def test_a_tiny_run_trains_evaluates_and_resumes(tmp_path):
  args = [
      f'--workdir={tmp_path}',
      '--train_steps=2',
      '--batch_size=2',
      '--memory_size=8',
      '--word_size=4',
      '--controller_features=8',
      '--eval_batch_size=2',
      '--max_length=2',
      '--eval_lengths=3',
      '--plots=false',
  ]
  first = _run(*args)
  assert first.returncode == 0, first.stderr
  assert 'train mix' in first.stdout and 'Report:' in first.stdout
  recorded = lambda: json.loads((tmp_path / 'config.json').read_text())['remat_chunk']
  assert recorded() == 0  # the experiments' default (experiments/common.py)
  # Recomputing the steps changes how the gradients are computed, not the model: the
  # checkpoint resumes.
  second = _run(*args[:1], '--train_steps=3', '--remat_chunk=1', *args[2:])
  assert second.returncode == 0, second.stderr
  assert 'Resumed from the checkpoint at step 2' in second.stdout
  assert recorded() == 1


def test_the_best_checkpoint_is_evaluated_and_shipped(tmp_path):
  workdir, shipped = tmp_path / 'run', tmp_path / 'trained'
  args = [
      f'--workdir={workdir}',
      '--train_steps=4',
      '--batch_size=2',
      '--memory_size=8',
      '--word_size=4',
      '--controller_features=8',
      '--eval_batch_size=2',
      '--generalisation_batch_size=0',
      '--max_length=2',
      '--eval_lengths=3',
      '--plots=false',
      '--eval_every=2',
      '--checkpoint_every=2',
  ]
  assert _run(*args).returncode == 0
  best_step = json.loads((workdir / 'report.json').read_text())['best']['step']
  evaluated = _run(*args, '--eval_only', '--checkpoint=best')
  assert evaluated.returncode == 0, evaluated.stderr
  assert f"the best evaluation's checkpoint {best_step} " in evaluated.stdout
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.tools.ship',
          f'--workdir={workdir}',
          f'--destination={shipped}',
          '--checkpoint=best',
          '--eval_batch_size=2',
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr
  target = shipped / 'copy_ntm'
  assert os.listdir(target / 'checkpoints') == [str(best_step)]
  report = json.loads((target / 'report.json').read_text())
  expected = json.loads((target / 'expected.json').read_text())
  assert report['step'] == best_step and report['results'] == expected['results']
  for row, values in expected['results'].items():  # the per-sequence record matches it
    per_sequence = expected['per_sequence'][row]
    assert len(per_sequence['bit_errors']) == 2
    assert sum(per_sequence['bit_errors']) / 2 == values['bit_errors']
  # Re-recording in place gives the same file (one machine, same parameters).
  rerecorded = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.tools.ship',
          f'--workdir={target}',
          '--record_only',
          '--eval_batch_size=2',
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert rerecorded.returncode == 0, rerecorded.stderr
  assert json.loads((target / 'expected.json').read_text()) == expected
  refused = subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.tools.ship',
          f'--workdir={target}',
          '--record_only',
          '--checkpoint=best',
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert refused.returncode != 0 and '--checkpoint does not apply' in refused.stderr


def test_data_parallel_on_the_cpu_makes_one_device_per_core(tmp_path):
  cores = len(os.sched_getaffinity(0))
  result = _run(
      f'--workdir={tmp_path}',
      '--data_parallel',
      f'--batch_size={2 * cores}',
      '--micro_batch_size=1',
      '--train_steps=1',
      '--memory_size=8',
      '--word_size=4',
      '--controller_features=8',
      '--eval_batch_size=2',
      '--max_length=2',
      '--eval_lengths=3',
      '--plots=false',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert f'on cpu ({cores} device(s))' in result.stdout


def test_a_batch_that_does_not_split_over_the_cpu_cores_is_named(tmp_path):
  cores = len(os.sched_getaffinity(0))
  if cores < 2:
    pytest.skip('needs two cores: every batch splits over one device')
  odd = _run(f'--workdir={tmp_path}', '--data_parallel', f'--batch_size={cores + 1}')
  assert odd.returncode != 0
  assert (
      f'batch_size={cores + 1} must be divisible by the number of devices' in odd.stderr
  )


def test_a_data_parallel_run_over_the_cpu_cores_trains_through_many_steps(tmp_path):
  # Steps dispatched ahead deadlocked the all-reduce of two CPU devices within a few
  # hundred steps (XLA aborts the process); the loop waits for each step instead.
  cores = len(os.sched_getaffinity(0))
  if cores < 2:
    pytest.skip('needs two cores: one device per core')
  result = _run(
      f'--workdir={tmp_path}',
      '--data_parallel',
      f'--batch_size={2 * cores}',
      '--train_steps=600',
      '--memory_size=8',
      '--word_size=4',
      '--controller_features=8',
      '--eval_batch_size=2',
      '--max_length=2',
      '--eval_lengths=3',
      '--plots=false',
      timeout=240,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').open()]
  assert max(r['step'] for r in records if r['kind'] == 'train') == 600
  assert json.loads((tmp_path / 'report.json').read_text())['step'] == 600


def test_a_one_process_multi_host_run_initialises_and_trains(tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  result = _run(
      f'--workdir={tmp_path}',
      f'--coordinator_address=localhost:{port}',
      '--num_processes=1',
      '--process_id=0',
      '--data_parallel',
      '--train_steps=1',
      f'--batch_size={2 * len(os.sched_getaffinity(0))}',
      '--memory_size=8',
      '--word_size=4',
      '--controller_features=8',
      '--eval_batch_size=2',
      '--max_length=2',
      '--eval_lengths=3',
      '--plots=false',
  )
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'Report:' in result.stdout


def _analyse(workdir, *args):
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run(
      [
          sys.executable,
          '-m',
          'experiments.tools.priority_sort_heads',
          f'--workdir={workdir}',
          *args,
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )


def test_the_shipped_priority_sort_run_sorts_by_search(tmp_path):
  # docs/RESULTS.md: its write head 4 puts each input, with weight about 1, on a slot of
  # its own in no order of priority, and the errors are where priorities nearly tie.
  workdir = tmp_path / 'run'
  shutil.copytree(os.path.join(ROOT, 'trained', 'priority_sort_ntm'), workdir)
  result = _analyse(workdir, '--sequences=64')
  assert result.returncode == 0, result.stderr[-2000:]
  rows = [
      line.split('|') for line in result.stdout.splitlines() if line.strip()[:1].isdigit()
  ]
  assert len(rows) == 5  # one per write head
  peak, slots, order = float(rows[4][1]), float(rows[4][2].split()[0]), float(rows[4][3])
  assert peak > 0.9 and slots > 19 and order < 0.3
  assert 'Reading: search: write head 4 ' in result.stdout
  errors = dict(
      part.split(': ')
      for part in result.stdout.splitlines()[-1].split('priority: ')[1].split(', ')
  )
  assert float(errors['0-0.01']) > 5 * float(errors['0.1-inf'])


def test_the_sort_analysis_refuses_other_runs(tmp_path):
  shutil.copytree(os.path.join(ROOT, 'trained', 'copy_ntm'), tmp_path / 'copy')
  result = _analyse(tmp_path / 'copy')
  assert result.returncode != 0
  assert (
      'this is a copy ntm run; the analysis needs a priority_sort ntm run'
      in result.stderr
  )
  empty = tmp_path / 'empty'
  empty.mkdir()
  shutil.copy(os.path.join(ROOT, 'trained', 'priority_sort_ntm', 'config.json'), empty)
  result = _analyse(empty, '--checkpoint=best')
  assert result.returncode != 0
  assert f'--workdir={empty}: {empty}/best does not exist' in result.stderr
  assert not (empty / 'best').exists()  # and it was not created


def test_helpfull_shows_each_experiments_own_defaults_grouped():
  help_text = _run('--helpfull').stdout  # absl exits with 1 after the help
  for group in (
      'model:',
      'optimiser:',
      'training loop:',
      'evaluation:',
      'devices:',
      'run:',
      'task:',
  ):
    assert f'\n{group}\n' in help_text, group
  optimiser = help_text.split('\noptimiser:\n')[1].split('\n\n')[0]
  assert (
      "--learning_rate: Learning rate. With --model=lstm: 0.001.\n    (default: '0.0001')"
      in optimiser
  )
  assert (
      '--optimizer: One of adam, rmsprop, sgd. With --model=lstm: adam.\n    '
      "(default: 'rmsprop')" in optimiser
  )
  assert '--remat_chunk' in help_text.split('\nmodel:\n')[1].split('\n\n')[0]


def _config_from_flags(*args, experiment='copy'):
  """The config an experiment's runner makes from these flags."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, '-m', 'tests.experiment_config', experiment, *args],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  return json.loads(result.stdout)


# Members of each NTM default on a CPU, as the README and docs/RESULTS.md state them.
_CPU_MEMBERS = dict(
    copy=4, repeat_copy=2, associative_recall=2, ngrams=2, priority_sort=1
)


@pytest.mark.parametrize('experiment', sorted(_CPU_MEMBERS))
def test_every_experiments_defaults_make_a_valid_config_for_both_models(experiment):
  # An NTM-only default (e.g. write_advance_bias) left on for the LSTM baseline would
  # make `--model=lstm` stop with an error before it starts.
  for model in ('ntm', 'lstm'):
    config = _config_from_flags(f'--model={model}', experiment=experiment)
    assert config['model'] == model
    members = len(config['seeds']) or 1
    if model == 'lstm':
      assert (
          config['write_advance_bias'] == 0
          and config['restart_after'] == 0
          and members == 1
      )
    else:
      assert members == _CPU_MEMBERS[experiment]


def test_population_flags_choose_the_seeds_and_spread_members_over_the_cores():
  cores = len(os.sched_getaffinity(0))
  bare = _config_from_flags()  # the copy recipe on a CPU: four members from --seed on
  assert bare['seeds'] == [0, 1, 2, 3] and bare['workdir'] == 'runs/copy_ntm_seeds0-3'
  assert bare['data_parallel'] == (cores > 1)
  assert _config_from_flags('--seed=7')['seeds'] == [7, 8, 9, 10]
  assert _config_from_flags('--population=5')['data_parallel'] == (cores >= 5)
  single = _config_from_flags('--seed=7', '--population=1')
  assert single['seeds'] == [] and single['seed'] == 7 and not single['data_parallel']
  assert (
      _config_from_flags('--population=4', '--data_parallel=false')['data_parallel']
      is False
  )  # given: the flag wins
  assert _config_from_flags('--model=lstm')['seeds'] == []  # the baseline: one run
  gpu = _config_from_flags('--accelerator=gpu')  # the accelerator recipe: eight
  assert gpu['seeds'] == list(range(8)) and gpu['workdir'] == 'runs/copy_ntm_seeds0-7'
  assert _config_from_flags('--accelerator=gpu', '--seed=3')['seeds'] == list(
      range(3, 11)
  )
  assert _config_from_flags('--accelerator=gpu', '--population=1')['seeds'] == []
  assert _config_from_flags('--accelerator=tpu', '--seeds=2,5')['seeds'] == [2, 5]


def test_a_population_splits_over_as_many_cpu_devices_as_share_it_evenly():
  from experiments.common import population_devices

  assert [population_devices(6, cores) for cores in (1, 2, 3, 4, 5, 6, 8)] == [
      1,
      2,
      3,
      3,
      3,
      6,
      6,
  ]
  assert population_devices(4, 3) == 2 and population_devices(5, 4) == 1
  assert population_devices(1, 16) == 1


def test_the_default_flags_build_the_shipped_runs_config_and_lstm_flags_its_recipe():
  from ntm_jax.training import ExperimentConfig

  shipped, _ = ExperimentConfig.load(os.path.join(ROOT, 'trained', 'copy_ntm'))
  # The shipped run is seed 0's single run, its report on 256 sequences per length.
  config = _config_from_flags('--population=1', '--generalisation_batch_size=0')
  # As JSON holds it (the seeds tuple as a list).
  assert config == json.loads(
      json.dumps(dict(vars(shipped), workdir='runs/copy_ntm_seed0'))
  )
  lstm = _config_from_flags('--model=lstm', '--batch_size=8')
  assert lstm['batch_size'] == 8  # given: the flag wins
  assert (lstm['learning_rate'], lstm['optimizer'], lstm['entropy_penalty']) == (
      1e-3,
      'adam',
      0.0,
  )  # not given: the baseline's recipe
  assert lstm['restart_after'] == 0 and config['restart_after'] == 16000
