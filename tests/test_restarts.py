"""Restarting a stalled attempt from a fresh initialisation (ExperimentConfig.restart_after)."""

import json
import os

import jax
import numpy as np
import pytest

from ntm_jax.tasks import CopyTask
from ntm_jax.tasks import DynamicNGramsTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import checkpointing
from ntm_jax.training import evaluation
from ntm_jax.training import factory
from ntm_jax.training import loop
from ntm_jax.training import optim
from ntm_jax.training import run
from ntm_jax.training import train_state

# Nothing converges in 10 steps of this: every attempt stalls.
TINY = dict(
    batch_size=2,
    memory_size=8,
    word_size=4,
    controller_features=16,
    eval_batch_size=4,
    plots=False,
    log_every=5,
    eval_every=10,
    checkpoint_every=10,
    train_steps=30,
    restart_after=10,
)


def tiny_task():
  return CopyTask(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _state_at(config, task, step):
  model = factory.build_model(config, task)
  optimizer = optim.make_optimizer(config)
  like = train_state.create_train_state(
      model, optimizer, task, train_state.Keys(config.seed)
  )
  checkpointer = checkpointing.Checkpointer(config.workdir)
  try:
    return train_state.TrainState.from_checkpoint(
        checkpointer.restore(like.to_checkpoint(), step=step)
    )
  finally:
    checkpointer.close()


def test_a_stalled_attempt_restarts_afresh_while_steps_and_data_go_on(tmp_path, capsys):
  task = tiny_task()
  config = ExperimentConfig(workdir=str(tmp_path), seed=3, **TINY)
  report = run(config, task)
  # Every 10 steps, while a new attempt still has its 10 steps: not at 30, the end.
  assert report['restarts'] == [10, 20]
  assert report['step'] == 30 and report['converged_at_sequences'] is None
  restarts = [r for r in _records(config.workdir) if r['kind'] == 'restart']
  assert [(r['step'], r['attempt_started']) for r in restarts] == [(10, 0), (20, 10)]
  assert 'restarted from a fresh initialisation at step 10' in capsys.readouterr().out
  # The checkpoint at a restart holds the new attempt: the parameters and optimiser state
  # of an initialisation from the seed and that step, and the step count kept.
  model = factory.build_model(config, task)
  fresh = train_state.initializer(model, optim.make_optimizer(config), task)(
      train_state.Keys(3), 20
  )
  saved = _state_at(config, task, 20)
  assert int(saved.step) == 20
  jax.tree.map(np.testing.assert_array_equal, saved.params, fresh.params)
  jax.tree.map(np.testing.assert_array_equal, saved.opt_state, fresh.opt_state)
  first = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(3)
  )
  assert not all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(fresh.params), jax.tree.leaves(first.params))
  )


def test_a_learning_attempt_is_never_restarted(tmp_path, monkeypatch):
  # Every evaluation counts as learning.
  monkeypatch.setattr(evaluation, 'LEARNING_BIT_ERRORS', 1e9)
  report = run(ExperimentConfig(workdir=str(tmp_path), **TINY), tiny_task())
  assert 'restarts' not in report
  assert not [r for r in _records(str(tmp_path)) if r['kind'] == 'restart']


class _LearningOnlyAtFirst:
  """A LEARNING_BIT_ERRORS that the first evaluation is below and every later one is
  not: an attempt that learns, then collapses back onto a plateau."""

  def __init__(self):
    self.calls = 0

  def __gt__(self, bit_errors):  # `bit_errors < LEARNING_BIT_ERRORS`
    self.calls += 1
    return self.calls == 1

  def __format__(self, spec):
    return format(1.0, spec)


def test_an_attempt_that_collapses_back_onto_a_plateau_restarts(
    tmp_path, monkeypatch, capsys
):
  monkeypatch.setattr(evaluation, 'LEARNING_BIT_ERRORS', _LearningOnlyAtFirst())
  report = run(
      ExperimentConfig(workdir=str(tmp_path), **dict(TINY, eval_every=5)), tiny_task()
  )
  # Below 1 at step 5 only: 10 steps later, at 15, it restarts; the new attempt never
  # learns, but at 25 it would have fewer than 10 steps left.
  assert report['restarts'] == [15] and report['restart_reasons'] == ['collapsed']
  out = capsys.readouterr().out
  assert 'no evaluation below 1 bit errors per sequence since step 5' in out
  assert 'dropped' not in out  # best/ keeps the collapsed attempt's best


class _StopAt:
  """STOP_REQUESTED, set once the loop has checked it `calls` times (a Ctrl-C then)."""

  def __init__(self, calls):
    self.calls = calls

  def is_set(self):
    self.calls -= 1
    return self.calls < 0


@pytest.mark.parametrize('interrupted_at', [10, 14])
def test_a_run_interrupted_around_a_restart_resumes_as_if_uninterrupted(
    tmp_path, monkeypatch, interrupted_at
):
  task = tiny_task()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  run(ExperimentConfig(workdir=straight, **TINY), task)
  monkeypatch.setattr(loop, 'STOP_REQUESTED', _StopAt(interrupted_at))
  with pytest.raises(KeyboardInterrupt):
    run(ExperimentConfig(workdir=resumed, **TINY), task)
  monkeypatch.undo()
  report = run(ExperimentConfig(workdir=resumed, **TINY), task)
  assert report['restarts'] == [10, 20]
  a = _state_at(ExperimentConfig(workdir=straight, **TINY), task, 30)
  b = _state_at(ExperimentConfig(workdir=resumed, **TINY), task, 30)
  jax.tree.map(np.testing.assert_array_equal, a.params, b.params)
  # (Training windows differ: an interrupted run logs the part window it ran.)
  kept = lambda records: [r for r in records if r['kind'] != 'train']  # noqa: E731
  assert kept(_records(straight)) == kept(_records(resumed))


def test_each_member_restarts_as_its_single_run_does(tmp_path):
  task = tiny_task()
  population = run(
      ExperimentConfig(workdir=str(tmp_path / 'population'), seeds=(4, 9), **TINY), task
  )
  single = run(ExperimentConfig(workdir=str(tmp_path / 'single'), seed=9, **TINY), task)
  member = population['members'][1]
  assert member['restarts'] == single['restarts'] == [10, 20]
  assert population['summary']['restarted'] == 2
  for label, results in single['results'].items():
    np.testing.assert_allclose(
        member['results'][label]['cost'], results['cost'], rtol=1e-4
    )


def test_the_current_attempt_is_read_from_the_log():
  records = [
      dict(kind='eval', step=10, train=dict(bit_errors=0.05)),  # converged, then stalled?
      dict(kind='restart', step=20),
      dict(kind='eval', step=20, train=dict(bit_errors=3.0)),  # the old attempt's
      dict(kind='eval', step=30, train=dict(bit_errors=0.01)),
      dict(kind='eval', step=10, member=1, train=dict(bit_errors=0.0)),
      # Learning, not converged: on its way down.
      dict(kind='eval', step=10, member=3, train=dict(bit_errors=0.5)),
      dict(kind='eval', step=10, member=4, train=dict(bit_errors=1.5)),
      dict(kind='eval', step=10, member=5, train=dict(bit_errors=0.5)),
      dict(kind='eval', step=20, member=5, train=dict(bit_errors=3.0)),
      dict(kind='eval', step=30, member=5, train=dict(bit_errors=3.0)),
  ]
  assert evaluation.current_attempt(records, 25) == (20, None)
  assert evaluation.current_attempt(records, 30) == (20, 30)
  assert evaluation.current_attempt(records, 15) == (0, 10)
  assert evaluation.current_attempt(records, 30, member=1) == (0, 10)
  assert evaluation.current_attempt(records, 30, member=2) == (0, None)
  assert evaluation.current_attempt(records, 30, member=3) == (0, 10)
  assert evaluation.current_attempt(records, 30, member=4) == (0, None)
  # Learned, then collapsed: its last evaluation below 1 counts.
  assert evaluation.current_attempt(records, 30, member=5) == (0, 10)


def test_a_discarded_attempts_convergence_does_not_count():
  records = [
      dict(kind='eval', step=10, sequences=10, train=dict(bit_errors=0.05)),
      dict(kind='restart', step=20),  # converged, then collapsed
      dict(kind='eval', step=30, sequences=30, train=dict(bit_errors=0.5)),
      dict(kind='eval', step=40, sequences=40, train=dict(bit_errors=0.01)),
  ]
  assert evaluation.converged_at(records, 15) == 10
  assert evaluation.converged_at(records, 30) is None
  assert evaluation.converged_at(records, 40) == 40


def test_with_a_reference_predictor_learning_is_nearness_to_its_cost():
  # N-grams: bit errors stay far above 1 however well a model predicts; an attempt is
  # learning within 15% above the optimal estimator's cost.
  near = dict(bit_errors=60.0, cost=135.0, reference_cost=131.0)
  plateau = dict(bit_errors=60.0, cost=160.0, reference_cost=131.0)
  assert evaluation.learning(near) and not evaluation.learning(plateau)
  assert evaluation.learning(dict(bit_errors=0.5, cost=3.0))
  assert not evaluation.learning(dict(bit_errors=3.0, cost=9.0))
  records = [
      dict(kind='eval', step=8, train=plateau),
      dict(kind='eval', step=16, train=near),
      dict(kind='eval', step=24, train=plateau),
  ]
  assert evaluation.current_attempt(records, 24) == (0, 16)
  assert evaluation.not_learning(plateau) == (
      'no evaluation within 15.0% above the reference cost',
      'now 22.1% above it on the training mix',
  )


def test_a_run_near_its_reference_cost_is_not_restarted(tmp_path, monkeypatch, capsys):
  task = DynamicNGramsTask(length=12, eval_lengths=(12,))
  config = dict(TINY, workdir=str(tmp_path), eval_batch_size=16)
  # Far above 1 bit error per sequence, as N-grams always is, but near enough the
  # reference cost: learning, never restarted.
  monkeypatch.setattr(evaluation, 'LEARNING_REFERENCE_EXCESS', 1e9)
  report = run(ExperimentConfig(**config), task)
  assert 'restarts' not in report and report['results']['train']['bit_errors'] > 1
  # Nowhere near it (nothing is): restarted every 10 steps, as any stalled attempt is.
  monkeypatch.setattr(evaluation, 'LEARNING_REFERENCE_EXCESS', 0.0)
  report = run(ExperimentConfig(**dict(config, workdir=str(tmp_path / 'far'))), task)
  assert report['restarts'] == [10, 20]
  assert (
      'no evaluation within 0.0% above the reference cost in 10 steps'
      in capsys.readouterr().out
  )
