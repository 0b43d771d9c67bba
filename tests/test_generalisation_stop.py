"""Stopping a run once it has converged and generalises (stop_when_generalising)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ntm_jax.tasks import CopyTask
from ntm_jax.training import ExperimentConfig
from ntm_jax.training import checkpointing
from ntm_jax.training import evaluation
from ntm_jax.training import factory
from ntm_jax.training import loop
from ntm_jax.training import optim
from ntm_jax.training import population
from ntm_jax.training import run
from ntm_jax.training import train_state
from tests.test_restarts import _StopAt

# Evaluations every 5 steps; nothing converges in 30 steps of this unless the tests say
# so (CONVERGED_BIT_ERRORS patched), and the check's outcome is the tests' to choose.
TINY = dict(
    batch_size=2,
    memory_size=8,
    word_size=4,
    controller_features=16,
    eval_batch_size=4,
    plots=False,
    log_every=5,
    eval_every=5,
    checkpoint_every=10,
    train_steps=30,
    stop_when_generalising=True,
)


def tiny_task():
  return CopyTask(bits=3, min_length=1, max_length=3, eval_lengths=(2, 5))


def _records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _checks(workdir, member=None):
  return [
      (r['step'], r['passed'])
      for r in _records(workdir)
      if r['kind'] == 'generalisation_check' and r.get('member') == member
  ]


class _PassesOnCall:
  """A GENERALISING_BIT_ERRORS that only the n-th check compared with it is below."""

  def __init__(self, n):
    self.calls, self.n = 0, n

  def __gt__(self, bit_errors):  # `bit_errors < GENERALISING_BIT_ERRORS`
    self.calls += 1
    return self.calls == self.n

  def __format__(self, spec):
    return format(0.25, spec)


@pytest.fixture
def converged(monkeypatch):
  """Every evaluation counts as converged: each one runs the check."""
  monkeypatch.setattr(loop, 'CONVERGED_BIT_ERRORS', 1e9)


def test_a_run_stops_at_the_first_converged_evaluation_that_passes_the_check(
    tmp_path, monkeypatch, converged, capsys
):
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', _PassesOnCall(2))
  config = ExperimentConfig(workdir=str(tmp_path), **TINY)
  task = tiny_task()
  report = run(config, task)
  assert report['step'] == 10
  assert report['stopped_generalising']['step'] == 10
  assert _checks(config.workdir) == [(5, False), (10, True)]
  assert not [r for r in _records(config.workdir) if r['step'] > 10]
  assert 'stopped at step 10 (stop_when_generalising)' in capsys.readouterr().out
  # The check evaluated the state at step 10, the one saved, on the check sequences.
  model = factory.build_model(config, task)
  like = train_state.create_train_state(
      model, optim.make_optimizer(config), task, train_state.Keys(config.seed)
  )
  saved = checkpointing.Checkpointer(config.workdir)
  try:
    assert saved.latest_step() == 10
    params = train_state.TrainState.from_checkpoint(
        saved.restore(like.to_checkpoint())
    ).params
  finally:
    saved.close()
  check = [r for r in _records(config.workdir) if r['kind'] == 'generalisation_check'][-1]
  on = lambda check: evaluation.make_evaluator(  # noqa: E731
      model,
      task,
      train_state.Keys(config.seed),
      evaluation.CHECK_SEQUENCES if check else config.eval_batch_size,
      check,
  )(params, 5)
  np.testing.assert_allclose(check['cost'], on(True)['cost'], rtol=1e-5)
  assert abs(check['cost'] - on(False)['cost']) > 1e-3
  # Rerunning the command finds the run finished: no more training; without the
  # option it trains on.
  again = run(config, task)
  assert again['step'] == 10
  assert _checks(config.workdir) == [(5, False), (10, True)]
  on = run(config.replace(stop_when_generalising=False), task)
  assert on['step'] == 30 and 'stopped_generalising' not in on


def test_only_a_converged_run_is_checked_and_one_that_never_passes_trains_on(
    tmp_path, monkeypatch
):
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', 0.0)
  report = run(ExperimentConfig(workdir=str(tmp_path / 'learning'), **TINY), tiny_task())
  assert report['step'] == 30 and not _checks(str(tmp_path / 'learning'))
  monkeypatch.setattr(loop, 'CONVERGED_BIT_ERRORS', 1e9)
  report = run(ExperimentConfig(workdir=str(tmp_path / 'failing'), **TINY), tiny_task())
  assert report['step'] == 30 and 'stopped_generalising' not in report
  assert _checks(str(tmp_path / 'failing')) == [
      (s, False) for s in (5, 10, 15, 20, 25, 30)
  ]


def test_the_check_uses_its_own_sequences_not_the_reported_ones():
  task, keys = tiny_task(), train_state.Keys(0)
  reported = evaluation.eval_set(task, keys, 5, 4)
  checked = evaluation.eval_set(task, keys, 5, 4, check=True)
  assert reported.inputs.shape == checked.inputs.shape
  assert not np.array_equal(reported.inputs, checked.inputs)
  np.testing.assert_array_equal(
      evaluation.eval_set(task, keys, 5, 4, check=True).inputs, checked.inputs
  )  # fixed


def test_a_member_stops_as_its_single_run_does_while_the_others_go_on(
    tmp_path, monkeypatch, converged, capsys
):
  task = tiny_task()
  # The single run of seed 9 passes its first check (step 5); in the population that
  # is the second check compared (member 0's comes first).
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', _PassesOnCall(1))
  single = run(ExperimentConfig(workdir=str(tmp_path / 'single'), seed=9, **TINY), task)
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', _PassesOnCall(2))
  pair = run(
      ExperimentConfig(workdir=str(tmp_path / 'population'), seeds=(4, 9), **TINY), task
  )
  assert single['step'] == 5
  assert [m['step'] for m in pair['members']] == [30, 5]
  assert pair['step'] == 30
  member = pair['members'][1]
  assert member['stopped_generalising']['step'] == 5
  assert 'stopped_generalising' not in pair['members'][0]
  assert pair['summary']['stopped'] == 1
  table = capsys.readouterr().out.split('bit errors per sequence by length:')[-1]
  assert 'stopped at' in table
  assert [
      line.split('|')[2].strip()
      for line in table.splitlines()
      if line.strip().startswith(('4 |', '9 |', 'mean |'))
  ] == ['-', '5', '1/2']
  for label, results in single['results'].items():
    np.testing.assert_allclose(
        member['results'][label]['cost'], results['cost'], rtol=1e-4
    )
  workdir = str(tmp_path / 'population')
  assert _checks(workdir, member=1) == [(5, True)]
  assert _checks(workdir, member=0) == [(s, False) for s in (5, 10, 15, 20, 25, 30)]
  # A stopped member's run has ended: nothing more is logged for it.
  assert not [r for r in _records(workdir) if r.get('member') == 1 and r['step'] > 5]


@pytest.mark.parametrize('interrupted_at', [7, 14])
def test_a_population_interrupted_after_a_member_stopped_resumes_as_if_uninterrupted(
    tmp_path, monkeypatch, converged, interrupted_at
):
  task = tiny_task()
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  config = lambda workdir: ExperimentConfig(  # noqa: E731
      workdir=workdir, seeds=(4, 9), **TINY
  )
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', _PassesOnCall(2))
  run(config(straight), task)
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', _PassesOnCall(2))
  with monkeypatch.context() as patch:
    patch.setattr(loop, 'STOP_REQUESTED', _StopAt(interrupted_at))
    with pytest.raises(KeyboardInterrupt):
      run(config(resumed), task)
  monkeypatch.setattr(loop, 'GENERALISING_BIT_ERRORS', 0.0)  # member 0 never passes
  report = run(config(resumed), task)
  assert [m['step'] for m in report['members']] == [30, 5]
  a = loop.restore_evaluated_params(config(straight), task, member=9)
  b = loop.restore_evaluated_params(config(resumed), task, member=9)
  assert a[2] == b[2] == 5
  jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
  a = loop.restore_evaluated_params(config(straight), task, member=4)
  b = loop.restore_evaluated_params(config(resumed), task, member=4)
  jax.tree.map(np.testing.assert_array_equal, a[1], b[1])
  kept = lambda records: [r for r in records if r['kind'] != 'train']  # noqa: E731
  assert kept(_records(straight)) == kept(_records(resumed))


def test_a_population_checkpoint_saved_before_members_could_stop_resumes(tmp_path):
  task = tiny_task()
  config = ExperimentConfig(
      workdir=str(tmp_path), seeds=(4, 9), **dict(TINY, stop_when_generalising=False)
  )
  model = factory.build_model(config, task)
  members = train_state.create_population_state(
      model, optim.make_optimizer(config), task, config.seeds
  )
  old = checkpointing.Checkpointer(config.workdir)
  try:  # the tree as it was saved without the stopped flags
    old.save(0, dict(members=members.to_checkpoint(), failed=jnp.zeros(2, bool)))
  finally:
    old.close()
  fresh = run(
      ExperimentConfig(
          workdir=str(tmp_path / 'fresh'),
          seeds=(4, 9),
          **dict(TINY, stop_when_generalising=False),
      ),
      task,
  )
  resumed = run(config, task)
  assert resumed['step'] == 30
  for a, b in zip(fresh['members'], resumed['members']):
    np.testing.assert_allclose(
        a['results']['train']['cost'], b['results']['train']['cost'], rtol=1e-5
    )
  assert population.Population.from_checkpoint(
      dict(members=members.to_checkpoint(), failed=jnp.zeros(2, bool))
  ).stopped.tolist() == [False, False]
