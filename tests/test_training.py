"""The shared runner: config errors, checkpoints, resuming, eval-only, non-finite losses."""

import asyncio
import json
import os
import re
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntm_jax import models
from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import NonFiniteLossError
from ntm_jax.training import WorkdirBusyError
from ntm_jax.training import checkpointing
from ntm_jax.training import factory
from ntm_jax.training import loop
from ntm_jax.training import optim
from ntm_jax.training import run
from ntm_jax.training import train_state
from ntm_jax.training import workdir as workdir_lib

TINY = dict(
    batch_size=4,
    memory_size=8,
    word_size=4,
    controller_features=16,
    eval_batch_size=4,
    plots=False,
    log_every=2,
    eval_every=3,
    checkpoint_every=3,
)


def tiny_task():
  return CopyTask(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))


def _params(workdir, memory_init='constant'):
  config = ExperimentConfig(workdir=workdir, **dict(TINY, memory_init=memory_init))
  task = tiny_task()
  model = factory.build_model(config, task)
  state = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(config.seed)
  )
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    return checkpointer.latest_step(), checkpointer.restore(state.to_checkpoint())
  finally:
    checkpointer.close()


@pytest.mark.parametrize(
    'changes,message',
    [
        (dict(batch_size=0), 'batch_size must be a positive integer, got 0'),
        (dict(memory_size=-3), 'memory_size must be a positive integer'),
        (
            dict(optimizer='adagrad'),
            "optimizer must be one of adam, rmsprop, sgd; got 'adagrad'",
        ),
        (dict(model='gru'), 'model must be one of ntm, lstm'),
        (dict(learning_rate=0.0), 'learning_rate must be > 0'),
        (dict(clip=-1.0), 'clip must be > 0'),
        (dict(clip_mode='norm'), 'clip_mode must be one of'),
        (dict(lr_schedule='step'), 'lr_schedule must be one of constant, cosine'),
        (dict(shift_range=100), 'shift_range=100 needs'),
        (dict(controller='rnn'), 'controller must be one of lstm, feedforward'),
        (dict(dtype='float16'), 'dtype must be one of float32, bfloat16'),
        (dict(entropy_penalty=-0.1), 'entropy_penalty must be a finite number >= 0'),
        (dict(memory_stddev=float('nan')), 'memory_stddev must be a finite number >= 0'),
        (dict(entropy_penalty=0.1, model='lstm'), 'entropy_penalty=0.1 needs model=ntm'),
        (dict(entropy_penalty=0.1, remat_chunk=4), 'and remat_chunk 0 or 1'),
        (dict(remat_chunk=-1), 'remat_chunk must be an integer >= 0'),
        (dict(skip_grad_norm=-1.0), 'skip_grad_norm must be a finite number >= 0'),
        (dict(carry_grad_clip=-1.0), 'carry_grad_clip must be a finite number >= 0'),
        (
            dict(carry_grad_clip=100.0, model='lstm'),
            'carry_grad_clip=100.0 needs model=ntm',
        ),
        (
            dict(write_advance_bias=-1.0),
            'write_advance_bias must be a finite number >= 0',
        ),
        (
            dict(write_advance_bias=4.0, model='lstm'),
            'write_advance_bias=4.0 needs model=ntm',
        ),
        (
            dict(write_advance_bias=4.0, shift_range=0),
            'write_advance_bias=4.0 needs shift_range',
        ),
        (dict(ema_decay=1.0), 'ema_decay must be in \\[0, 1\\)'),
    ],
)
def test_bad_config_values_are_named_in_the_error(changes, message):
  with pytest.raises(ValueError, match=message):
    ExperimentConfig(workdir='/tmp/x', **changes)


def test_checkpoint_round_trip(tmp_path):
  state = dict(
      step=jnp.array(7, jnp.int32),
      params={'w': jnp.arange(6.0).reshape(2, 3), 'b': jnp.ones(3)},
      opt_state=(jnp.zeros(2), {'mu': jnp.full((2,), 0.5)}),
  )
  checkpointer = checkpointing.Checkpointer(str(tmp_path))
  checkpointer.save(7, state)
  checkpointer.close()
  restored_by = checkpointing.Checkpointer(str(tmp_path))
  like = jax.tree_util.tree_map(jnp.zeros_like, state)
  restored = restored_by.restore(like)
  restored_by.close()
  assert restored_by.latest_step() == 7
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, state)


def test_saved_checkpoints_open_to_read_without_creating_anything(tmp_path):
  workdir = str(tmp_path)
  with pytest.raises(ValueError, match="checkpoint must be one of latest, best; got 'x'"):
    checkpointing.open_saved(workdir, 'x')
  for which, directory in (('latest', 'checkpoints'), ('best', 'best')):
    with pytest.raises(
        FileNotFoundError, match=re.escape(f'{tmp_path}/{directory} does not exist')
    ):
      checkpointing.open_saved(workdir, which)
    assert not (tmp_path / directory).exists()
  (tmp_path / 'best').mkdir()  # as a run stopped before its first evaluation leaves it
  with pytest.raises(FileNotFoundError, match='best holds no finished checkpoint'):
    checkpointing.open_saved(workdir, 'best')
  state = dict(step=jnp.array(5, jnp.int32), params={'w': jnp.ones(2)})
  saving = checkpointing.BestCheckpointer(workdir)
  saving.save(5, state, cost=1.5)
  saving.close()
  source = checkpointing.open_saved(workdir, 'best')
  try:
    assert source.latest_step() == 5 and source.best_cost() == 1.5
  finally:
    source.close()


# memory_init='random' draws each step's starting memories from the seed and the step.
@pytest.mark.slow  # several whole runs
@pytest.mark.parametrize('memory_init', ['constant', 'random'])
def test_resumed_run_equals_uninterrupted_run(tmp_path, memory_init):
  whole, parts = str(tmp_path / 'whole'), str(tmp_path / 'parts')
  tiny = dict(TINY, memory_init=memory_init)
  run(ExperimentConfig(workdir=whole, train_steps=6, **tiny), tiny_task())
  run(ExperimentConfig(workdir=parts, train_steps=3, **tiny), tiny_task())
  report = run(ExperimentConfig(workdir=parts, train_steps=6, **tiny), tiny_task())
  assert report['step'] == 6
  (step_a, a), (step_b, b) = _params(whole, memory_init), _params(parts, memory_init)
  assert step_a == step_b == 6
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
  # The resumed run's metrics continue where the first stopped, without duplicates.
  with open(os.path.join(parts, 'metrics.jsonl')) as f:
    steps = [json.loads(line)['step'] for line in f if '"train"' in line]
  assert steps == sorted(steps) and steps[-1] == 6


def test_a_run_killed_during_a_save_resumes_from_the_last_complete_checkpoint(tmp_path):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  # A save of step 6 that never completed: Orbax's temporary directory, half written.
  checkpoints = os.path.join(workdir, 'checkpoints')
  partial = os.path.join(checkpoints, '6.orbax-checkpoint-tmp-1234')
  shutil.copytree(os.path.join(checkpoints, '3'), partial)
  os.remove(os.path.join(partial, 'commit_success.txt'))
  step, _ = _params(workdir)
  assert step == 3
  report = run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), tiny_task())
  assert report['step'] == 6


def _truncate_data_files(checkpoint_dir):
  """Damages a checkpoint as a full disk or a bad copy would: every data file cut short."""
  damaged = 0
  for root, _, files in os.walk(checkpoint_dir):
    if os.path.basename(root) == 'd':
      for name in files:
        path = os.path.join(root, name)
        os.truncate(path, os.path.getsize(path) // 3)
        damaged += 1
  assert damaged


@pytest.mark.filterwarnings('error::pytest.PytestUnraisableExceptionWarning')
def test_a_damaged_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_one_before(
    tmp_path, capsys
):
  workdir, straight = str(tmp_path / 'run'), str(tmp_path / 'straight')
  run(ExperimentConfig(workdir=straight, train_steps=9, **TINY), tiny_task())
  run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), tiny_task())
  _truncate_data_files(os.path.join(workdir, 'checkpoints', '6'))
  capsys.readouterr()
  report = run(ExperimentConfig(workdir=workdir, train_steps=9, **TINY), tiny_task())
  out = capsys.readouterr().out
  lines = [line for line in out.splitlines() if 'cannot be read' in line]
  assert len(lines) == 1 and 'checkpoint at step 6' in lines[0], out
  assert 'Resumed from the checkpoint at step 3' in out
  # Kept, out of the way, not deleted.
  assert os.listdir(os.path.join(workdir, 'damaged')) == ['checkpoints-6']
  assert report['step'] == 9
  # The run went on from step 3 exactly as an uninterrupted one.
  jax.tree_util.tree_map(
      np.testing.assert_array_equal, _params(workdir)[1], _params(straight)[1]
  )


def test_a_damaged_read_prints_no_tracebacks_from_its_closed_event_loop(
    tmp_path, monkeypatch
):
  # Orbax closes its event loop when a read fails; tensorstore's reads still in flight
  # then complete onto it from other threads, each an unraisable "Event loop is closed".
  seen = []
  monkeypatch.setattr(sys, 'unraisablehook', seen.append)
  saver = checkpointing.Checkpointer(str(tmp_path))
  for step in (1, 2):
    saver.save(step, {'w': np.full(64, step, np.float32)})
  saver.close()
  _truncate_data_files(os.path.join(str(tmp_path), 'checkpoints', '2'))
  reader = checkpointing.Checkpointer(str(tmp_path))
  restored = reader.restore({'w': np.zeros(64, np.float32)})
  reader.close()
  np.testing.assert_array_equal(restored['w'], np.full(64, 1, np.float32))
  closed = asyncio.new_event_loop()
  closed.close()

  class LateRead:  # what a straggling read does, from a finaliser: unraisable

    def __del__(self):
      closed.call_soon_threadsafe(print)

  class OtherFault:

    def __del__(self):
      raise ValueError('still reported')

  LateRead()
  OtherFault()
  assert [type(u.exc_value) for u in seen] == [ValueError]


def test_eval_only_evaluates_the_latest_checkpoint_without_training(tmp_path):
  workdir = str(tmp_path)
  trained = run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  report = run(
      ExperimentConfig(workdir=workdir, train_steps=100, **TINY),
      tiny_task(),
      eval_only=True,
  )
  assert report['step'] == 3 and report['eval_only']
  assert report['results'] == trained['results']
  assert report['converged_at_sequences'] == trained['converged_at_sequences']
  assert set(report['results']) == {'train', '2', '5'}
  with open(os.path.join(workdir, 'report.json')) as f:
    assert json.load(f)['step'] == 3


def test_eval_only_without_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match='--eval_only needs a checkpoint'):
    run(ExperimentConfig(workdir=str(tmp_path), **TINY), tiny_task(), eval_only=True)


def test_resuming_with_another_model_is_a_clear_error(tmp_path):
  run(ExperimentConfig(workdir=str(tmp_path), train_steps=3, **TINY), tiny_task())
  changed = dict(TINY, memory_size=16)
  with pytest.raises(ValueError, match='memory_size: 8 -> 16'):
    run(ExperimentConfig(workdir=str(tmp_path), train_steps=6, **changed), tiny_task())
  with pytest.raises(
      ValueError, match="optimiser \\(lr_schedule: 'constant' -> 'cosine'\\)"
  ):
    run(
        ExperimentConfig(
            workdir=str(tmp_path), train_steps=6, lr_schedule='cosine', **TINY
        ),
        tiny_task(),
    )


@pytest.mark.slow  # several whole runs
def test_a_run_records_its_task_and_resumes_on_it(tmp_path, capsys):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  config, task = ExperimentConfig.load(workdir)
  assert config.train_steps == 3
  assert task.settings() == tiny_task().settings()  # not CopyTask's defaults
  # Wider inputs do not fit the checkpoint: refused, naming what changed.
  with pytest.raises(ValueError, match='input_size: 4 -> 5, output_size: 3 -> 4'):
    run(
        ExperimentConfig(workdir=workdir, train_steps=6, **TINY),
        CopyTask(bits=4, min_length=1, max_length=3, eval_lengths=(2, 5)),
    )
  # Longer training sequences fit: the run goes on with them, and says so.
  longer = CopyTask(bits=3, min_length=1, max_length=4, eval_lengths=(2, 5))
  capsys.readouterr()
  assert (
      run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), longer)['step'] == 6
  )
  out = capsys.readouterr().out
  assert 'resuming with other task settings than' in out
  assert '(max_length: 3 -> 4)' in out
  assert ExperimentConfig.load(workdir)[1].settings() == longer.settings()


def test_a_second_run_on_a_busy_workdir_is_a_clear_error(tmp_path):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  # Another run holds the workdir (here this process, through a second open file).
  with workdir_lib.lock(workdir):
    with pytest.raises(
        WorkdirBusyError,
        match=rf'--workdir={workdir} is in use by another run \(process '
        rf'{os.getpid()}\)',
    ):
      run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), tiny_task())
    # Evaluating writes no checkpoint and goes ahead.
    report = run(ExperimentConfig(workdir=workdir, **TINY), tiny_task(), eval_only=True)
    assert report['step'] == 3
  report = run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), tiny_task())
  assert report['step'] == 6


def test_a_workdir_without_checkpoints_accepts_other_sizes(tmp_path):
  # A first run that died before its first save leaves config.json but nothing to resume.
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(dict(task='copy', model='ntm', memory_size=64), f)
  report = run(
      ExperimentConfig(workdir=str(tmp_path), train_steps=1, **TINY), tiny_task()
  )
  assert report['step'] == 1


class _PoisonedCopy(CopyTask):
  """Copy with NaN inputs: every loss is NaN."""

  def sample_train(self, key, batch_size):
    batch = super().sample_train(key, batch_size)
    return batch._replace(inputs=batch.inputs * jnp.nan)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  _, good = _params(workdir)
  poisoned = _PoisonedCopy(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))
  with pytest.raises(
      NonFiniteLossError, match='at step 4.*last good checkpoint \\(step 3\\)'
  ):
    run(ExperimentConfig(workdir=workdir, train_steps=9, **TINY), poisoned)
  step, kept = _params(workdir)
  assert step == 3
  jax.tree_util.tree_map(np.testing.assert_array_equal, kept, good)


def _interrupt_on_step(monkeypatch, interrupted_step, after_donation):
  """Makes the runner's training step raise KeyboardInterrupt (Ctrl-C) at a given step.

  With `after_donation`, the interrupt comes once the step has taken (donated, deleted)
  the state, as when Ctrl-C lands while a step is being dispatched; otherwise before.
  """
  make_train_step = train_state.make_train_step

  def interrupting_make_train_step(*args, **kwargs):
    step_fn = make_train_step(*args, **kwargs)

    def train_step(state):
      if int(state.step) + 1 == interrupted_step:
        if after_donation:
          jax.tree_util.tree_map(lambda leaf: leaf.delete(), state)
        raise KeyboardInterrupt
      return step_fn(state)

    return train_step

  monkeypatch.setattr(loop, 'make_train_step', interrupting_make_train_step)


@pytest.mark.parametrize('after_donation,kept_step', [(False, 4), (True, 3)])
def test_ctrl_c_keeps_a_restorable_checkpoint(
    tmp_path, monkeypatch, after_donation, kept_step
):
  workdir = str(tmp_path)
  _interrupt_on_step(monkeypatch, 5, after_donation)
  with pytest.raises(KeyboardInterrupt):
    run(ExperimentConfig(workdir=workdir, train_steps=9, **TINY), tiny_task())
  step, state = _params(workdir)
  assert step == kept_step and int(state['step']) == kept_step
  # Resuming from it finishes the run.
  monkeypatch.undo()
  report = run(ExperimentConfig(workdir=workdir, train_steps=9, **TINY), tiny_task())
  assert report['step'] == 9


def test_the_lstm_baseline_trains_through_the_same_runner(tmp_path):
  config = ExperimentConfig(
      workdir=str(tmp_path),
      model='lstm',
      lstm_features=8,
      lstm_layers=2,
      train_steps=2,
      **TINY,
  )
  report = run(config, tiny_task())
  assert report['model'] == 'lstm' and report['step'] == 2


def test_figures_are_written(tmp_path):
  config = ExperimentConfig(
      workdir=str(tmp_path), train_steps=3, **dict(TINY, plots=True)
  )
  run(config, tiny_task())
  for name in ('learning_curve.png', 'sequence_length_3.png', 'sequence_length_5.png'):
    with open(tmp_path / name, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'


@pytest.mark.slow
@pytest.mark.parametrize(
    'model,controller,dtype',
    [
        ('ntm', 'lstm', 'float32'),
        ('ntm', 'feedforward', 'float32'),
        ('ntm', 'feedforward', 'bfloat16'),
        ('lstm', 'lstm', 'float32'),
    ],
)
def test_a_tiny_model_learns_to_copy_short_sequences(model, controller, dtype):
  # Given a tiny NTM (16 slots of 8), or the LSTM baseline (2 x 64), on copy of 4-bit
  # vectors, length 1-4, when it trains for 400 steps (the LSTM 1,000), then the cost
  # falls tenfold and it copies with almost no bit errors; also with bfloat16 dense
  # computations (float32 parameters and memory).
  config = ExperimentConfig(
      workdir='/unused',
      batch_size=16,
      memory_size=16,
      word_size=8,
      controller=controller,
      controller_features=32,
      learning_rate=1e-2,
      dtype=dtype,
      model=model,
      lstm_features=64,
      lstm_layers=2,
  )
  task = CopyTask(bits=4, min_length=1, max_length=4, eval_lengths=(4,))
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  keys = train_state.Keys(0)
  state = train_state.create_train_state(model, optimizer, task, keys)
  step = train_state.make_train_step(model, optimizer, task, config.batch_size, keys.data)
  costs, bit_errors = [], []
  for _ in range(1000 if config.model == 'lstm' else 400):
    state, step_metrics = step(state)
    costs.append(float(step_metrics['cost']))
    bit_errors.append(float(step_metrics['bit_errors']))
  assert np.isfinite(costs).all()
  assert np.mean(costs[-20:]) < 0.1 * np.mean(costs[:20]), (costs[:20], costs[-20:])
  assert np.mean(bit_errors[-20:]) < 0.1, bit_errors[-20:]


def test_weighting_entropy_counts_bits_per_head_and_step_up_to_the_last_scored_step():
  # Worked by hand: a uniform weighting over 4 slots has 2 bits, one split 1/2, 1/4, 1/4
  # has 1.5, a one-hot 0 (no NaN where a weight is exactly 0). Steps after the last
  # scored one (padding) do not count; unscored steps before it (the input) do.
  uniform, split, one_hot = [0.25] * 4, [0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]
  weights = jnp.array(
      [
          [[uniform, one_hot], [split, split], [uniform, uniform]],
          [[one_hot, one_hot], [uniform, split], [split, one_hot]],
      ]
  )
  mask = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])  # (b=2, T=3); weights (2, 3, 2, 4)
  entropy = models.weighting_entropy(weights, mask)
  np.testing.assert_allclose(entropy, [2.0 + 3.0, 0.0 + 3.5 + 1.5], rtol=1e-6)
  grad = jax.grad(lambda w: jnp.sum(models.weighting_entropy(w, mask)))(weights)
  assert np.isfinite(grad).all()


def test_the_entropy_penalty_adds_its_gradient_and_leaves_the_logged_cost_alone():
  # Given the same state, when one SGD step (learning rate 1) is taken with and without an
  # entropy penalty c, then the difference of the updates is c times the gradient of the
  # mean weighting entropy computed independently (from trace_ntm), and both steps log
  # the paper's cost for the same parameters.
  c = 0.5
  config = ExperimentConfig(
      workdir='/unused', optimizer='sgd', learning_rate=1.0, clip_mode='none', **TINY
  )
  task = tiny_task()
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  keys = train_state.Keys(0)
  state = train_state.create_train_state(model, optimizer, task, keys)

  def one_step(penalty):
    step = train_state.make_train_step(
        model, optimizer, task, config.batch_size, keys.data, entropy_penalty=penalty
    )
    return step(jax.tree.map(jnp.copy, state))  # the step donates its input

  (plain, plain_metrics), (penalised, penalised_metrics) = one_step(0.0), one_step(c)
  np.testing.assert_allclose(penalised_metrics['cost'], plain_metrics['cost'], rtol=1e-6)
  batch = task.sample_train(jax.random.fold_in(keys.data, 0), config.batch_size)

  def mean_entropy(params):
    _, states = models.trace_ntm(model, params, batch.inputs)
    return jnp.mean(
        sum(
            models.weighting_entropy(w, batch.mask)
            for w in (states.read_weights, states.write_weights)
        )
    )

  expected = jax.tree.map(lambda g: -c * g, jax.grad(mean_entropy)(state.params))
  # The entropy's gradients reach the hundreds near init, so float32 rounding in the two
  # steps is measured against each parameter's largest entry.
  jax.tree.map(
      lambda a, b, e: np.testing.assert_allclose(
          a - b, e, atol=1e-3 * float(jnp.max(jnp.abs(e))) + 1e-6
      ),
      penalised.params,
      plain.params,
      expected,
  )


def test_the_runner_builds_its_ntm_with_the_configured_carry_gradient_clip():
  # Given one SGD step from the same state, when the config clips the carry's gradient at
  # 1e-4, then the cell has that bound, the logged cost is the same, and the update is
  # not (the cell's own test checks what the clip computes).
  task = tiny_task()

  def one_step(bound):
    config = ExperimentConfig(
        workdir='/unused',
        optimizer='sgd',
        learning_rate=1.0,
        clip_mode='none',
        carry_grad_clip=bound,
        **TINY,
    )
    model = factory.build_model(config, task)
    assert model.carry_grad_clip == bound
    optimizer = optim.make_optimizer(config)
    keys = train_state.Keys(0)
    state = train_state.create_train_state(model, optimizer, task, keys)
    step = train_state.make_train_step(
        model, optimizer, task, config.batch_size, keys.data
    )
    return step(state)

  (plain, plain_metrics), (clipped, clipped_metrics) = one_step(0.0), one_step(1e-4)
  np.testing.assert_allclose(clipped_metrics['cost'], plain_metrics['cost'], rtol=1e-6)
  assert not np.allclose(
      clipped.params['params']['cell']['initial_read_weight_logits'],
      plain.params['params']['cell']['initial_read_weight_logits'],
  )


def test_the_nested_views_build_the_cell_and_the_optimiser_from_every_field():
  # Every NTMCell field the config sets reaches the cell through config.ntm, and the
  # optimiser's fields through config.optimiser: a field dropped from a view fails here.
  from ntm_jax.cell import NTMCell

  config = ExperimentConfig(
      workdir='/unused',
      memory_size=9,
      word_size=5,
      num_heads=2,
      controller='feedforward',
      controller_features=7,
      controller_layers=2,
      shift_range=2,
      memory_init='random',
      memory_stddev=0.5,
      optimizer='sgd',
      learning_rate=0.25,
      lr_schedule='cosine',
      train_steps=10,
      clip=3.0,
      clip_mode='elementwise',
      skip_grad_norm=4.0,
  )
  cell = factory.build_model(config, tiny_task()).cell
  assert cell == NTMCell(
      features=tiny_task().output_size, dtype=jnp.float32, **config.ntm
  )
  assert (
      cell.memory_size,
      cell.word_size,
      cell.num_read_heads,
      cell.num_write_heads,
      cell.controller,
      cell.controller_features,
      cell.controller_layers,
      cell.shift_range,
      cell.memory_init,
      cell.memory_stddev,
  ) == (9, 5, 2, 2, 'feedforward', 7, 2, 2, 'random', 0.5)
  assert config.optimiser == optim.OptimizerConfig(
      name='sgd',
      learning_rate=0.25,
      lr_schedule='cosine',
      train_steps=10,
      clip=3.0,
      clip_mode='elementwise',
      skip_grad_norm=4.0,
  )
  assert config.loop.train_steps == 10 and config.loop.batch_size == 32


def test_the_runner_builds_its_ntm_with_the_configured_write_advance_bias():
  # The cell's own test checks what such a bias does; here only that the config reaches
  # the runner's initial parameters.
  task = tiny_task()
  config = ExperimentConfig(workdir='/unused', write_advance_bias=3.0, **TINY)
  model = factory.build_model(config, task)
  state = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(0)
  )
  bias = np.asarray(state.params['params']['cell']['heads']['bias'])
  assert sorted(set(bias.tolist())) == [-3.0, 0.0, 3.0]


def test_the_spike_guard_skips_large_and_non_finite_gradients_and_nothing_else():
  # Given Graves' RMSProp behind elementwise clipping (priority sort's optimiser), when the
  # guarded optimiser sees gradients of global norm 2 (threshold 3), 4, and NaN, then the
  # first gives exactly the unguarded update and state, and the other two a zero update
  # and the state they were given (its step count included).
  config = ExperimentConfig(
      workdir='/unused',
      optimizer='rmsprop',
      learning_rate=1e-2,
      clip=1.0,
      clip_mode='elementwise',
      lr_schedule='cosine',
  )
  inner = optim.make_optimizer(config)
  guarded = optim.make_optimizer(config.replace(skip_grad_norm=3.0))
  params = {'w': jnp.arange(4.0)}
  state = guarded.init(params)
  assert jax.tree.structure(state) == jax.tree.structure(inner.init(params))
  warm = jax.tree.map(lambda g: 0.3 * g, {'w': jnp.array([1.0, -2.0, 0.5, 1.0])})
  _, state = inner.update(warm, state, params)  # a state with non-zero moments
  small = {'w': jnp.array([1.0, -1.0, 1.0, 1.0])}  # norm 2
  expected = inner.update(small, state, params)
  jax.tree.map(
      np.testing.assert_array_equal, guarded.update(small, state, params), expected
  )
  for rejected in ({'w': 2.0 * small['w']}, {'w': small['w'].at[1].set(jnp.nan)}):
    updates, kept = guarded.update(rejected, state, params)
    np.testing.assert_array_equal(updates['w'], np.zeros(4))
    jax.tree.map(np.testing.assert_array_equal, kept, state)


@pytest.mark.slow  # several whole runs
def test_a_run_whose_every_step_is_skipped_keeps_its_parameters_and_logs_the_skips(
    tmp_path,
):
  # Given a run trained without the guard, when it is resumed with a guard no gradient
  # passes, then the checkpoint (saved without it) restores, the parameters stay as they
  # were, and every logged window says all its steps were skipped.
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  _, before = _params(workdir)
  run(
      ExperimentConfig(workdir=workdir, train_steps=6, skip_grad_norm=1e-12, **TINY),
      tiny_task(),
  )
  _, after = _params(workdir)
  assert int(after['step']) == 6
  jax.tree.map(np.testing.assert_array_equal, after['params'], before['params'])
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  resumed = [r for r in records if r['kind'] == 'train' and r['step'] > 3]
  assert resumed and all(r['skipped'] == 1.0 for r in resumed)
  assert all(
      'skipped' not in r for r in records if r['kind'] == 'train' and r['step'] <= 3
  )


@pytest.mark.slow  # several whole runs
def test_the_moving_average_follows_the_parameters_and_is_what_the_run_evaluates(
    tmp_path,
):
  # Given the same run with and without ema_decay=0.5, when both train for 3 steps, then
  # their parameters are the same, the average is the recurrence worked out by hand from
  # the saved parameters of steps 0-3, and the report evaluates the average (the
  # parameters themselves under 'unaveraged_results').
  decay = 0.5
  plain_dir, averaged_dir = str(tmp_path / 'plain'), str(tmp_path / 'averaged')
  steps = []
  for train_steps in (1, 2, 3):
    run(
        ExperimentConfig(
            workdir=plain_dir, train_steps=train_steps, **dict(TINY, checkpoint_every=1)
        ),
        tiny_task(),
    )
    steps.append(_params(plain_dir)[1]['params'])
  report = run(
      ExperimentConfig(workdir=averaged_dir, train_steps=3, ema_decay=decay, **TINY),
      tiny_task(),
  )
  config = ExperimentConfig(workdir=averaged_dir, ema_decay=decay, **TINY)
  task = tiny_task()
  model = factory.build_model(config, task)
  like = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(0), ema=True
  ).to_checkpoint()
  initial = like['params']
  checkpointer = checkpointing.Checkpointer(averaged_dir)
  try:
    assert checkpointer.saved_keys() == {'step', 'params', 'opt_state', 'ema_params'}
    saved = checkpointer.restore(like)
  finally:
    checkpointer.close()
  jax.tree.map(np.testing.assert_array_equal, saved['params'], steps[-1])
  expected = initial
  for params in steps:
    expected = jax.tree.map(lambda a, p: decay * a + (1 - decay) * p, expected, params)
  jax.tree.map(
      lambda a, e: np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7),
      saved['ema_params'],
      expected,
  )
  plain_report = run(
      ExperimentConfig(workdir=plain_dir, train_steps=3, **TINY),
      tiny_task(),
      eval_only=True,
  )
  assert report['unaveraged_results'] == plain_report['results']
  assert report['results'] != plain_report['results']
  with open(os.path.join(averaged_dir, 'metrics.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  assert evals and all('unaveraged' in record for record in evals)


@pytest.mark.slow  # several whole runs
def test_a_run_saved_without_an_average_resumes_with_one_and_the_other_way_round(
    tmp_path,
):
  # The average starts from the restored parameters; resuming without it drops it.
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=3, **TINY), tiny_task())
  report = run(
      ExperimentConfig(workdir=workdir, train_steps=3, ema_decay=0.9, **TINY),
      tiny_task(),
      eval_only=True,
  )
  assert report['results'] == report['unaveraged_results']  # the average is the params
  run(
      ExperimentConfig(workdir=workdir, train_steps=6, ema_decay=0.9, **TINY), tiny_task()
  )
  checkpointer = checkpointing.Checkpointer(workdir)
  try:
    assert 'ema_params' in checkpointer.saved_keys()
  finally:
    checkpointer.close()
  report = run(ExperimentConfig(workdir=workdir, train_steps=9, **TINY), tiny_task())
  assert 'unaveraged_results' not in report
  step, after = _params(workdir)
  assert step == 9 and 'ema_params' not in after


def test_the_best_checkpoint_keeps_the_lowest_cost_across_reopening(tmp_path):
  state = lambda step: dict(
      step=jnp.array(step, jnp.int32), params={'w': jnp.full(3, step)}
  )
  best = checkpointing.BestCheckpointer(str(tmp_path))
  assert best.latest_step() is None and best.best_cost() == float('inf')
  saved = [
      best.save(step, state(step), cost)
      for step, cost in [
          (1, 5.0),
          (2, 3.0),
          (3, 4.0),
          (4, float('nan')),
          (5, 3.0),
          (2, 2.0),
      ]
  ]
  best.close()
  assert saved == [True, True, False, False, False, False]
  reopened = checkpointing.BestCheckpointer(str(tmp_path))
  try:
    assert reopened.latest_step() == 2 and reopened.best_cost() == 3.0
    restored = reopened.restore(state(0))
  finally:
    reopened.close()
  jax.tree_util.tree_map(np.testing.assert_array_equal, restored, state(2))
  assert os.listdir(reopened.directory) == ['2']


def test_ending_worse_than_the_best_evaluation_is_judged_beyond_noise():
  from ntm_jax.training.evaluation import ended_worse

  assert not ended_worse(0.0012, 0.0009)  # a converged copy model's wander
  assert ended_worse(0.22, 0.002)  # a copy run inside a spike
  assert not ended_worse(130.9, 130.8)  # N-grams: a tenth of a bit in 130
  assert ended_worse(131.2, 130.8)


@pytest.mark.slow  # several whole runs
def test_a_run_that_gets_worse_keeps_its_best_evaluation_for_eval_only(tmp_path, capsys):
  workdir = str(tmp_path)
  run(ExperimentConfig(workdir=workdir, train_steps=6, **TINY), tiny_task())
  # Resumed at a rate that wrecks the parameters: its evaluations are all worse, and its
  # latest checkpoints (9, 12, 15) replace every one the good part saved.
  capsys.readouterr()
  wrecked = run(
      ExperimentConfig(workdir=workdir, train_steps=15, learning_rate=3.0, **TINY),
      tiny_task(),
  )
  # It says so, and report.json records it.
  assert 'Ended worse than its best evaluation' in capsys.readouterr().out
  with open(os.path.join(workdir, 'report.json')) as f:
    assert json.load(f)['ended_worse_than_best'] is True
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    evals = [json.loads(line) for line in f if '"eval"' in line]
  lowest = min(evals, key=lambda record: record['train']['cost'])
  assert (
      lowest['step']
      <= 6
      < 9
      <= min(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints')))
  )
  assert wrecked['best'] == dict(step=lowest['step'], cost=lowest['train']['cost'])
  report = run(
      ExperimentConfig(workdir=workdir, train_steps=15, **TINY),
      tiny_task(),
      eval_only=True,
      checkpoint='best',
  )
  assert report['step'] == lowest['step'] and report['checkpoint'] == 'best'
  assert report['results']['train'] == lowest['train']
  assert report['results']['train']['cost'] < wrecked['results']['train']['cost']


def test_the_best_checkpoint_is_for_eval_only_and_must_exist(tmp_path):
  config = ExperimentConfig(workdir=str(tmp_path), train_steps=3, **TINY)
  with pytest.raises(ValueError, match='checkpoint=best .* needs eval_only'):
    run(config, tiny_task(), checkpoint='best')
  with pytest.raises(ValueError, match="checkpoint must be one of latest, best; got 'x'"):
    run(config, tiny_task(), eval_only=True, checkpoint='x')
  with pytest.raises(FileNotFoundError, match='--checkpoint=best needs .*best'):
    run(config, tiny_task(), eval_only=True, checkpoint='best')
